"""The trace page (``Trace.to_html`` / ``python -m ebca_viz explore``): one self-contained file, its data
equal to the trace's own accessors, and clear refusals of bad input (before any work)."""
import base64
import json
import re

import numpy as np
import pytest
import torch

import ebca_viz as ev
from ebca_viz.cli import main
from ebca_viz.errors import EbcaVizError
from ebca_viz.tracing import html as page_mod


@pytest.fixture(scope="module")
def tiny_trace(tiny_pipe, tmp_path_factory):
    """An EBCU trace of the tiny model with every quantity, saved; ``(trace, path, image)``."""
    with ev.trace(tiny_pipe, quantities="all") as tr, ev.energy_attention(tiny_pipe, ev.EBCAConfig(gamma_attn=0.01)):
        img = tiny_pipe("a red circle and a blue square", num_inference_steps=3,
                        generator=torch.Generator().manual_seed(0)).images[0]
    path = tmp_path_factory.mktemp("tr") / "t.safetensors"
    tr.save(path)
    return tr, path, img


def _data(html: str) -> dict:
    m = re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def _unpack(p) -> np.ndarray:
    u = np.frombuffer(base64.b64decode(p["bytes"]), np.uint8).astype(np.float64).reshape(len(p["scale"]), -1)
    return (u / 255 * np.asarray(p["scale"])[:, None]).reshape(p["shape"])


def _assert_self_contained(html: str):
    low = html.lower()
    assert "http://" not in low and "https://" not in low
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", low)  # protocol-relative
    for ref in re.findall(r"""<[^>]*\s(?:src|href|action|poster)\s*=\s*["']?([^"'\s>]*)""", low):
        assert ref.startswith(("data:", "#")), f"external reference {ref!r} in a tag"
    # the script sets one source, the inline image (a data: URL, checked by the callers)
    assert re.findall(r"\.src\s*=\s*([^;]+);", low) == ["d.image"]
    assert "<link" not in low and "@import" not in low and "<iframe" not in low
    assert not re.search(r"url\((?!#)", low), "a CSS url() that is not a fragment"
    for api in ("fetch(", "xmlhttprequest", "websocket", "import(", "sendbeacon", "eventsource"):
        assert api not in low, api


def test_page_self_contained_and_data_equal_to_trace(tiny_trace, tmp_path, capsys):
    tr, _, img = tiny_trace
    out = tr.to_html(tmp_path / "p.html", image=img)
    assert out == tmp_path / "p.html"
    printed = capsys.readouterr().out
    assert f"({out.stat().st_size / 1e6:.2f} MB)" in printed and str(out) in printed
    html = out.read_text()
    _assert_self_contained(html)
    d = _data(html)
    assert d["image"].startswith("data:image/png;base64,")
    # tokens: start, the words, the first end-of-text, and the padding summed
    assert d["tokens"] == ["<start>", "a", "red", "circle", "and", "a", "blue", "square", "<end>", "padding"]
    assert d["padding_count"] == 77 - 9
    # per-step maps (mean over layers): equal to Trace.maps to the byte quantisation (1/510 of each map's max)
    want = tr.maps(aggregate="step")  # (S, 77, H, W)
    want = torch.cat([want[:, :9], want[:, 9:].sum(1, keepdim=True)], 1).numpy()
    got = _unpack(d["maps"]["step"])
    assert got.shape == want.shape == (3, 10) + tuple(tr.map_grid)
    tol = want.reshape(30, -1).max(1).reshape(3, 10, 1, 1) / 510 + 1e-7
    assert (np.abs(got - want) <= tol).all()
    # the maps of all kept tokens plus the padding still sum to 1 at every pixel
    assert np.allclose(got.sum(1), 1.0, atol=0.02)
    full = _unpack(d["maps"]["full"])
    assert full.shape == (3, len(tr.layers), 10) + tuple(tr.map_grid)
    # energies and norms: the accessors' numbers (6 significant digits)
    e = np.array(d["energies"]["posterior"]["after"], dtype=float)
    assert np.allclose(e, tr.energies("posterior", when="after").numpy(), rtol=1e-5)
    drift = np.array(d["norms"]["drift"], dtype=float)
    assert np.allclose(drift, tr.drift()[:, :, :9].numpy(), rtol=1e-5, atol=1e-7)
    assert d["energy_stats"]["updates"] > 0  # gamma 0.01 moved the context
    # the fingerprint in the page is the SHA-256 of its data
    import hashlib

    payload = re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert f'content="{hashlib.sha256(payload.encode()).hexdigest()}"' in html


def test_default_shapes_world_page_size(shapes, tmp_path):
    """The default trace (maps, energies, context_norms, seg) of a 25-step shapes-world EBCU run."""
    from ebca_viz.notebook import sample_traced

    torch.set_num_threads(1)
    run = sample_traced(shapes, "a red circle and a blue square", seed=0, steps=25, guidance_scale=3.0,
                        ebca=ev.EBCAConfig(gamma_attn=0.3, gamma_norm=0.3))
    out = run.trace.to_html(tmp_path / "shapes.html", image=run.image, quiet=True)
    size = out.stat().st_size
    print(f"default shapes-world trace page: {size} bytes")
    assert 20_000 < size <= 10_000_000
    html = out.read_text()
    _assert_self_contained(html)
    d = _data(html)
    assert len(d["steps"]) == 25 and len(d["layers"]) == 7
    assert set(d["maps"]) == {"step", "layer", "all"}  # no per step x layer maps by default


def test_views_follow_what_the_trace_holds(tiny_pipe, tmp_path):
    with ev.trace(tiny_pipe, quantities=["energies"]) as tr:
        tiny_pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    d = _data(tr.to_html(tmp_path / "e.html", quiet=True).read_text())
    assert "energies" in d and d["maps"] == {} and "norms" not in d and "guidance" not in d
    assert d["energy_stats"]["updates"] == 0  # vanilla: nothing moved, the page says so


def test_large_layer_maps_left_out_with_a_note(tiny_trace, tmp_path, monkeypatch):
    tr, _, _ = tiny_trace
    monkeypatch.setattr(page_mod, "MAX_LAYER_MAP_BYTES", 100)
    d = _data(tr.to_html(tmp_path / "n.html", quiet=True).read_text())
    assert "full" not in d["maps"] and "step" in d["maps"]
    assert any("left out" in n for n in d["notes"])


def test_missing_folder_refused_before_any_work(tiny_trace, tmp_path, monkeypatch):
    tr, path, _ = tiny_trace

    def boom(*a, **k):
        raise AssertionError("page_data ran before the path was checked")

    monkeypatch.setattr(page_mod, "page_data", boom)
    with pytest.raises(EbcaVizError, match=r"folder .*nowhere.* does not exist"):
        tr.to_html(tmp_path / "nowhere" / "p.html")
    with pytest.raises(EbcaVizError, match="is a folder"):
        tr.to_html(tmp_path)


def test_cli_explore(tiny_trace, tmp_path, capsys):
    _, path, img = tiny_trace
    img.save(tmp_path / "img.png")
    out = tmp_path / "page.html"
    assert main(["explore", str(path), "--out", str(out), "--image", str(tmp_path / "img.png")]) == 0
    d = _data(out.read_text())
    assert d["title"] == "t.safetensors" and d["image"].startswith("data:image/png")
    assert "wrote" in capsys.readouterr().out


def test_cli_explore_bad_inputs(tiny_trace, tmp_path, capsys, monkeypatch):
    _, path, img = tiny_trace
    out = str(tmp_path / "p.html")
    # --out in a folder that does not exist: refused before the trace is read (the trace does not exist either)
    assert main(["explore", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "no" / "p.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out:") and "does not exist" in err and "missing.safetensors" not in err
    # a PNG: named, and what it holds
    img.save(tmp_path / "image.png")
    assert main(["explore", str(tmp_path / "image.png"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "image.png is not an ebca_viz trace: it holds a PNG image" in err
    # model weights in safetensors, without trace metadata
    from safetensors.torch import save_file

    save_file({"unet.conv.weight": torch.zeros(2, 2)}, str(tmp_path / "weights.safetensors"))
    assert main(["explore", str(tmp_path / "weights.safetensors"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "weights.safetensors is not an ebca_viz trace: it is a safetensors file holding 1 tensors (unet.conv.weight)" in err
    # a trace from a newer format version
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    m = json.loads(meta["ebca_viz.trace"])
    from ebca_viz.tracing.files import FORMAT

    newer = f"ebca_viz.trace/{int(FORMAT.rsplit('/', 1)[1]) + 1}"
    m["format"] = newer
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata={"ebca_viz.trace": json.dumps(m)})
    assert main(["explore", str(tmp_path / "new.safetensors"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"new.safetensors: unsupported trace format '{newer}' (this version" in err
    assert not (tmp_path / "p.html").exists()


def test_guidance_view_when_the_trace_holds_it(shapes, tmp_path):
    """With the ``"guidance"`` quantity (CFG 3 on the shapes world) the page carries its per-step maps."""
    from ebca_viz.tracing import Trace

    if not hasattr(Trace, "guidance_kinds"):
        pytest.skip("this version's traces record no guidance maps")
    from ebca_viz.notebook import sample_traced

    run = sample_traced(shapes, "a red circle", seed=0, steps=4, guidance_scale=3.0)
    tr = run.trace
    assert tr.guidance_kinds == ["cfg"]
    d = _data(tr.to_html(tmp_path / "g.html", quiet=True).read_text())
    g = d["guidance"]["cfg"]
    assert g["acted"] == [True] * len(tr.steps)
    got, want = _unpack(g["maps"]), tr.guidance("cfg").numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= want.max() / 510 + 1e-7
    # a vanilla run without CFG: no guidance view
    run = sample_traced(shapes, "a red circle", seed=0, steps=2, guidance_scale=1.0)
    assert "guidance" not in _data(run.trace.to_html(tmp_path / "n.html", quiet=True).read_text())
