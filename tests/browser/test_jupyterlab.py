"""Real browser: JupyterLab + headless Chromium (Playwright) drive the playground panel.

Starts JupyterLab on 127.0.0.1 (free port, token, no browser) in a temporary root holding a copy
of ``notebooks/09_playground.ipynb`` switched to the ``tiny`` model, runs all cells in fast mode,
moves the seed slider, presses the Sample button and checks that new images and a new plot appear.

Skips when chromium (``/usr/bin/chromium``) or the ``playwright`` package is missing, unless
``EBCA_VIZ_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "09_playground.ipynb"
CHROMIUM = os.environ.get("EBCA_VIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REQUIRE = os.environ.get("EBCA_VIZ_REQUIRE_BROWSER", "") == "1"
#: screenshots of the panel (before / during / after a run, after an error); CI keeps them as artifacts
SHOTS = Path(os.environ.get("EBCA_VIZ_SCREENSHOTS", ROOT / "outputs" / "browser"))


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; the system chromium is used)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


def _require_browser():
    why = _missing()
    if why:
        if REQUIRE:
            pytest.fail(f"EBCA_VIZ_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``(base_url, token, notebook_name)`` of a running JupyterLab; shut down in the finalizer."""
    _require_browser()
    root = tmp_path_factory.mktemp("lab_root")
    home = tmp_path_factory.mktemp("lab_home")
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = src.replace('MODEL = "shapes-world"', 'MODEL = "tiny"')
    name = "playground_tiny.ipynb"
    (root / name).write_text(json.dumps(nb))
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(os.environ, EBCA_VIZ_FAST="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    # no "receive Jupyter news?" toast, no update checks
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers / CI runners
        cmd.append("--allow-root")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{(home / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"jupyter lab did not answer in 60 s:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _kernel_idle(page) -> bool:
    return page.evaluate(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                   return !!k && k.status === 'idle'; }"""
    )


def _wait(cond, timeout: float, what: str, page=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    extra = ""
    if page is not None:
        extra = "\nerror area: " + page.evaluate(
            "() => Array.from(document.querySelectorAll('.ebca-error, .ebca-notice, "
            ".jp-OutputArea-output[data-mime-type*=error]')).map(e => e.innerText).join(' | ')")
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def _shot(page, locator, name: str) -> Path:
    """Screenshot of ``locator`` into SHOTS (written atomically)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    data = (page if locator is None else locator).screenshot(animations="disabled")
    path = SHOTS / name
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# every element of the panel that shows text, a button or an input: its content must fit
_TRUNCATED_JS = """(root) => {
  const out = [];
  for (const el of root.querySelectorAll('*')) {
    if (!el.offsetParent) continue;                       // hidden (other method's page, closed accordion)
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    const kind = el.matches('button, label, .widget-label, .widget-label-basic, .widget-readout, .lm-AccordionPanel-title, .jupyter-widget-Collapse-header, input');
    if (!own && !kind) continue;
    if (el.scrollWidth > el.clientWidth + 1) out.push((el.className || el.tagName) + ': ' + (el.innerText || el.value || '').slice(0, 40)
                                                     + ` (${el.scrollWidth} > ${el.clientWidth})`);
  }
  if (root.scrollWidth > root.clientWidth + 1) out.push(`the panel itself (${root.scrollWidth} > ${root.clientWidth})`);
  return out;
}"""

_BAD_IMAGES_JS = """(root) => Array.from(root.querySelectorAll('img')).filter(i => i.offsetParent)
  .filter(i => !i.getAttribute('src') || !i.complete || i.naturalWidth === 0).map(i => i.className)"""


def _check_dom(page, where: str):
    panel = page.locator(".ebca-panel")
    bad = panel.evaluate(_TRUNCATED_JS)
    assert not bad, f"{where}: truncated or overflowing: {bad}"
    bad = panel.evaluate(_BAD_IMAGES_JS)
    assert not bad, f"{where}: <img> without a (loaded) source: {bad}"
    # one method selector, no tab bar
    assert panel.locator(".ebca-method").count() == 1 and panel.locator(".lm-TabBar, .widget-tab").count() == 0
    # nothing in red under the panel: no stderr, no error outputs in the whole notebook
    n = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                     " .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count()
    assert n == 0, f"{where}: {n} stderr/error outputs: " + " | ".join(
        page.locator(".jp-OutputArea-output[data-mime-type*='stderr']").all_inner_texts())


def _src(page, cls: str) -> str:
    return page.locator(f"img.{cls}").get_attribute("src") or ""


def _png_pixels(page, cls: str) -> str:
    """The decoded pixels of an <img> (a data-URL of a canvas copy): equal pixels, equal string."""
    return page.locator(f"img.{cls}").evaluate(
        "i => { const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;"
        " c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL(); }")


def _type(page, locator, value) -> None:
    locator.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def _text_value(control) -> float:
    return float(control.locator("input").input_value())


def _drive_to_extremes(page, css: str, rng, restore) -> None:
    """Home / End on the slider handle: the text box must show the range's ends; then type ``restore``."""
    box = page.locator(f".{css}")
    handle = box.locator(".noUi-handle")
    handle.focus()
    for key, end in (("End", rng.hi), ("Home", rng.lo)):
        handle.press(key)
        _wait(lambda: abs(_text_value(box) - end) <= 1e-6 * max(1.0, abs(end)), 10, f"{css} to reach {end} with {key}")
    _type(page, box.locator("input"), restore)
    _wait(lambda: abs(_text_value(box) - float(restore)) <= 1e-9, 10, f"{css} to take {restore}")


def _run(page, n: int, timeout: float = 120, check_stale: bool = False) -> None:
    """Press Sample; with ``check_stale`` the previous result must be greyed and labelled stale while it runs."""
    page.locator("button.ebca-sample").click()
    if check_stale:
        page.wait_for_function("() => { const l = document.querySelector('.ebca-results.ebca-stale .ebca-stale-label');"
                               " return l && l.innerText.includes('in progress'); }", timeout=10_000)
        assert "stale" in page.locator(".ebca-stale-label").inner_text()
        if n == 2:
            _shot(page, page.locator(".ebca-panel"), "03_during_run.png")
        # the stale style may reach the image a frame after the label (slow machines): wait for it, then check
        try:
            page.wait_for_function("() => { const i = document.querySelector('.ebca-results.ebca-stale img.ebca-image-energy');"
                                   " return i && parseFloat(getComputedStyle(i).opacity) < 0.5; }", timeout=10_000)
        except Exception:
            pass
        op = page.locator(".ebca-results.ebca-stale img.ebca-image-energy").evaluate("i => getComputedStyle(i).opacity")
        assert float(op) < 0.5, f"the stale image is not greyed out (opacity {op})"
    status = page.locator(".ebca-status")
    _wait(lambda: f"run {n}:" in status.inner_text() or page.locator(".ebca-error").inner_text().strip(), timeout,
          f"panel run {n}", page)
    assert page.locator(".ebca-error").inner_text().strip() == "", page.locator(".ebca-error").inner_text()
    assert page.locator(".ebca-results.ebca-stale").count() == 0
    assert not page.locator("button.ebca-sample").is_disabled()


def _open_playground(page, base, token, name, before_run=None):
    """Open the playground notebook in ``page``, wait for its kernel, run every cell and wait until the
    panel is visible and the cells are done (``before_run(page)`` runs after the kernel starts). Returns
    the panel's locator."""
    page.goto(f"{base}/lab/tree/{name}?token={token}", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
    _wait(lambda: _kernel_idle(page), 60, "the kernel to start")
    if before_run is not None:
        before_run(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    panel = page.locator(".ebca-panel")
    panel.wait_for(state="visible", timeout=120_000)
    _wait(lambda: page.locator(".jp-OutputArea-output img").count() >= 4 and _kernel_idle(page), 180,
          "all cells to finish", page)
    return panel


def test_panel_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    from ebca_viz.widgets import ControlRanges

    R = ControlRanges.for_model("tiny")
    base, token, name = lab
    t0 = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # JupyterLab's default layout (file browser open) 1280 px wide: the notebook's default width
            # for a new user; tall, so that the whole panel is on screen for the screenshots
            page = browser.new_page(viewport={"width": 1280, "height": 2100})
            panel = _open_playground(page, base, token, name)
            panel.scroll_into_view_if_needed()

            # before the first run: placeholders, not broken images; nothing truncated
            _check_dom(page, "before the first run")
            _shot(page, panel, "01_before_first_run.png")
            _shot(page, None, "00_jupyterlab.png")
            placeholder = {c: _src(page, c) for c in ("ebca-image-vanilla", "ebca-image-energy", "ebca-layer-energy")}

            # every slider to both ends (keyboard on the handle), then a working value typed in
            for css, rng, restore in (("ebca-seed", R.seed, 3), ("ebca-steps", R.steps, 4), ("ebca-cfg", R.guidance_scale, 3),
                                      ("ebca-gamma-attn", R.gamma_attn, 0.3), ("ebca-gamma-norm", R.gamma_norm, 0.3),
                                      ("ebca-upweight", R.upweight, 1.5), ("ebca-edit0-alpha", R.edit_alpha, 0.6),
                                      ("ebca-edit0-start", R.edit_start, 0.2), ("ebca-edit0-gamma", R.edit_gamma, 0.001),
                                      ("ebca-edit1-alpha", R.edit_alpha, 1), ("ebca-edit1-start", R.edit_start, 0.2),
                                      ("ebca-edit1-gamma", R.edit_gamma, 0)):
                _drive_to_extremes(page, css, rng, restore)
            # a typed value beyond the slider: refused with a message, the old value kept (not clamped)
            ga = page.locator(".ebca-gamma-attn")
            _type(page, ga.locator("input"), 5)
            _wait(lambda: "refused" in page.locator(".ebca-notice").inner_text(), 10, "the refusal message")
            assert "gamma_attn" in page.locator(".ebca-notice").inner_text()
            _wait(lambda: _text_value(ga) == 0.3, 10, "gamma_attn to keep 0.3")

            # token chips: "2 red" toggles token_indices and shows its up-weight
            chip = page.locator("button.ebca-chip-2")
            assert chip.inner_text().strip().startswith("2 red"), chip.inner_text()
            assert page.locator("button.ebca-chip-0").is_disabled()  # start-of-text
            chip.click()
            _wait(lambda: "x1.5" in chip.inner_text(), 10, "the chip to show its up-weight")
            assert "token_indices=[2]" in page.locator(".ebca-token-summary").inner_text()
            chip.click()
            _wait(lambda: "token_indices" not in page.locator(".ebca-token-summary").inner_text(), 10, "the chip to untoggle")
            _check_dom(page, "after driving the controls")

            # run 1 (no up-weight), run 2 with "red" up-weighted: the stale marker while it runs, a new image
            _run(page, 1)
            for c, ph in placeholder.items():
                assert _src(page, c) != ph, f"{c} still shows the placeholder"
            assert "detector:" in page.locator(".ebca-verdict-energy").inner_text()
            cap = page.locator(".ebca-diff-caption").inner_text()
            assert re.search(r"mean [\d.]+/255, max [\d.]+/255", cap) or "identical" in cap, cap
            _check_dom(page, "after the first run")
            _shot(page, panel, "02_after_first_run.png")
            px1 = _png_pixels(page, "ebca-image-energy")
            chip.click()
            _wait(lambda: "stale" in page.locator(".ebca-stale-label").inner_text(), 10, "the result to go stale")
            _run(page, 2, check_stale=True)
            assert "cached" in page.locator(".ebca-status").inner_text()
            assert "up-weights 2x1.5" in page.locator(".ebca-run-caption").inner_text()
            px2 = _png_pixels(page, "ebca-image-energy")
            assert px2 != px1, "up-weighting 'red' did not change the EBCA image"
            # the button twice in a row: the same settings give the same picture
            _run(page, 3, check_stale=True)
            assert _png_pixels(page, "ebca-image-energy") == px2

            # the direction toggle: NOT then AND on the same edit prompt; each run applies its own direction
            _type(page, page.locator(".ebca-edit0-prompt input"), "blue")
            page.locator(".ebca-edit0-direction button", has_text="not").click()
            _run(page, 4)
            assert "NOT 'blue'" in page.locator(".ebca-run-caption").inner_text()
            px_not = _png_pixels(page, "ebca-image-energy")
            page.locator(".ebca-edit0-direction button", has_text="and").click()
            _run(page, 5)
            assert "AND 'blue'" in page.locator(".ebca-run-caption").inner_text()
            assert _png_pixels(page, "ebca-image-energy") != px_not, "AND and NOT gave the same image"

            # SEG: the one method selector switches the settings shown; its sliders to their ends
            page.locator(".ebca-method button", has_text="SEG").click()
            page.locator(".ebca-seg-scale").wait_for(state="visible", timeout=10_000)
            assert not page.locator(".ebca-gamma-attn").is_visible()
            _drive_to_extremes(page, "ebca-seg-sigma", R.seg_sigma, 1)
            _drive_to_extremes(page, "ebca-seg-scale", R.seg_scale, 3)
            page.locator(".ebca-seg-inf input").check()
            _run(page, 6)
            assert "SEG sigma inf" in page.locator(".ebca-run-caption").inner_text()
            _check_dom(page, "after a SEG run")

            # an error: the message in the panel, the last result kept but greyed and labelled stale
            _type(page, page.locator(".ebca-prompt input"), " ")
            page.locator("button.ebca-sample").click()
            _wait(lambda: "prompt is empty" in page.locator(".ebca-error").inner_text(), 60, "the error message", page)
            assert page.locator(".ebca-results.ebca-stale").count() == 1
            assert "failed" in page.locator(".ebca-stale-label").inner_text()
            _check_dom(page, "after an error")
            _shot(page, panel, "04_after_error.png")
        finally:
            browser.close()
    elapsed = time.time() - t0
    print(f"browser test: {elapsed:.0f} s")
    assert elapsed < 420
