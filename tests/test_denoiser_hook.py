"""One hook per denoiser (ebca_viz/denoiser_hook.py): one forward pre-hook and one forward hook of
ebca_viz on the UNet whatever is installed; the recorder names no method; a guidance method written
outside the package (docs/adding_a_method.md) plugs in through the same stages."""
import ast
import re
import types
from pathlib import Path

import pytest
import torch

import ebca_viz as ev
from ebca_viz.denoiser_hook import DenoiserHook
from ebca_viz.models import tiny_unet

from conftest import unet_inputs

ROOT = Path(__file__).resolve().parent.parent


def _hooks(unet):
    return len(unet._forward_pre_hooks), len(unet._forward_hooks)


def _ours(hooks: dict) -> list:
    return [h for h in hooks.values() if isinstance(getattr(h, "__self__", None), DenoiserHook)]


@pytest.mark.parametrize("method", ["ebca", "seg"])
@pytest.mark.parametrize("trace_first", [False, True])
def test_one_pre_and_one_post_hook_with_a_method_and_a_trace(method, trace_first):
    unet = tiny_unet(seed=4)
    x, c = unet_inputs(unet, batch=2)
    assert _hooks(unet) == (0, 0)
    install = {"ebca": lambda: ev.energy_attention(unet, gamma_attn=0.1, gamma_norm=0.1),
               "seg": lambda: ev.smoothed_energy_guidance(unet, scale=2.0, sigma=1.0, cfg=False)}[method]
    a, b = (lambda: ev.trace(unet, cfg=method == "ebca")), install
    if not trace_first:
        a, b = b, a
    with a() as first, b() as second:
        assert _hooks(unet) == (1, 1)
        assert len(_ours(unet._forward_pre_hooks)) == 1 and len(_ours(unet._forward_hooks)) == 1
        hook = DenoiserHook.of(unet)
        kinds = [p.kind for p in hook.participants]
        assert sorted(kinds) == sorted(["trace", method, "guard"]), kinds
        with torch.no_grad():
            unet(x, 500, encoder_hidden_states=c)
            unet(x, 400, encoder_hidden_states=c)
        tr = first if trace_first else second
        assert tr.steps == [0, 1] and tr.run_starts == [0]
        assert tr.mode == ("ebca" if method == "ebca" else "plain")
        if method == "seg":
            assert tr.record.seg_layers and torch.isfinite(tr.record.stacked()["seg"]).all()
    assert _hooks(unet) == (0, 0) and DenoiserHook.of(unet) is None
    assert all(type(p).__module__.startswith("diffusers.") for p in unet.attn_processors.values())


def test_the_recorder_names_no_method():
    """tracing/recorder.py imports nothing from ebca.py / seg.py and uses none of their names."""
    src = (ROOT / "ebca_viz" / "tracing" / "recorder.py").read_text()
    tree = ast.parse(src)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    forbidden = {"EBCA", "SEG", "EBCAController", "SEGController", "EnergyCrossAttnProcessor", "SEGSelfAttnProcessor",
                 "find_controller", "kind_of", "installed", "ctl", "paused", "_expanded", "blur_rows"}
    assert not names & forbidden, names & forbidden
    assert not {m for m in modules if m and re.search(r"(^|\.)(ebca|seg)$", m)}, modules
    assert "register_forward_pre_hook" not in src and "register_forward_hook(" not in src.replace("te.register_forward_hook(", "")


def test_methods_declare_their_conflicts(pipe):
    with ev.energy_attention(pipe, gamma_attn=0.1):
        with pytest.raises(RuntimeError, match="SEG adds a branch .* needs the caller's batch"):
            ev.apply_seg(pipe)
    with ev.smoothed_energy_guidance(pipe, scale=1.0, sigma=2.0):
        with pytest.raises(RuntimeError, match="SEG is installed on this UNet"):
            ev.apply_energy_attention(pipe, gamma_attn=0.1)


def _example_module():
    """docs/adding_a_method.md's file 1, executed as printed."""
    text = (ROOT / "docs" / "adding_a_method.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    mod = types.ModuleType("pag_example")
    exec(compile(code, "docs/adding_a_method.md", "exec"), mod.__dict__)
    return mod


def _identity_branch(unet, mod, x, c, t, keys):
    """Reference eps of a branch whose chosen self-attention layers all use the identity map."""
    ctl = types.SimpleNamespace(rows=slice(0, x.shape[0]))
    saved = dict(unet.attn_processors)
    unet.set_attn_processor({**saved, **{k: mod.IdentityAttnProcessor(ctl) for k in keys}})
    try:
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=c).sample
    finally:
        unet.set_attn_processor(saved)


def test_the_adding_a_method_example_plugs_in():
    mod = _example_module()
    unet = tiny_unet(seed=5)
    keys = [k for k in ev.attach.self_attention_keys(unet) if ev.attach.block_of(k) == "mid"]
    before = dict(unet.attn_processors)
    # no CFG, bare UNet
    x, c = unet_inputs(unet, batch=1)
    with torch.no_grad():
        van = unet(x, 500, encoder_hidden_states=c).sample
    eps_p = _identity_branch(unet, mod, x, c, 500, keys)
    assert (eps_p - van).abs().max() > 1e-4  # the perturbation is visible
    with mod.perturbed_attention_guidance(unet, scale=2.0, cfg=False):
        assert _hooks(unet) == (1, 1)
        with torch.no_grad():
            out = unet(x, 500, encoder_hidden_states=c).sample
    torch.testing.assert_close(out, van + 2.0 * (van - eps_p), atol=1e-5, rtol=1e-4)
    assert unet.attn_processors == before and _hooks(unet) == (0, 0)
    # CFG through a pipeline-like object; a trace records it untouched; SEG is refused (two combiners)
    x, c = unet_inputs(unet, batch=2)
    x = torch.cat([x[:1], x[:1]])
    fake = types.SimpleNamespace(unet=unet, guidance_scale=5.0, do_classifier_free_guidance=True)
    with torch.no_grad():
        van = unet(x, 300, encoder_hidden_states=c).sample
    eps_p = _identity_branch(unet, mod, x[1:], c[1:], 300, keys)
    with ev.trace(fake) as tr, mod.perturbed_attention_guidance(fake, scale=3.0) as ctl:
        assert _hooks(unet) == (1, 1)
        with pytest.raises(RuntimeError, match="both combine the guided prediction"):
            ev.apply_seg(fake, scale=1.0, sigma=2.0)
        with torch.no_grad():
            out = unet(x, 300, encoder_hidden_states=c).sample
        assert ctl.rows is None
    want = van[:1] + 5.0 * (van[1:] - van[:1]) + 3.0 * (van[1:] - eps_p)
    got = out[:1] + 5.0 * (out[1:] - out[:1])  # the pipeline's CFG line
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert tr.steps == [0] and tr.mode == "plain" and tr.record.n_uncond == 1
    assert unet.attn_processors == before and _hooks(unet) == (0, 0)


def test_installation_is_undone_when_a_participant_fails():
    """A method whose before_call raises: the call fails with its error; leaving restores everything."""
    mod = _example_module()
    unet = tiny_unet(seed=6)
    x, c = unet_inputs(unet, batch=1)
    before = dict(unet.attn_processors)

    class Broken(mod.PAGController):
        def before_call(self, call):
            raise ValueError("broken method")

    ctl = Broken(None, 1.0, cfg=False)
    keys = ev.attach.self_attention_keys(unet)[:1]
    inst = ev.denoiser_hook.install(unet, {k: mod.IdentityAttnProcessor(ctl) for k in keys}, [ctl], None)
    with ev.trace(unet) as tr:
        with pytest.raises(ValueError, match="broken method"), torch.no_grad():
            unet(x, 500, encoder_hidden_states=c)
        assert not tr.recorder.wants_events  # its after_call ran (the post-hook is always called)
    inst.remove()
    assert unet.attn_processors == before and _hooks(unet) == (0, 0)
