r"""One hook per denoiser: each UNet call is parsed once and handed to the installed participants.

In the spirit of diffusers' ``hooks/`` (one ``HookRegistry`` per module, ``ModelHook`` stages) and
``guiders/`` (a guider owns its combination formula), written for an *unmodified* pipeline: the
pipeline still applies its own CFG line ``eps = eps_u + w (eps_c - eps_u)`` to what the UNet returns.

::

    unet(sample, t, encoder_hidden_states, ...)         (called by the pipeline)
      DenoiserHook._pre       the one forward pre-hook of ebca_viz on this UNet
        parse once -> DenoiserCall: sample, timestep, context, step / new_run (StepClock),
                      cfg (read_cfg) and the rows {"uncond": [0, n), "cond": [n, B2)}
        1. observer.before_call(call)        installation order; they see the caller's batch
        2. method.before_call(call)          installation order; may add a branch (call.add_branch)
      forward: attention processors = the methods' per-layer stage; they send
               CrossAttnEvent / SelfAttnEvent to method.observers (every hook observer
               with on_cross_attention / on_seg_attention is subscribed there automatically)
      DenoiserHook._post      the one forward hook (always called, also on errors)
        3. observer.observe_output(call, eps)   eps = every row the UNet computed, branches included
        4. method.combine(call, eps)            at most one method per call: returns the caller's rows
        5. method.after_call(call, out)         reverse installation order
        6. observer.after_call(call, out)       installation order (a guard, installed last, sees the end)

Participants are duck-typed (subclassing :class:`Participant` gives the defaults); every stage is
optional. A participant declares ``role`` (``"method"`` or ``"observer"``), ``kind`` (its name),
``title`` (for messages) and what it needs: ``adds_branch`` / ``needs_caller_batch`` (a method that
appends rows cannot share a call with one whose per-layer state is sized to the caller's rows), a
``combine`` stage (one per call), ``cannot_run_with`` (kinds), or its own
:meth:`Participant.conflicts_with`. The hook refuses an incompatible pair when the second one is
added, so no method checks for another by name. A method that changes the batch (adds a branch)
must say how the output folds back in ``combine``; when it returns a single guided prediction
``eps_hat`` it hands back :meth:`DenoiserCall.guided` ``(eps_hat)``.

While a method reports ``paused`` (EBCA's ``ctl.pause()``, e.g. DDIM inversion) the calls are not
counted and only participants with ``during_pause = True`` (the finiteness guard) see them.

What a participant is handed, in this file too (so "is this call guided?" and "which step is this?"
have one answer each): :class:`CrossAttnEvent` / :class:`SelfAttnEvent` (what one attention call
hands to observers; ``B2`` = denoiser batch, ``[uncond; cond]`` with CFG), the :class:`Observer`
protocol and :func:`notify`, :func:`read_cfg`, the :class:`StepClock` (a timestep that goes *up*
starts a new run) and the kind tags of ebca_viz's processors (:func:`installed` finds one of a kind).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import torch

from .adapters import adapter_for
from .errors import StateError

#: kind tags of ebca_viz's attention processors
EBCA, SEG, TRACE = "ebca", "seg", "trace"


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------
@dataclass
class CrossAttnEvent:
    """What one cross-attention call hands to observers (the recorder).

    Shapes: ``B2`` = UNet batch (``[uncond; cond]`` with CFG), ``H`` heads, ``P`` = h*w pixels,
    ``N`` tokens, ``d`` head dim, ``D`` context dim.
    """

    name: str  # processor key
    layer: int  # position in execution order
    step: int
    attn: torch.nn.Module
    query: torch.Tensor  # (B2, H, P, d)
    key: torch.Tensor  # (B2, H, N, d), keys of the context this layer attended to
    scores: torch.Tensor  # (B2, H, P, N), S = beta Q K^T
    probs: torch.Tensor  # (B2, H, P, N), softmax over tokens
    context_in: torch.Tensor  # (B2, N, D)
    context_out: torch.Tensor  # (B2, N, D), what the next layer receives (is context_in without EBCU)
    grid: tuple  # (h, w)
    n_uncond: int  # rows [0, n_uncond) are the unconditional half
    controller: Any  # the EBCAController, or None (the recorder's own processor)


@dataclass
class SelfAttnEvent:
    """One call of a SEG-blurred self-attention layer, handed to ``observer.on_seg_attention``.

    ``B2`` = UNet batch (with SEG's extra branch, if any), ``H`` heads, ``P`` pixels, ``d`` head dim.
    """

    name: str  # processor key
    attn: torch.nn.Module
    query: torch.Tensor  # (B2, H, P, d) queries as attended: rows `rows` blurred
    key: torch.Tensor  # (B2, H, P, d) keys (never blurred)
    rows: slice  # the blurred rows
    grid: tuple  # (h, w)
    unblurred_query: torch.Tensor  # (len(rows), H, P, d) the blurred rows' queries before the blur


class Observer(Protocol):
    """What a controller calls on the objects in its ``observers`` list; every method is optional.

    ``on_forward_start(ctl)`` / ``on_forward_end(ctl)``: around each UNet call (EBCA);
    ``on_cross_attention(event: CrossAttnEvent)``: each cross-attention layer (EBCA, the recorder's processor);
    ``on_seg_attention(event: SelfAttnEvent)``: each SEG-blurred self-attention layer.
    Observers read; they must not modify the tensors they are handed.
    """

    def on_cross_attention(self, event: CrossAttnEvent) -> None: ...


def notify(observers: Sequence, method: str, arg) -> None:
    """Call ``observer.<method>(arg)`` on every observer that has it."""
    for o in observers:
        f = getattr(o, method, None)
        if f is not None:
            f(arg)


# ---------------------------------------------------------------------------------------------
# classifier-free guidance and the step clock
# ---------------------------------------------------------------------------------------------
def read_cfg(pipe, setting: Optional[bool], bare_unet: bool) -> bool:
    """Whether UNet calls carry ``[uncond; cond]`` halves.

    ``setting`` (an explicit ``cfg=``) wins; else the pipeline's ``do_classifier_free_guidance``
    (set by diffusers for the call under way); else ``bare_unet``, the documented default of the
    caller for a bare UNet (EBCA: True, as its published code; SEG and the recorder: False).
    """
    if setting is not None:
        return bool(setting)
    if pipe is not None and hasattr(pipe, "do_classifier_free_guidance"):
        return bool(pipe.do_classifier_free_guidance)
    return bare_unet


def first_timestep(t) -> float:
    if torch.is_tensor(t):
        return float(t.flatten()[0]) if t.numel() else 0.0
    return float(t)


class StepClock:
    """Step index within a sampling run, from the timesteps of successive UNet calls.

    Samplers walk the timestep down, so a call whose timestep is *higher* than the previous one
    starts a new run (PNDM repeats one timestep: not a new run). :meth:`tick` advances the clock,
    ``step`` is then 0 for the first call of a run; ``calls`` counts every tick.
    """

    def __init__(self):
        self.step = -1
        self.calls = 0
        self._last_t: Optional[float] = None

    def reset(self) -> None:
        """The next call starts a new run."""
        self.step = -1
        self._last_t = None

    def pin(self, step: int) -> None:
        """The next call is ``step`` of the current run (hand-written sampling loops)."""
        self.step = step - 1
        self._last_t = float("inf")

    def tick(self, t) -> bool:
        """Advance for a UNet call at timestep ``t``; True when it starts a new run."""
        tval = first_timestep(t)
        new_run = self._last_t is None or tval > self._last_t
        if new_run:
            self.step = -1
        self._last_t = tval
        self.step += 1
        self.calls += 1
        return new_run


# ---------------------------------------------------------------------------------------------
# kind tags
# ---------------------------------------------------------------------------------------------
def kind_of(processor) -> Optional[str]:
    """``"ebca" | "seg" | "trace"`` for ebca_viz's processors, None for any other."""
    return getattr(type(processor), "kind", None) if type(processor).__module__.startswith("ebca_viz.") else None


def installed(unet, kind: str, keys: Optional[Sequence[str]] = None):
    """The first processor of ``kind`` on ``unet`` (among ``keys``, default all), or None."""
    procs = unet.attn_processors
    for k in procs if keys is None else keys:
        if kind_of(procs[k]) == kind:
            return procs[k]
    return None


# ---------------------------------------------------------------------------------------------
# the hook
# ---------------------------------------------------------------------------------------------
def branch_difference(call, eps: torch.Tensor, branch: str, expanded) -> Optional[torch.Tensor]:
    """``eps_cond - eps_branch`` ``(B, C, h, w)`` from the denoiser's own rows, or None when the method's extra
    ``branch`` did not run in this call (``expanded`` is the method's record that it added its rows)."""
    rows = call.branches.get(branch)
    if expanded is None or rows is None or eps.shape[0] < rows.stop:
        return None
    return eps[call.rows["cond"]] - eps[rows]


_ATTR = "_ebca_viz_denoiser_hook"
EVENT_METHODS = ("on_cross_attention", "on_seg_attention")  # what observers get through method.observers


class Participant:
    """Defaults of the participant protocol (all stages optional; see the module docstring)."""

    role = "observer"  # or "method"
    kind = "participant"
    title = "a participant"
    cannot_run_with: tuple = ()  # kinds this one refuses to share a UNet with
    unique = True  # one of this kind per UNet
    adds_branch = False  # methods: before_call may append rows to the batch (call.add_branch)
    needs_caller_batch = False  # methods: per-layer state sized to the caller's rows (no branch may be added)
    during_pause = False
    cfg_setting: Optional[bool] = None  # methods: explicit cfg=, None = the pipeline's flag
    cfg_bare_unet: Optional[bool] = None  # methods: default for a bare UNet (None: no opinion)
    #: event name -> layer keys for which this method sends that event (e.g. {"on_cross_attention": keys})
    emits: dict = {}

    def conflicts_with(self, other) -> Optional[str]:
        """Why this participant cannot share the UNet with ``other`` (None: it can)."""
        if self.unique and getattr(other, "kind", None) == self.kind:
            return f"{self.title} is already installed on this UNet; remove it (leave its `with`) first"
        if getattr(other, "kind", None) in self.cannot_run_with or self.kind in getattr(other, "cannot_run_with", ()):
            return (f"{other.title} is installed on this UNet; {self.title} and {other.title} in the same run are "
                    "not supported")
        if self.role == "method" and getattr(other, "role", None) == "method":
            if callable(getattr(self, "combine", None)) and callable(getattr(other, "combine", None)):
                return (f"{other.title} is installed on this UNet; {self.title} and {other.title} both combine the "
                        "guided prediction (one guidance method per call); leave its `with` first")
            for a, b in ((self, other), (other, self)):
                if getattr(a, "adds_branch", False) and getattr(b, "needs_caller_batch", False):
                    return (f"{other.title} is installed on this UNet; {a.title} adds a branch to the UNet batch and "
                            f"{b.title} needs the caller's batch: {self.title} and {other.title} in the same run are "
                            "not supported")
        return None


class DenoiserCall:
    """One UNet call as every participant sees it (made by the hook; read-only for observers).

    Shapes: ``B2`` = the caller's batch (``[uncond; cond]`` with CFG), ``B`` = images.
    ``args`` / ``kwargs`` are the call's arguments as they will reach ``forward`` (a method adding
    a branch rewrites them); ``sample`` / ``timestep`` / ``context`` are the caller's.
    """

    def __init__(self, pipe, args: tuple, kwargs: dict, step: int, new_run: bool, calls: int, cfg: bool,
                 paused: bool, methods: tuple, adapter=None, parts: Optional[dict] = None, role: str = "cond"):
        self.pipe = pipe
        self.args, self.kwargs = args, kwargs
        self.adapter = adapter if adapter is not None else adapter_for(pipe)
        self.parts = parts if parts is not None else self.adapter.parse_call(args, kwargs)
        # UNet: sample (B2,C,h,w); PixArt / SD3: hidden_states (B2,C,H,W); Flux: packed (B2,P,4C). context (B2,N,D)
        self.sample, self.timestep, self.context = self.parts["sample"], self.parts["timestep"], self.parts["context"]
        self.extras = self.parts.get("extras", {})  # pooled_projections, img_ids, guidance, added_cond_kwargs ...
        self.role = role  # "cond" (or a [uncond; cond] batch); "uncond": the second call of Flux's true CFG
        self.step, self.new_run, self.calls = step, new_run, calls
        self.cfg, self.paused, self.methods = cfg, paused, methods
        s = self.sample
        self.batch = int(s.shape[0]) if torch.is_tensor(s) and s.ndim > 0 else 0  # B2
        self.n_uncond = self.batch // 2 if cfg else 0
        self.latent_hw = self.adapter.latent_hw(self.parts)  # grid of the denoiser's output (guidance maps)
        self.token_grid = self.adapter.latent_grid(s, self.parts) if torch.is_tensor(s) else None  # image tokens
        self.rows = {"uncond": slice(0, self.n_uncond), "cond": slice(self.n_uncond, self.batch)}
        self.branches: dict = {}  # name -> rows appended by a method this call

    @property
    def total_rows(self) -> int:
        return self.batch + sum(r.stop - r.start for r in self.branches.values())

    def add_branch(self, name: str, source: str = "cond") -> slice:
        """Append a copy of rows ``source`` to every batch-sized tensor of the call (sample, timestep,
        context, ``added_cond_kwargs``); returns the new rows. The method's ``combine`` folds them back."""
        b2, src = self.total_rows, self.rows.get(source) or self.branches[source]

        def grow(x):
            if torch.is_tensor(x) and x.ndim > 0 and x.shape[0] == b2:
                return torch.cat([x, x[src]])
            return x

        fixed = ("img_ids", "txt_ids")  # Flux's position ids: per token, not per row
        names = self.adapter.call_args
        self.args = tuple(a if i < len(names) and names[i] in fixed else grow(a) for i, a in enumerate(self.args))
        self.kwargs = {k: v if k in fixed else grow(v) for k, v in self.kwargs.items()}
        if isinstance(self.kwargs.get("added_cond_kwargs"), dict):
            self.kwargs["added_cond_kwargs"] = {k: grow(v) for k, v in self.kwargs["added_cond_kwargs"].items()}
        rows = slice(b2, b2 + (src.stop - src.start))
        self.branches[name] = rows
        return rows

    def guided(self, eps_hat: torch.Tensor) -> torch.Tensor:
        """The caller's rows that make the pipeline's CFG line yield ``eps_hat (B, C, h, w)``: with CFG
        ``[eps_hat; eps_hat]`` (``eps_hat + w (eps_hat - eps_hat) = eps_hat`` exactly), else ``eps_hat``."""
        return torch.cat([eps_hat, eps_hat]) if self.n_uncond else eps_hat


def _output_eps(output):
    if output is None:
        return None, None
    if isinstance(output, (tuple, list)):
        return output[0], "tuple"
    return getattr(output, "sample", output), ("sample" if hasattr(output, "sample") else "tensor")


def _with_eps(output, how, eps):
    if how == "tuple":
        return (eps,) + tuple(output[1:])
    if how == "sample":
        output.sample = eps
        return output
    return eps


class DenoiserHook:
    """The registry of participants of one UNet and its two module hooks (see the module docstring)."""

    def __init__(self, unet):
        self.unet = unet  # the denoiser: pipe.unet or pipe.transformer
        self.adapter = adapter_for(unet)
        self.participants: list = []
        self._pipes: dict = {}  # id(participant) -> the pipeline it was installed with, or None
        self.clock = StepClock()
        self.call: Optional[DenoiserCall] = None
        self._handles = [unet.register_forward_pre_hook(self._pre, with_kwargs=True),
                         unet.register_forward_hook(self._post, with_kwargs=True, always_call=True)]

    # -- registry --------------------------------------------------------------------------------
    @staticmethod
    def of(unet) -> Optional["DenoiserHook"]:
        """The hook installed on ``unet``, or None."""
        return unet.__dict__.get(_ATTR)

    @property
    def pipe(self):
        """The pipeline of the first participant installed on one (None: bare-UNet participants only)."""
        return next((self._pipes.get(id(p)) for p in self.participants if self._pipes.get(id(p)) is not None), None)

    @property
    def methods(self) -> list:
        return [p for p in self.participants if getattr(p, "role", "observer") == "method"]

    @property
    def observers(self) -> list:
        return [p for p in self.participants if getattr(p, "role", "observer") != "method"]

    @staticmethod
    def refusal(unet, participant) -> Optional[str]:
        """Why ``participant`` cannot join the participants already on ``unet`` (None: it can)."""
        hook = DenoiserHook.of(unet)
        for other in (hook.participants if hook is not None else ()):
            for a, b in ((participant, other), (other, participant)):
                f = getattr(a, "conflicts_with", None)
                why = f(b) if f is not None else None
                if why:
                    return why
        return None

    @classmethod
    def add(cls, unet, participant, pipe=None) -> "_Handle":
        """Register ``participant`` on ``unet`` (creating the hook on first use); returns a handle whose
        ``remove()`` takes it out again (and the hook, with its last participant). Raises RuntimeError
        when a participant refuses the company (:meth:`Participant.conflicts_with`)."""
        why = cls.refusal(unet, participant)
        if why:
            raise StateError(why)
        hook = cls.of(unet)
        if hook is None:
            hook = cls(unet)
            unet.__dict__[_ATTR] = hook
        hook.participants.append(participant)
        hook._pipes[id(participant)] = pipe
        hook._subscribe()
        return _Handle(hook, participant)

    def _discard(self, participant) -> None:
        if participant in self.participants:
            self.participants.remove(participant)
        self._pipes.pop(id(participant), None)
        for m in self.methods:  # an observer leaves every method's list
            obs = getattr(m, "observers", None)
            while isinstance(obs, list) and participant in obs:
                obs.remove(participant)
        obs = getattr(participant, "observers", None)  # a method lets go of the hook's observers
        if getattr(participant, "role", None) == "method" and isinstance(obs, list):
            for o in self.observers:
                while o in obs:
                    obs.remove(o)
        if not self.participants:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            if self.unet.__dict__.get(_ATTR) is self:
                del self.unet.__dict__[_ATTR]

    def _subscribe(self) -> None:
        """Every hook observer with an event method is in every method's ``observers`` list."""
        for m in self.methods:
            obs = getattr(m, "observers", None)
            if not isinstance(obs, list):
                continue
            for o in self.observers:
                if any(hasattr(o, e) for e in EVENT_METHODS) and o not in obs:
                    obs.append(o)

    # -- the two module hooks --------------------------------------------------------------------
    def _cfg(self) -> bool:
        """``[uncond; cond]``? The first method with an opinion decides (read_cfg with its explicit
        ``cfg_setting`` and its bare-UNet default); with none, the pipeline's flag, else False."""
        for m in self.methods:
            if getattr(m, "cfg_bare_unet", None) is not None:
                pipe = self._pipes.get(id(m))  # the pipeline the method was installed on (None: a bare UNet)
                return read_cfg(pipe, getattr(m, "cfg_setting", None), bare_unet=m.cfg_bare_unet)
        pipe = self.pipe
        if pipe is not None and not hasattr(pipe, "do_classifier_free_guidance"):  # PixArt: a local of __call__
            return bool(self.adapter.cfg_layout(pipe)["cfg"])
        return read_cfg(pipe, None, bare_unet=False)

    def _pre(self, module, args, kwargs):
        self.call = None
        methods = tuple(self.methods)
        paused = any(getattr(m, "paused", False) for m in methods)
        ad = self.adapter
        ad.pipe = self.pipe
        parts = ad.parse_call(args, kwargs)
        role = "cond" if paused else ad.call_role(parts, self.clock._last_t)
        if paused or role == "uncond":  # Flux true CFG: the uncond call of a step is not a new step
            step, new_run = self.clock.step, False
        else:
            new_run = self.clock.tick(parts["timestep"])
            step = self.clock.step
        call = DenoiserCall(self.pipe, args, kwargs, step, new_run, self.clock.calls, self._cfg(), paused, methods,
                            adapter=ad, parts=parts, role=role)
        self.call = call
        for p in self._active(self.observers, call) + self._active(list(methods), call):
            f = getattr(p, "before_call", None)
            if f is not None:
                f(call)
        if call.args is args and call.kwargs is kwargs:
            return None
        return call.args, call.kwargs

    def _active(self, ps, call) -> list:
        return [p for p in ps if not call.paused or getattr(p, "during_pause", False)]

    def _post(self, module, args, kwargs, output):
        call, self.call = self.call, None
        if call is None:
            return None
        eps, how = _output_eps(output)
        observers, methods = self._active(self.observers, call), self._active(list(call.methods), call)
        if torch.is_tensor(eps):
            for o in observers:
                f = getattr(o, "observe_output", None)
                if f is not None:
                    f(call, eps)
            out = None
            for m in methods:
                f = getattr(m, "combine", None)
                if f is not None:
                    out = f(call, eps)
                    break
            if out is None and call.branches:
                out = eps[: call.batch]
            if out is not None:
                output = _with_eps(output, how, out)
                eps = out
        for p in list(reversed(methods)) + observers:
            f = getattr(p, "after_call", None)
            if f is not None:
                f(call, output if torch.is_tensor(eps) else None)
        return output


class _Handle:
    def __init__(self, hook: DenoiserHook, participant):
        self.hook, self.participant = hook, participant

    def remove(self) -> None:
        if self.hook is not None:
            self.hook._discard(self.participant)
            self.hook = None


def install(unet, processors: dict, participants: list, pipe=None, guard=None):
    """Swap in ``processors`` and register ``participants`` (then ``guard``, a
    :class:`~ebca_viz.guards.FiniteGuard`, unless guards are disabled) on the one hook of ``unet``;
    all or nothing: on any failure the UNet is left as it was. Returns the
    :class:`~ebca_viz.attach.Installation` whose ``remove()`` undoes everything."""
    from .attach import Installation
    from .guards import enabled

    inst = Installation(unet)
    try:
        for p in participants:  # refuse before anything changes
            why = DenoiserHook.refusal(unet, p)
            if why:
                raise StateError(why)
        inst.set_processors(processors)
        for p in participants:
            inst.add_hooks([DenoiserHook.add(unet, p, pipe)])
        if guard is not None and enabled():
            inst.add_hooks([DenoiserHook.add(unet, guard, pipe)])
            inst.add_hooks(guard.register_decoder(getattr(pipe, "vae", None)))
    except BaseException:
        inst.remove()
        raise
    return inst


__all__ = ["DenoiserCall", "DenoiserHook", "Participant", "install"]
