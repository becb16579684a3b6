"""Train a shapes world as a diffusion transformer (PixArt-Sigma style) on CPU, resumably.

    python -m ebca_viz.shapes.train_dit --out outputs/dit_world --max-steps 3000 --seed 0

The world is a genuine ``diffusers.PixArtSigmaPipeline`` at toy scale:

* ``vae``: the neglect world's ``AutoencoderKL`` (f = 4), reused **frozen** from
  ``ebca_viz/weights/neglect_world/vae`` (``--init-vae``), so the latent space is the UNet worlds':
  image ``(B, 3, 32, 32)`` in [-1, 1] <-> latents ``(B, 4, 8, 8)`` times ``scaling_factor``.
* ``transformer``: ``PixArtTransformer2DModel`` (adaLN-single, self-attention over the ``(8/p)^2``
  latent patches, cross-attention to the text, ``caption_projection`` from the text width), epsilon
  prediction, ``out_channels = 4`` (no learned sigma).
* ``text_encoder``: a small ``T5EncoderModel`` (gated-GELU, relative position buckets), trained jointly.
* ``tokenizer``: the package's T5-style Unigram tokenizer built in code (:func:`build_t5_tokenizer`, from
  :mod:`ebca_viz.models.tiny_dit`): every word of the world is one piece (``"▁red"``), other words fall
  back to letters; ``</s>`` ends every caption,
  ``<pad>`` = 0; there is no start token, so ``"a red circle and a blue triangle"`` is
  ``0=a 1=red 2=circle 3=and 4=a 5=blue 6=triangle 7=</s>``.
* ``scheduler``: PixArt's: ``DPMSolverMultistepScheduler`` (2M, epsilon) on the linear betas
  ``0.0001 .. 0.02`` over 1000 steps (:data:`SCHEDULER`), on which the model is trained.

Objective (as the UNet worlds, :mod:`.train`): ``x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps``,
``t ~ U{0..999}``, loss ``|eps - eps_theta(x_t, t, c)|^2``; the caption is replaced by ``""`` with
probability ``--cfg-drop`` (0.1) for classifier-free guidance. Data are the neglect world's
(:class:`.train.Batches`: ``--p-two 0.2 --holdout triangle-pairs --holdout-mode drop``), generated on
the fly. Text is tokenized to ``--text-len`` (16) with its attention mask; T5's relative positions
and the mask make the real tokens' states independent of the padding length, so the pipeline's
default ``max_sequence_length=300`` gives the same conditioning.

The learning rate warms up linearly over ``--warmup`` steps and follows a cosine over ``--max-steps``
to ``--min-lr-frac``; so a run interrupted and resumed (``--resume``) is bit-identical to an
uninterrupted one (``tests/test_dit_world.py``). Checkpoints (every ``--ckpt-minutes`` and/or
``--ckpt-steps``) write ``state/``: ``tensors.safetensors`` (fp32 weights, EMA weights, AdamW moments,
the torch generator) + ``state.json`` (step, elapsed seconds, numpy RNG state, arguments), atomically;
and ``ckpt/`` (the EMA pipeline, fp16, loadable with :func:`load_dit_pipeline`). At the end:
``pipeline/`` (EMA weights, fp16 safetensors, what ships), ``loss.csv``, ``train.log``,
``training.json`` and ``TRAINING.md`` (with ``--out/PILOTS.md`` appended when present).

Sample: ``pipe(prompt, num_inference_steps=20, guidance_scale=3.0, use_resolution_binning=False)``
(PixArt's resolution binning only knows its 256-2048 px sizes and must be off at 32 x 32).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidSetting, MissingFile, StateError
from ..models.dit_world import dit_weights_available, load_dit_pipeline  # noqa: F401 (re-exported)
from .train import noisy_batch, optimizer_step, run_log

WORLD_WORDS = ("a", "and", "red", "green", "blue", "yellow", "circle", "square", "triangle")
# PixArt-Sigma's scheduler (linear betas as in DiT / PixArt training), epsilon prediction, no learned sigma.
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                 prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2,
                 timestep_spacing="linspace", steps_offset=0, lower_order_final=True)
DEFAULT_INIT_VAE = Path(__file__).resolve().parent.parent / "weights" / "neglect_world"
CALL_KWARGS = dict(num_inference_steps=20, guidance_scale=3.0, use_resolution_binning=False, clean_caption=False)


# ----------------------------------------------------------------------------------------------- models
def build_t5_tokenizer(max_length: int = 300):
    """The package's T5-style tokenizer built in code (:func:`ebca_viz.models.tiny_dit.t5_tokenizer`: a
    Unigram ``T5Tokenizer``, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, one ``"▁" + word`` piece per word of the
    shipped CLIP vocabulary, letters for other words; 364 pieces). Every word of the world
    (:data:`WORLD_WORDS`) is one piece; the exported folder keeps its own copy (``tokenizer/``)."""
    from ..models.tiny_dit import t5_tokenizer

    tok = t5_tokenizer(model_max_length=max_length)
    for w in WORLD_WORDS:
        if len(tok(w, add_special_tokens=False).input_ids) != 1:
            raise StateError(f"the T5 tokenizer splits the world word {w!r}; every world word must be one piece")
    return tok


def text_config(tokenizer, d_model: int = 64, layers: int = 2, heads: int = 4):
    """Small T5 v1.1-style encoder config (gated-GELU feed-forward of width ``2 d_model``)."""
    from transformers import T5Config

    return T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=2 * d_model,
                    num_layers=layers, num_heads=heads, relative_attention_num_buckets=8,
                    relative_attention_max_distance=16, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                    is_encoder_decoder=False, use_cache=False, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                    tie_word_embeddings=False)


def transformer_config(hidden: int = 128, layers: int = 6, heads: int = 4, patch: int = 1, latent_size: int = 8,
                       caption_channels: int = 64) -> dict:
    """``PixArtTransformer2DModel`` kwargs: ``hidden = heads * head_dim``; ``(latent_size / patch)^2``
    image tokens; cross-attention width = hidden (the caption projection maps the text to it)."""
    if hidden % heads:
        raise InvalidSetting(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if latent_size % patch:
        raise InvalidSetting(f"patch ({patch}) must divide the latent size ({latent_size})")
    return dict(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4, out_channels=4,
                num_layers=layers, cross_attention_dim=hidden, sample_size=latent_size, patch_size=patch,
                caption_channels=caption_channels, use_additional_conditions=False, interpolation_scale=1,
                norm_num_groups=32, attention_bias=True, activation_fn="gelu-approximate",
                norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, num_embeds_ada_norm=1000)


def build_models(hidden=128, layers=6, heads=4, patch=1, text_d=64, text_layers=2, text_heads=4, seed=0):
    """Fresh ``(transformer, text_encoder, tokenizer)``; PixArt's initialisation of the parts that
    start at zero (each cross-attention's output projection and the final projection), so the
    untrained model predicts ``eps = 0``."""
    from diffusers import PixArtTransformer2DModel
    from transformers import T5EncoderModel

    tok = build_t5_tokenizer()
    torch.manual_seed(seed)
    tr = PixArtTransformer2DModel(**transformer_config(hidden, layers, heads, patch, 8, text_d))
    with torch.no_grad():
        for b in tr.transformer_blocks:
            b.attn2.to_out[0].weight.zero_()
            b.attn2.to_out[0].bias.zero_()
        tr.proj_out.weight.zero_()
        tr.proj_out.bias.zero_()
    te = T5EncoderModel(text_config(tok, text_d, text_layers, text_heads))
    return tr, te, tok


def load_vae(folder=DEFAULT_INIT_VAE):
    """The frozen ``AutoencoderKL`` of a shipped world folder (fp16 files -> float32)."""
    from diffusers import AutoencoderKL

    from ..models.shapes_world import WEIGHT_FILES, _load_state

    sub = Path(folder) / "vae"
    if not (sub / WEIGHT_FILES["vae"]).is_file():
        raise MissingFile.of("init_vae", str(folder), "pass a world folder with vae/ in it (e.g. the shapes world's)",
                             why=f"no {sub / WEIGHT_FILES['vae']}")
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(sub)))
    vae.load_state_dict(_load_state(sub, WEIGHT_FILES["vae"], torch.float32), strict=True)
    return vae.requires_grad_(False).eval()


def assemble(vae, transformer, text_encoder, tokenizer=None):
    """A ``PixArtSigmaPipeline`` from the parts (DPM-Solver++ 2M, PixArt's betas)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline(tokenizer=tokenizer or build_t5_tokenizer(), text_encoder=text_encoder.eval(),
                               vae=vae.eval(), transformer=transformer.eval(),
                               scheduler=DPMSolverMultistepScheduler(**SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def export_pipeline(vae, transformer, text_encoder, folder, tokenizer=None, dtype=torch.float16) -> Path:
    """``pipe.save_pretrained`` of the assembled pipeline with every weight cast to ``dtype``
    (safetensors + JSON configs + ``model_index.json``), written to ``<folder>.tmp`` then renamed."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # the cast's "modules that should be kept in float32: []" notice (none are)
    try:
        parts = [copy.deepcopy(m).to(dtype) for m in (vae, transformer, text_encoder)]
        assemble(*parts, tokenizer=tokenizer).save_pretrained(str(tmp), safe_serialization=True)
    finally:
        dlog.set_verbosity(level)
    for extra in folder.glob("*.md") if folder.is_dir() else ():
        shutil.copy2(extra, tmp / extra.name)
    for extra in ("training.json", "benchmark.json"):
        if (folder / extra).is_file():
            shutil.copy2(folder / extra, tmp / extra)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


# --------------------------------------------------------------------------------------------- training
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (state/, ckpt/, pipeline/, logs)")
    p.add_argument("--max-steps", type=int, required=True, help="training steps; the cosine LR runs over them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear LR warm-up steps")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="the cosine decays to this fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--cfg-drop", type=float, default=0.1, help="probability of the empty caption")
    p.add_argument("--p-two", type=float, default=0.2, help="probability of a two-object scene")
    p.add_argument("--holdout", default="triangle-pairs", help="ebca_viz.shapes.neglect.HOLDOUTS")
    p.add_argument("--holdout-mode", choices=("redraw", "drop"), default="drop")
    p.add_argument("--init-vae", default=str(DEFAULT_INIT_VAE), help="world folder whose vae/ is reused frozen")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of transformer + text encoder (0: off)")
    p.add_argument("--hidden", type=int, default=128, help="transformer width (heads x head dim)")
    p.add_argument("--layers", type=int, default=6, help="transformer blocks")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=1, help="patch size on the 8x8 latent grid")
    p.add_argument("--text-d", type=int, default=64, help="T5 d_model (= caption_channels)")
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--text-len", type=int, default=16, help="tokenized caption length in training (with mask)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--ckpt-steps", type=int, default=0, help="also checkpoint every N steps (0: by time only)")
    p.add_argument("--resume", action="store_true", help="continue from --out/state")
    p.add_argument("--stop-at", type=int, default=0, help="save state and stop after this step (then --resume)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--no-export", action="store_true", help="skip pipeline/ and TRAINING.md at the end (tests)")
    return p.parse_args(argv)


# arguments that must not change across a resume (they define the model, data or LR schedule)
_FIXED = ("max_steps", "seed", "batch", "lr", "warmup", "min_lr_frac", "weight_decay", "cfg_drop", "p_two", "holdout",
          "holdout_mode", "ema", "hidden", "layers", "heads", "patch", "text_d", "text_layers", "text_heads", "text_len")


class TextCache:
    """Caption -> ``(ids (L,), mask (L,))`` padded to ``length`` (the caption set is finite)."""

    def __init__(self, tokenizer, length: int):
        self.tok, self.length, self.cache = tokenizer, length, {}

    def __call__(self, captions):
        for c in captions:
            if c not in self.cache:
                e = self.tok(c, padding="max_length", max_length=self.length, truncation=True, return_tensors="pt")
                self.cache[c] = (e.input_ids[0], e.attention_mask[0])
        return (torch.stack([self.cache[c][0] for c in captions]), torch.stack([self.cache[c][1] for c in captions]))


def lr_at(step: int, args) -> float:
    """Linear warm-up then cosine over ``max_steps`` to ``min_lr_frac * lr``."""
    frac = min(step / args.max_steps, 1.0)
    return args.lr * min(1.0, (step + 1) / max(args.warmup, 1)) * (
        args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def save_state(folder: Path, models: dict, opt, data, gen, step: int, elapsed_s: float, args,
               started_unix: float = 0.0) -> None:
    """No pickles: ``tensors.safetensors`` (every model's fp32 state, AdamW moments and step counts,
    the torch generator state) + ``state.json`` (step, elapsed seconds, numpy bit-generator state,
    arguments). Written to ``<folder>.tmp`` and renamed (atomic)."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t = {}
    for tag, m in models.items():
        t.update({f"{tag}.{k}": v.detach().clone().contiguous() for k, v in m.state_dict().items()})
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            t[f"opt.{i}.{k}"] = v.detach().clone().contiguous()
    t["gen_state"] = gen.get_state()
    save_file(t, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(dict(step=step, elapsed_s=elapsed_s, numpy_rng=data.rng.bit_generator.state,
                                                    started_unix=started_unix, args=vars(args)), indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_state(folder: Path, models: dict, opt, data, gen, args) -> dict:
    """Inverse of :func:`save_state`; refuses a state saved with other model/data/schedule arguments."""
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        raise MissingFile.of("--resume", str(folder), "drop --resume to start a new run, or give the --out of a run "
                             "that reached a checkpoint", why="no saved state here (written at each checkpoint)")
    st = json.loads((folder / "state.json").read_text())
    diff = {k: (st["args"].get(k), getattr(args, k)) for k in _FIXED if st["args"].get(k) != getattr(args, k)}
    if diff:
        raise InvalidSetting(f"--resume: these arguments differ from the saved run's (saved, given): {diff}; "
                         "pass the same ones")
    t = load_file(str(folder / "tensors.safetensors"))
    for tag, m in models.items():
        m.load_state_dict({k[len(tag) + 1:]: v for k, v in t.items() if k.startswith(tag + ".")}, strict=True)
    for i, p in enumerate(opt.param_groups[0]["params"]):
        ks = {k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"opt.{i}.")}
        if ks:
            opt.state[p] = ks
    gen.set_state(t["gen_state"])
    data.rng.bit_generator.state = st["numpy_rng"]
    return st


def train(args, log, out: Path) -> dict:
    from diffusers import DDPMScheduler

    from .train import Batches

    torch.manual_seed(args.seed)
    tr, te, tok = build_models(args.hidden, args.layers, args.heads, args.patch, args.text_d, args.text_layers,
                               args.text_heads, args.seed)
    vae = load_vae(args.init_vae)
    n_params = {"transformer": sum(p.numel() for p in tr.parameters()),
                "text_encoder": sum(p.numel() for p in te.parameters()),
                "vae (frozen)": sum(p.numel() for p in vae.parameters())}
    log(f"parameters {n_params}; threads {torch.get_num_threads()}")
    sched = DDPMScheduler(num_train_timesteps=SCHEDULER["num_train_timesteps"], beta_start=SCHEDULER["beta_start"],
                          beta_end=SCHEDULER["beta_end"], beta_schedule=SCHEDULER["beta_schedule"],
                          prediction_type="epsilon")
    data = Batches(args.seed, 32, args.p_two, args.holdout, args.holdout_mode)
    text = TextCache(tok, args.text_len)
    params = list(tr.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    ema_tr = copy.deepcopy(tr).requires_grad_(False) if args.ema > 0 else tr
    ema_te = copy.deepcopy(te).requires_grad_(False) if args.ema > 0 else te
    models = {"transformer": tr, "text_encoder": te, "ema_transformer": ema_tr, "ema_text_encoder": ema_te}
    if args.ema <= 0:
        models = {"transformer": tr, "text_encoder": te}
    sf = vae.config.scaling_factor
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, prev_elapsed, started = 0, 0.0, time.time()
    if args.resume:
        st = load_state(out / "state", models, opt, data, gen, args)
        step, prev_elapsed, started = st["step"], st["elapsed_s"], st.get("started_unix") or started
        log(f"resumed from {out / 'state'} at step {step} ({prev_elapsed / 60:.2f} min trained before)")
    t0 = time.time() - prev_elapsed
    csv_path = out / "loss.csv"
    csv = open(csv_path, "a" if args.resume and csv_path.is_file() else "w")
    if csv.tell() == 0:
        csv.write("step,minutes,loss,lr\n")
    last_ckpt, window, run_loss, losses = time.time(), [], None, []
    tr.train(), te.train()

    def checkpoint():
        save_state(out / "state", models, opt, data, gen, step, time.time() - t0, args, started)
        export_pipeline(vae, ema_tr, ema_te, out / "ckpt", tokenizer=tok)
        log(f"checkpoint at step {step} -> {out / 'state'} (full state), {out / 'ckpt'} (EMA pipeline, fp16)")

    while step < args.max_steps:
        if args.stop_at and step >= args.stop_at:
            save_state(out / "state", models, opt, data, gen, step, time.time() - t0, args, started)
            log(f"stopped at step {step} (--stop-at); state -> {out / 'state'}")
            break
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        caps, zt, noise, t = noisy_batch(data, args.batch, args.cfg_drop, gen, vae, sf, sched)
        ids, mask = text(caps)
        ctx = te(ids, attention_mask=mask)[0]
        pred = tr(zt, encoder_hidden_states=ctx, encoder_attention_mask=mask, timestep=t,
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        loss = F.mse_loss(pred, noise)
        step = optimizer_step(loss, opt, params, step, args.ema, ((ema_tr, tr), (ema_te, te)))
        window.append(loss.item())
        el = time.time() - t0
        if step % args.log_every == 0 or step == args.max_steps:
            run_loss = float(np.mean(window))
            losses.append((step, round(el / 60, 3), round(run_loss, 5)))
            window = []
            csv.write(f"{step},{el / 60:.3f},{run_loss:.5f},{lr:.6g}\n")
            csv.flush()
            log(f"step {step}/{args.max_steps} min {el / 60:.2f} loss {run_loss:.4f} lr {lr:.2e} "
                f"({step / max(el, 1e-9):.2f} it/s)")
        if (args.ckpt_minutes and time.time() - last_ckpt > args.ckpt_minutes * 60) or (
                args.ckpt_steps and step % args.ckpt_steps == 0):
            checkpoint()
            last_ckpt = time.time()
    csv.close()
    if step >= args.max_steps:
        save_state(out / "state", models, opt, data, gen, step, time.time() - t0, args, started)
    return dict(steps=step, minutes=(time.time() - t0) / 60, final_loss=run_loss, parameters=n_params, vae=vae,
                ema_tr=ema_tr, ema_te=ema_te, tok=tok, tr=tr, te=te, done=step >= args.max_steps, losses=losses,
                started_unix=started, started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))


def _versions() -> dict:
    import diffusers
    import tokenizers
    import transformers

    return dict(python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
                transformers=transformers.__version__, tokenizers=tokenizers.__version__, numpy=np.__version__)


def training_markdown(info: dict) -> str:
    """TRAINING.md of a finished run (numbers from ``info``, the training.json)."""
    a, p = info["args"], info["parameters"]
    rows = "\n".join(f"| {s} | {m:.1f} | {l:.4f} |" for s, m, l in info["loss_curve"])
    return f"""# {info.get('name', 'DiT world')}: how these weights were made

A genuine diffusers `PixArtSigmaPipeline` at toy scale, trained from scratch on CPU on the neglect world's data
(`ebca_viz.shapes.neglect`: 1-2 shapes at 32x32, p(two objects) {a['p_two']}, `--holdout {a['holdout']}
--holdout-mode {a['holdout_mode']}`). Load offline with `ebca_viz.models.load_pipeline("{info.get('name', '?')}")`;
sample with `pipe(prompts, num_inference_steps=20, guidance_scale=3.0, use_resolution_binning=False)`.

| component | model | parameters |
|---|---|---|
| `transformer/` | `PixArtTransformer2DModel`: {a['layers']} blocks, width {a['hidden']} ({a['heads']} heads), patch {a['patch']} on the 8x8 latent grid ({(8 // a['patch']) ** 2} image tokens), epsilon, adaLN-single | {p['transformer']:,} |
| `text_encoder/` | `T5EncoderModel`: d_model {a['text_d']}, {a['text_layers']} layers, {a['text_heads']} heads, gated-GELU | {p['text_encoder']:,} |
| `tokenizer/` | T5-style Unigram `T5TokenizerFast` built in code (`train_dit.build_t5_tokenizer`), one piece per world word | |
| `vae/` | the neglect world's `AutoencoderKL`, frozen, not trained here | {p['vae (frozen)']:,} |
| `scheduler/` | `DPMSolverMultistepScheduler` (2M, epsilon), linear betas 0.0001-0.02 (PixArt's) | |

fp16 safetensors, JSON configs, `model_index.json`; no pickles.

## Training

```
{info['command']}
```
Objective: epsilon MSE, `t ~ U{{0..999}}`, caption dropout {a['cfg_drop']}, batch {a['batch']}, AdamW lr {a['lr']}
(warm-up {a['warmup']}, cosine over {a['max_steps']} steps to {a['min_lr_frac']}x), grad-clip 1, EMA {a['ema']}
(shipped = EMA weights). Resumable from `state/` (bit-identical, `tests/test_dit_world.py`).

* Steps: {info['steps']} in {info['minutes']:.1f} min of training ({info.get('sessions', 1)} process session(s)); final loss {info['final_loss']:.4f}.
* Wall clock: started {info['started']}, finished {info['finished']} ({info['wall_minutes_first_start_to_end']:.1f} min from the first start to the end, including any time between an interruption and its resume).
* Machine: {info['machine']['os_cpus']} shared CPU cores, {info['machine']['cpu_threads']} torch thread(s), niceness {info['machine']['nice']}.
* Versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}.

| step | minutes | loss (window mean) |
|---|---|---|
{rows}
"""


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    log, logf = run_log(out)

    log(f"train_dit {' '.join(sys.argv[1:] if argv is None else argv)}")
    res = train(args, log, out)
    if not res["done"] or args.no_export:
        return res
    curve = []
    if (out / "loss.csv").is_file():
        rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()[1:] if r]
        keep = max(1, len(rows) // 12)
        curve = [(int(r[0]), float(r[1]), float(r[2])) for i, r in enumerate(rows) if i % keep == 0 or i == len(rows) - 1]
    info = dict(
        name="neglect-world-dit",
        command=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} nice -n {os.nice(0)} "
                "python -m ebca_viz.shapes.train_dit " + " ".join(sys.argv[1:] if argv is None else argv),
        started=res["started"], finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        wall_minutes_first_start_to_end=(time.time() - res["started_unix"]) / 60,
        args=vars(args), parameters=res["parameters"], steps=res["steps"], minutes=res["minutes"],
        final_loss=res["final_loss"], loss_curve=curve, versions=_versions(),
        sessions=sum(1 for ln in (out / "train.log").read_text().splitlines() if "] train_dit " in ln),
        machine=dict(platform=platform.platform(), cpu_threads=torch.get_num_threads(), os_cpus=os.cpu_count(),
                     nice=os.nice(0)),
    )
    folder = export_pipeline(res["vae"], res["ema_tr"], res["ema_te"], out / "pipeline", tokenizer=res["tok"])
    for f in (out / "training.json", folder / "training.json"):
        f.write_text(json.dumps(info, indent=1) + "\n")
    notes = out / "PILOTS.md"  # written by hand during the run (how the size was chosen): appended as is
    (folder / "TRAINING.md").write_text(training_markdown(info) + ("\n" + notes.read_text() if notes.is_file() else ""))
    log(f"done: {res['steps']} steps in {res['minutes']:.1f} min, final loss {res['final_loss']}; pipeline -> {folder}")
    return res


if __name__ == "__main__":
    main()
