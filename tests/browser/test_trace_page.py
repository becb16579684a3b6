"""Real browser: the trace page (``Trace.to_html``) opened from ``file://`` in headless Chromium.

Records a short trace of the shipped model (the tiny random model when the shapes world is absent),
writes its page with the final image, opens it from ``file://`` (no server), moves the step slider,
clicks a token chip, and checks that the drawn map's pixels change each time, that the selection
reaches every view, and that no console error or page error occurred. Saves
``outputs/browser/trace_page.png`` (``EBCA_VIZ_SCREENSHOTS=DIR`` moves it).

Skips like ``test_jupyterlab.py`` when chromium or playwright is missing, unless
``EBCA_VIZ_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EBCA_VIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REQUIRE = os.environ.get("EBCA_VIZ_REQUIRE_BROWSER", "") == "1"
SHOTS = Path(os.environ.get("EBCA_VIZ_SCREENSHOTS", ROOT / "outputs" / "browser"))


def _require_browser():
    why = None
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        why = f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "the playwright package is not installed (pip install playwright; the system chromium is used)"
    if why:
        if REQUIRE:
            pytest.fail(f"EBCA_VIZ_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    """``(html path, trace)``: an EBCU run of the default model, 6 steps, with its image."""
    _require_browser()
    from ebca_viz import EBCAConfig
    from ebca_viz.models import load_pipeline
    from ebca_viz.notebook import default_model, sample_traced

    torch.set_num_threads(1)
    pipe = load_pipeline(default_model(), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    run = sample_traced(pipe, "a red circle and a blue square", seed=0, steps=6, guidance_scale=3.0,
                        ebca=EBCAConfig(gamma_attn=0.3, gamma_norm=0.3))
    out = tmp_path_factory.mktemp("page") / "trace.html"
    run.trace.to_html(out, image=run.image, quiet=True)
    return out, run.trace


def _map_pixels(page) -> str:
    return page.locator("#map").evaluate("c => c.toDataURL()")


def test_trace_page_in_chromium(page_file):
    from playwright.sync_api import sync_playwright

    path, tr = page_file
    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1900})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
            # nothing but the file itself (and its inline data: URL image) was requested
            assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
            # every view the trace holds is shown
            for sec in ("#sec-map", "#sec-energy", "#sec-norms"):
                assert page.locator(sec).is_visible(), sec
            assert page.locator("#fig-overlay").is_visible()  # the image came with the trace
            assert page.locator(".chip").count() == len(page.evaluate("() => D.tokens"))
            assert page.locator("#energy-cascade svg").count() == 3 and page.locator("#energy-steps svg").count() == 3

            step = page.locator("#step")
            assert int(step.get_attribute("max")) == len(tr.steps)  # the last position: all steps
            before_px, before_key = _map_pixels(page), page.locator("#map").get_attribute("data-key")
            before_out = page.locator("#step-out").inner_text()
            # move the step slider to the last recorded step (keyboard: End is "all", one Left back)
            step.focus()
            page.keyboard.press("End")
            page.keyboard.press("ArrowLeft")
            assert page.locator("#step-out").inner_text().startswith(f"step {len(tr.steps)} of {len(tr.steps)}")
            assert page.locator("#step-out").inner_text() != before_out
            after_step = _map_pixels(page)
            assert after_step != before_px, "the map did not change when the step moved"
            assert page.locator("#map").get_attribute("data-key") != before_key
            # the marker of the selected step sits at the last step of the over-steps charts
            assert page.locator("#energy-steps svg .mark").count() == 3

            # where guidance acts (when the trace records it): its map follows the step too
            if getattr(tr, "guidance_kinds", None):
                assert page.locator("#sec-guidance").is_visible()
                assert page.locator("#guid").get_attribute("data-key").endswith(f"/{len(tr.steps) - 1}")
                g_last = page.locator("#guid").evaluate("c => c.toDataURL()")
                page.keyboard.press("Home")
                assert page.locator("#guid").evaluate("c => c.toDataURL()") != g_last
                page.keyboard.press("End")
                page.keyboard.press("ArrowLeft")
            else:
                assert not page.locator("#sec-guidance").is_visible()

            # click a token chip: the map and the selection follow
            chip = page.locator(".chip", has_text="blue")
            chip.click()
            assert "sel" in chip.get_attribute("class")
            assert "\u201cblue\u201d" in page.locator("#map-cap").inner_text()
            after_chip = _map_pixels(page)
            assert after_chip != after_step, "the map did not change when another token was picked"
            # the page's map equals the trace's own per-step map of that token (to the byte quantisation)
            got = page.evaluate("() => Array.from(currentMap(st.t).v)")
            want = tr.maps(token="blue", aggregate="step")[-1, 0].flatten()
            assert max(abs(a - b) for a, b in zip(got, want.tolist())) <= float(want.max()) / 255 + 1e-6
            # text is never under 12 px
            small = page.evaluate("""() => Array.from(document.querySelectorAll('body *')).filter(e => e.offsetParent
                && Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())
                && parseFloat(getComputedStyle(e).fontSize) < 12).map(e => e.tagName + ':' + e.textContent.slice(0, 30))""")
            assert small == [], small
            svg_small = page.evaluate("""() => Array.from(document.querySelectorAll('svg text'))
                .filter(e => parseFloat(getComputedStyle(e).fontSize) < 12).map(e => e.textContent)""")
            assert page.locator("svg text").count() > 50 and svg_small == [], svg_small
            # all steps (the slider's last position) and one layer: the per-layer map, mean over steps
            step.focus()
            page.keyboard.press("End")
            assert page.locator("#step-out").inner_text().startswith(f"all {len(tr.steps)} steps")
            layer = page.locator("#layer")
            layer.focus()
            page.keyboard.press("Home")
            assert page.locator("#layer-out").inner_text().startswith(f"layer 1 of {len(tr.layers)}")
            assert "mean over steps" in page.locator("#map-cap").inner_text()
            got = page.evaluate("() => Array.from(currentMap(st.t).v)")
            want = tr.maps(token="blue", aggregate="layer")[0, 0].flatten()
            assert max(abs(a - b) for a, b in zip(got, want.tolist())) <= float(want.max()) / 255 + 1e-6
            assert page.locator("#energy-cascade svg .mark").count() == 3  # the selected layer is marked
            page.keyboard.press("End")
            step.focus()
            page.keyboard.press("Home")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            SHOTS.mkdir(parents=True, exist_ok=True)
            tmp = SHOTS / "trace_page.png.tmp"
            tmp.write_bytes(page.screenshot(full_page=True, animations="disabled"))
            os.replace(tmp, SHOTS / "trace_page.png")
        finally:
            browser.close()
    assert errors == [], errors
