r"""The part of the recorder that only diffusion transformers need (:class:`DiTRecording`, a mixin of
:class:`~ebca_viz.tracing.recorder.Recorder`).

* token labels by text segment (:meth:`DiTRecording._read_dit_tokens`): each segment of the text the
  transformer sees (PixArt: T5; SD3: CLIP 77 + T5; Flux: T5) is labelled by the tokenizer that named it, from
  the call of the text encoder behind that tokenizer whose states are that segment (T5's word mark removed);
* the text stream (:meth:`~ebca_viz.adapters.base.DenoiserAdapter.tap_text_stream`): the text embedder's
  output is the drift's reference ``c_prompt`` and ``prompt_embeds``; around each recorded joint /
  single-stream block, the stream in and out (``context_in`` / ``context_out``: the trajectories);
* the event of a joint / single-stream layer is sent when its block ends: the image-query x text-key block
  ``(q_img, k_txt, S, exp(S - lse))`` its :class:`~ebca_viz.tracing.processor.RecordingJointAttnProcessor`
  held, with the block's text stream. Energies of such a layer are those of that block (text keys only).
"""
from __future__ import annotations

import torch

from ..energy import layer_energies
from ..denoiser_hook import CrossAttnEvent
from ..tokens import token_words


class DiTRecording:
    """DiT-only methods of the recorder (it provides ``pipe``, ``unet``, ``adapter``, ``record``, ``kinds``, ...)."""

    def _install_dit_hooks(self) -> None:
        """Hooks of a DiT trace: each text encoder behind a text segment (token ids and states, for the labels),
        the text embedder (the text stream the first block sees: the drift's reference), and the blocks of the
        recorded joint / single-stream layers (their text stream in and out: the trajectories)."""
        from ..adapters import module_of

        pipe, ad = self.pipe, self.adapter
        if pipe is not None:
            for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
                te = ad.text_encoder_for(pipe, attr)
                if isinstance(te, torch.nn.Module) and getattr(pipe, attr, None) is not None:
                    self._handles.append(te.register_forward_hook(
                        lambda m, a, k, o, attr=attr: self._te_hook_attr(attr, a, k, o), with_kwargs=True))
        keys = [k for k in self.record.layers if self.kinds[k] != "cross"]
        for k in keys:
            module_of(self.unet, k)  # the layer exists (a clear error here rather than mid-run)
        self._handles.extend(ad.tap_text_stream(keys, self._text_embedded, self._block_pre, self._block_post))

    def _te_hook_attr(self, attr, args, kwargs, output):
        ids = args[0] if args else kwargs.get("input_ids")
        last = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", None)
        hidden = getattr(output, "hidden_states", None) if not isinstance(output, (tuple, list)) else None
        cands = [last] + ([hidden[-2]] if isinstance(hidden, (tuple, list)) and len(hidden) > 1 else [])
        cands = [h.detach() for h in cands if torch.is_tensor(h) and h.ndim == 3]
        if torch.is_tensor(ids) and cands:
            self._te_by_attr[attr] = (self._te_by_attr.get(attr, []) + [(ids.detach().cpu(), cands)])[-8:]

    @torch.no_grad()
    def _text_embedded(self, out) -> None:
        """The text stream the first block receives (B2, N, D): the reference of the drift, and ``prompt_embeds``."""
        if not self.wants_events or not torch.is_tensor(out) or out.ndim != 3:
            return
        self._prompt = out[self._rows].float()
        pe = self._stage.get("prompt_embeds")
        if pe is not None and pe.shape == out[self._rows].shape:
            pe.copy_(out[self._rows])

    def _block_pre(self, key, ehs) -> None:
        if self.wants_events:
            self._block_in[key] = ehs

    @torch.no_grad()
    def _block_post(self, key, output) -> None:
        """Send the block's event: the image->text block of its attention (held by the processor) with the
        text stream the block received and passed on (SD3's last block passes none on: ``out = in``)."""
        mine = self._own.get(key, (None,))[0]
        cin = self._block_in.pop(key, None)
        if not self.wants_events or mine is None or mine.pending is None or not torch.is_tensor(cin):
            return
        q, k, sc, probs = mine.pending
        mine.pending = None
        cout = output[0] if isinstance(output, (tuple, list)) else None
        if not torch.is_tensor(cout) or cout.shape != cin.shape:
            cout = cin
        from ..adapters import module_of

        self.on_cross_attention(CrossAttnEvent(
            name=key, layer=mine.layer, step=self.step, attn=module_of(self.unet, key), query=q, key=k, scores=sc,
            probs=probs, context_in=cin, context_out=cout, grid=self.adapter.layer_grid(key, self.latent_hw),
            n_uncond=self.record.n_uncond, controller=None))

    def _read_dit_tokens(self, ehs) -> None:
        """Token labels of the conditional rows, segment by segment, each by its own tokenizer: the text
        encoder call whose states are that segment of the call's text (``ehs (B2, N, D_text)``)."""
        calls, self._te_by_attr = self._te_by_attr, {}
        pipe = self.pipe
        if pipe is None:
            return
        cond = ehs[self.record.n_uncond : self.b2]
        B, N = cond.shape[0], cond.shape[1]
        segs = self.adapter.text_segments(pipe, N)
        labels = [[None] * N for _ in range(B)]
        for seg in segs:
            tok = getattr(pipe, seg.tokenizer_attr, None)
            self.tokenizers[seg.tokenizer_attr] = tok  # the ones that named the labels (for the trace's messages)
            part = cond[:, seg.start : seg.start + seg.length]
            found = False
            for ids, cands in reversed(calls.get(seg.tokenizer_attr, [])):
                for hs in cands:
                    p, d = hs.shape[0], hs.shape[-1]
                    if hs.shape[1] != seg.length or d > part.shape[-1] or B % p:
                        continue
                    ref = hs.to(device=part.device, dtype=part.dtype).repeat_interleave(B // p, dim=0)
                    if torch.allclose(ref, part[..., :d], rtol=1e-3, atol=1e-4):
                        rows = ids.repeat_interleave(B // p, dim=0)
                        for b in range(B):
                            labels[b][seg.start : seg.start + seg.length] = [
                                w[1:] if w.startswith("▁") and len(w) > 1 else w  # T5's word-start mark
                                for w in token_words(tok, rows[b].tolist())]
                        found = True
                        break
                if found:
                    break
        self.record.text_segments = [dict(name=s.name, start=s.start, length=s.length, tokenizer=s.tokenizer_attr) for s in segs]
        if all(x is not None for row in labels for x in row):
            self.record.token_labels = labels

    def _read_key_mask(self, call, b2):
        """``(B, N)`` bool of the conditional rows: the text keys a masked cross-attention attends to (PixArt's
        ``encoder_attention_mask``, T5 padding out), or None when nothing is masked."""
        km = call.extras.get("encoder_attention_mask")
        if torch.is_tensor(km) and km.ndim == 2 and km.shape[0] == b2 and not bool(km.bool().all()):
            return km[self._rows].bool()
        return None

    def _energies_before(self, ev, q, k, scores):
        """``layer_energies`` of a layer call, over the keys it attends to: per image where a mask drops some."""
        km = self._key_mask if self.kinds.get(ev.name) == "cross" else None
        if km is None or km.shape != (q.shape[0], k.shape[2]):
            return layer_energies(q, k, scores, self.record.alpha)
        return torch.stack([layer_energies(q[b : b + 1], k[b : b + 1, :, km[b]], scores[b : b + 1, ..., km[b]],
                                           self.record.alpha)[:, 0] for b in range(q.shape[0])], dim=1)
