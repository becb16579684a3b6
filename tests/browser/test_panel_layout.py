"""Real browser: the playground panel wraps instead of scrolling sideways, and its presentation mode.

A 1280 px window with JupyterLab's file browser open (its default layout, made sure of), at 100 % zoom
and at 150 % zoom (what browser zoom does: a CSS viewport of 1280 / 1.5 = 853 px drawn at device scale
factor 1.5), before and after a run and in presentation mode ("present" toggle):

* no element inside ``.ebca-panel`` that scrolls sideways (``overflow-x`` auto/scroll with
  ``scrollWidth > clientWidth + 1``), and the panel itself ``scrollWidth <= clientWidth + 1``;
* presentation mode: the three images displayed >= 256 CSS px wide with ``image-rendering: pixelated``
  (nearest neighbour, not blurry), every visible text >= 14 px, the expert controls (``ebca-expert``)
  hidden; toggling back restores the normal panel.

Screenshots: ``outputs/browser/layout_<zoom>_<state>.png``. Reuses the ``lab`` fixture (tiny model).
"""
from __future__ import annotations

import time

from test_jupyterlab import CHROMIUM, CHROMIUM_ARGS, _check_dom, _kernel_idle, _open_playground, _run, _shot, _wait, lab  # noqa: F401

_SCROLLS_JS = """(root) => {
  const out = [];
  for (const el of root.querySelectorAll('*')) {
    if (!el.offsetParent) continue;
    const ox = getComputedStyle(el).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1)
      out.push(`${el.className || el.tagName} (${el.scrollWidth} > ${el.clientWidth}; wide children: ` +
        Array.from(el.children).filter(c => c.getBoundingClientRect().right > el.getBoundingClientRect().right)
          .map(c => `${c.className} ${Math.round(c.getBoundingClientRect().width)} px, margin ${getComputedStyle(c).margin}`)
          .join('; ') + ')');
  }
  if (root.scrollWidth > root.clientWidth + 1) out.push(`the panel itself (${root.scrollWidth} > ${root.clientWidth})`);
  const area = root.closest('.jp-OutputArea-output');
  if (area && area.scrollWidth > area.clientWidth + 1) out.push(`its output area (${area.scrollWidth} > ${area.clientWidth})`);
  if (area && root.getBoundingClientRect().right > area.getBoundingClientRect().right + 1) out.push('the panel sticks out of its output area');
  return out;
}"""

_SMALL_TEXT_JS = """(root) => {
  const out = [];
  for (const el of root.querySelectorAll('*')) {
    if (!el.offsetParent) continue;
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own && !el.matches('input, button')) continue;
    const fs = parseFloat(getComputedStyle(el).fontSize);
    if (fs < 14) out.push(`${el.className || el.tagName}: ${(el.innerText || el.value || '').slice(0, 30)} (${fs}px)`);
  }
  return out;
}"""

_IMAGES = ("ebca-image-vanilla", "ebca-image-energy", "ebca-image-diff")
_EXPERT = ("ebca-steps", "ebca-cfg", "ebca-gamma-norm", "ebca-token-summary", "ebca-edit0-start", "ebca-edit0-gamma")
_KEPT = ("ebca-prompt", "ebca-seed", "ebca-method", "ebca-gamma-attn", "ebca-edit0-prompt", "ebca-edit0-alpha")


def _no_sideways_scroll(page, where: str) -> None:
    bad = page.locator(".ebca-panel").evaluate(_SCROLLS_JS)
    assert not bad, f"{where}: scrolls sideways: {bad}"


def _image_widths(page) -> dict:
    return {c: page.locator(f"img.{c}").evaluate("i => [i.getBoundingClientRect().width, getComputedStyle(i).imageRendering]")
            for c in _IMAGES}


def _open(browser, base, token, name, width, scale):
    ctx = browser.new_context(viewport={"width": width, "height": 1800}, device_scale_factor=scale)
    page = ctx.new_page()

    def file_browser_open(page):  # the file browser open in the left sidebar (JupyterLab's default; made sure of)
        page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")
        _wait(lambda: page.evaluate("() => !window.jupyterapp.shell.leftCollapsed")
              and page.locator(".jp-FileBrowser").is_visible(), 20, "the file browser to be open")

    _open_playground(page, base, token, name, before_run=file_browser_open)
    return ctx, page


def test_panel_wraps_and_presents_at_100_and_150_percent(lab):
    from playwright.sync_api import sync_playwright

    base, token, name = lab
    t0 = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for zoom, width, scale in (("100", 1280, 1.0), ("150", round(1280 / 1.5), 1.5)):
                ctx, page = _open(browser, base, token, name, width, scale)
                panel = page.locator(".ebca-panel")
                panel.scroll_into_view_if_needed()
                fb = page.locator(".jp-FileBrowser").bounding_box()
                assert fb and fb["width"] > 150, f"{zoom} %: the file browser is not open ({fb})"
                _no_sideways_scroll(page, f"{zoom} % before a run")
                _run(page, 1)
                _check_dom(page, f"{zoom} % after a run")
                _no_sideways_scroll(page, f"{zoom} % after a run")
                normal = _image_widths(page)
                assert all(w < 256 for w, _ in normal.values()), normal
                _shot(page, panel, f"layout_{zoom}_normal.png")
                _shot(page, None, f"layout_{zoom}_window.png")

                # presentation mode: large nearest-neighbour images, large text, expert controls hidden
                page.locator(".ebca-present-toggle").click()
                page.wait_for_selector(".ebca-panel.ebca-present", timeout=10_000)
                for c, (w, rendering) in _image_widths(page).items():
                    assert w >= 256, f"{zoom} % present: {c} is {w:.0f} px wide"
                    assert rendering == "pixelated", f"{zoom} % present: {c} is scaled with {rendering!r} (blurry)"
                small = panel.evaluate(_SMALL_TEXT_JS)
                assert not small, f"{zoom} % present: text under 14 px: {small}"
                for c in _EXPERT:
                    assert not page.locator(f".{c}").first.is_visible(), f"{zoom} % present: expert control {c} shown"
                for c in _KEPT:
                    assert page.locator(f".{c}").first.is_visible(), f"{zoom} % present: {c} hidden"
                _check_dom(page, f"{zoom} % present")
                _no_sideways_scroll(page, f"{zoom} % present")
                panel.scroll_into_view_if_needed()
                _shot(page, panel, f"layout_{zoom}_present.png")

                # and back
                page.locator(".ebca-present-toggle").click()
                _wait(lambda: page.locator(".ebca-panel.ebca-present").count() == 0, 10, "present mode to end")
                assert page.locator(".ebca-gamma-norm").is_visible() and page.locator(".ebca-steps").is_visible()
                back = _image_widths(page)
                assert back == normal, (back, normal)
                _no_sideways_scroll(page, f"{zoom} % after present mode")
                ctx.close()
        finally:
            browser.close()
    elapsed = time.time() - t0
    print(f"layout browser test: {elapsed:.0f} s")
    assert elapsed < 420
