"""Real browser (issue 21 items 4-5): the panel's history strip, its compare area and the
success-rate box, in JupyterLab + headless Chromium on the ``tiny`` notebook of
``test_jupyterlab.py`` (its ``lab`` fixture and helpers). On ``tiny`` the success rate is refused
with a message (no detector); the rate itself is tested on shapes world in tests/test_panel_history.py.
Saves ``outputs/browser/10_history_compare.png`` and ``11_rate_refused.png``."""
from __future__ import annotations

import time

from test_jupyterlab import (  # noqa: F401  (lab: the module-scoped JupyterLab fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    _check_dom,
    _kernel_idle,
    _open_playground,
    _run,
    _shot,
    _type,
    _wait,
    lab,
)


def test_panel_history_and_rate_in_jupyterlab(lab):  # noqa: F811
    from playwright.sync_api import sync_playwright

    base, token, name = lab
    t0 = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2600})
            panel = _open_playground(page, base, token, name)
            panel.scroll_into_view_if_needed()
            strip = page.locator(".ebca-history")
            assert "no run yet" in strip.inner_text()
            assert not page.locator(".ebca-compare").is_visible()

            # two runs: two thumbnails, the newest marked current
            _run(page, 1)
            _run(page, 2)
            items = strip.locator("[class*='ebca-history-item-']")
            _wait(lambda: items.count() == 2, 10, "two thumbnails in the strip", page)
            assert strip.locator(".ebca-history-item-0 img").evaluate("i => i.naturalWidth") >= 64
            assert "#1" in strip.locator(".ebca-history-item-0").inner_text()
            assert page.locator("button.ebca-history-compare-1").is_disabled()  # the current run

            # compare run 1 with the current run 2
            page.locator("button.ebca-history-compare-0").click()
            cmp = page.locator(".ebca-compare")
            cmp.wait_for(state="visible", timeout=20_000)
            _wait(lambda: "run #1 vs the current run #2" in cmp.inner_text(), 20, "the compare area", page)
            _wait(lambda: cmp.locator("img").count() >= 3, 20, "the compare images and plot", page)
            _check_dom(page, "with the compare area open")
            _shot(page, panel, "10_history_compare.png")

            # the success rate on tiny: refused with a message in the panel, Sample still usable
            _type(page, page.locator(".ebca-rate-n input"), 3)
            page.locator("button.ebca-rate").click()
            res = page.locator(".ebca-rate-result")
            _wait(lambda: "needs the shapes-world detector" in res.inner_text(), 20, "the rate's refusal", page)
            assert not page.locator("button.ebca-sample").is_disabled()
            _check_dom(page, "after the rate's refusal")
            _shot(page, panel, "11_rate_refused.png")
        finally:
            browser.close()
    print(f"history browser test: {time.time() - t0:.0f} s")
