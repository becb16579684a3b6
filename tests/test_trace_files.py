"""load_trace refuses every file that is not a trace it wrote, naming the file and the problem."""
import json
import pickle

import pytest
import torch

import ebca_viz as ev
from ebca_viz.tracing import TraceFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_pipe):
    path = tmp_path_factory.mktemp("tr") / "good.safetensors"
    with ev.trace(tiny_pipe, quantities="all") as tr, ev.energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.01)):
        tiny_pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    tr.save(path)
    return path, tr


def _rewrite(src, dst, meta_fn=None, tensor_fn=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta_fn:
        meta["ebca_viz.trace"] = meta_fn(meta["ebca_viz.trace"])
    if tensor_fn:
        tensors = tensor_fn(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_good_file_round_trips(saved):
    path, tr = saved
    t2 = ev.load_trace(path)
    assert torch.equal(t2.energies(), tr.energies()) and t2.layers == tr.layers


def test_header_that_disagrees_with_tensors_is_refused(saved, tmp_path):
    path, _ = saved

    def lie(meta):
        m = json.loads(meta)
        m["layers"] = m["layers"][:3]
        m["steps"] = list(range(5))
        m["step_timesteps"] = list(range(5))
        return json.dumps(m)

    bad = _rewrite(path, tmp_path / "lie.safetensors", meta_fn=lie)
    with pytest.raises(TraceFileError, match=r"lie.safetensors: tensor .* header describes 5 steps, 3 layers"):
        ev.load_trace(bad)


def test_tensor_dtype_and_unknown_tensor_refused(saved, tmp_path):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "dt.safetensors", tensor_fn=lambda t: {**t, "energies": t["energies"].double()})
    with pytest.raises(TraceFileError, match="'energies' is torch.float64"):
        ev.load_trace(bad)
    bad = _rewrite(path, tmp_path / "x.safetensors", tensor_fn=lambda t: {**t, "evil": torch.zeros(1)})
    with pytest.raises(TraceFileError, match="unexpected tensor 'evil'"):
        ev.load_trace(bad)


@pytest.mark.parametrize("case, msg", [
    ("empty", "is empty"),
    ("truncated", "truncated|header claims"),
    ("pickle", "looks like a pickle"),
    ("torchsave", "looks like a pickle / torch.save"),
    ("huge_header", "header claims"),
    ("tiny", "truncated"),
])
def test_non_trace_files(saved, tmp_path, case, msg):
    path, _ = saved
    f = tmp_path / f"{case}.safetensors"
    data = path.read_bytes()
    if case == "empty":
        f.write_bytes(b"")
    elif case == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif case == "pickle":
        f.write_bytes(pickle.dumps({"a": 1}))
    elif case == "torchsave":
        torch.save({"a": torch.zeros(2)}, f)
    elif case == "huge_header":
        f.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    elif case == "tiny":
        f.write_bytes(b"\x01\x02")
    with pytest.raises(TraceFileError, match=msg):
        ev.load_trace(f)


def test_bad_metadata(saved, tmp_path):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "nojson.safetensors", meta_fn=lambda m: "{not json")
    with pytest.raises(TraceFileError, match="metadata is not JSON"):
        ev.load_trace(bad)

    def drop(meta):
        m = json.loads(meta)
        del m["layers"]
        return json.dumps(m)

    bad = _rewrite(path, tmp_path / "nokey.safetensors", meta_fn=drop)
    with pytest.raises(TraceFileError, match=r"lacks \['layers'\]"):
        ev.load_trace(bad)


def test_directory_and_missing(tmp_path):
    with pytest.raises(TraceFileError, match="is a directory"):
        ev.load_trace(tmp_path)
    with pytest.raises(TraceFileError, match="no such file"):
        ev.load_trace(tmp_path / "nope.safetensors")


def test_recorder_input_errors(tiny_pipe, saved):
    _, tr = saved
    with pytest.raises(ValueError, match=r"token=999 is out of range: the context has 77 positions"):
        tr.maps(token=999)
    with pytest.raises(ValueError, match="height must be a positive int"):
        ev.estimate_bytes(tiny_pipe, height=-16)
    with pytest.warns(UserWarning, match=r"recorded nothing: the steps filter \[99\] matched none of the 3 UNet calls"):
        with ev.trace(tiny_pipe, steps=[99]):
            tiny_pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0))


def test_trace_refuses_to_replace_custom_processors(tiny_pipe):
    from diffusers.models.attention_processor import AttnProcessor

    class MyProcessor(AttnProcessor):  # a user's processor (module is this test file)
        calls = 0

        def __call__(self, *a, **k):
            MyProcessor.calls += 1
            return super().__call__(*a, **k)

    before = dict(tiny_pipe.unet.attn_processors)
    tiny_pipe.unet.set_attn_processor({k: MyProcessor() for k in before})
    try:
        with pytest.raises(ValueError, match="run a custom processor \\(MyProcessor"):
            with ev.trace(tiny_pipe):
                pass
        assert all(type(p).__name__ == "MyProcessor" for p in tiny_pipe.unet.attn_processors.values())
        with pytest.raises(ValueError, match="SEG: .* run a custom processor \\(MyProcessor"):
            with ev.smoothed_energy_guidance(tiny_pipe, ev.SEGConfig(scale=1.0, sigma=2.0)):
                pass
        assert all(type(p).__name__ == "MyProcessor" for p in tiny_pipe.unet.attn_processors.values())
    finally:
        tiny_pipe.unet.set_attn_processor(before)


def test_apply_without_with_can_be_rerun(tiny_pipe):
    ctl = ev.apply_energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.01))
    try:
        with pytest.warns(UserWarning, match="replacing the energy attention installed by an earlier"):
            ctl2 = ev.apply_energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.02))
        assert ev.find_controller(tiny_pipe.unet) is ctl2 and ctl.installation.removed
    finally:
        c = ev.find_controller(tiny_pipe.unet)
        if c is not None:
            c.remove()
    with ev.energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.01)):
        with pytest.raises(RuntimeError, match="already installed"):  # a managed one is never replaced
            ev.apply_energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.02))
