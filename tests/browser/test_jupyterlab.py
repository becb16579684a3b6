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
import shutil
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
        time.sleep(0.25)
    extra = ""
    if page is not None:
        extra = "\nerror area: " + page.evaluate(
            "() => Array.from(document.querySelectorAll('.ebca-error, .jp-OutputArea-output[data-mime-type*=error]'))"
            ".map(e => e.innerText).join(' | ')")
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def test_panel_samples_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token, name = lab
    t0 = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{name}?token={token}", timeout=60_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
            _wait(lambda: _kernel_idle(page), 60, "the kernel to start")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            button = page.locator("button.ebca-sample")
            button.wait_for(state="visible", timeout=90_000)
            # the last cell (sample_comparison without widgets) draws a figure; then the kernel is idle
            _wait(lambda: page.locator(".jp-OutputArea-output img").count() >= 1 and _kernel_idle(page), 90,
                  "all cells to finish", page)
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0

            energy_img = page.locator("img.ebca-image-energy")
            plot_img = page.locator("img.ebca-plot")
            src0 = energy_img.get_attribute("src") or ""
            plot0 = plot_img.get_attribute("src") or ""

            # move the seed slider with the keyboard (noUiSlider handle) and check its readout
            seed = page.locator(".ebca-seed")
            readout0 = seed.locator(".widget-readout").inner_text()
            handle = seed.locator(".noUi-handle")
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            _wait(lambda: seed.locator(".widget-readout").inner_text() != readout0, 10, "the seed slider to move")
            assert seed.locator(".widget-readout").inner_text().strip() == str(int(readout0) + 3)

            button.click()
            status = page.locator(".ebca-status")
            _wait(lambda: "run 1" in status.inner_text(), 90, "the first panel run", page)
            src1 = energy_img.get_attribute("src")
            plot1 = plot_img.get_attribute("src")
            assert src1 and src1 != src0, "no new energy image"
            assert plot1 and plot1 != plot0, "no new plot"
            assert page.locator("img.ebca-image-vanilla").get_attribute("src")
            assert energy_img.evaluate("e => e.naturalWidth") > 0 and plot_img.evaluate("e => e.naturalWidth") > 0
            assert page.locator(".ebca-error").inner_text().strip() == ""
            assert page.locator(".ebca-progress").count() == 1

            # change gamma_attn through its readout, sample again: a new image, the vanilla one cached
            ga = page.locator(".ebca-gamma-attn .widget-readout")
            ga.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0.05")
            page.keyboard.press("Enter")
            _wait(lambda: ga.inner_text().strip() == "0.050", 10, "gamma_attn to change")
            button.click()
            _wait(lambda: "run 2" in status.inner_text(), 90, "the second panel run", page)
            assert "cached" in status.inner_text()
            assert energy_img.get_attribute("src") != src1
        finally:
            browser.close()
    assert time.time() - t0 < 300
