"""What the detector says about a panel image (:func:`detector_verdict`) and how the panel shows it
(:func:`verdict_html`)."""
from __future__ import annotations

import html
from typing import Optional

def detector_verdict(image, prompt: str) -> Optional[dict]:
    """The shapes-world detector (:mod:`ebca_viz.shapes.detect`) on one image, judged against a
    shapes-world prompt (``"a red circle and a blue square"``); None for any other prompt.

    Returns ``objects`` (what was found, largest first), ``requests`` (per requested object:
    ``present``, ``colour_ok``, ``shape_ok`` and the detected object it was matched to),
    ``correct`` (every requested object present) and ``category`` (one object: ``correct`` /
    ``wrong`` / ``unsure``; two: :data:`ebca_viz.shapes.detect.PAIR_VERDICTS`)."""
    from ..eval.detector import parse_shapes_prompt

    req = parse_shapes_prompt(prompt)
    if req is None:
        return None
    import numpy as np

    from ..shapes import detect

    found = detect.detect(np.asarray(image.convert("RGB")))
    keys = [d.key for d in found]
    used: set = set()
    requests = []
    for c, sh in req:
        j = next((j for j, k in enumerate(keys) if k == (c, sh) and j not in used), None)
        if j is None:  # the closest object: the right shape (wrong colour), else the right colour
            j = next((j for j, k in enumerate(keys) if k[1] == sh and j not in used), None)
        if j is None:
            j = next((j for j, k in enumerate(keys) if k[0] == c and j not in used), None)
        if j is not None:
            used.add(j)
        got = None if j is None else keys[j]
        requests.append(dict(request=f"{c} {sh}", matched=None if got is None else f"{got[0]} {got[1]}",
                             colour_ok=got is not None and got[0] == c, shape_ok=got is not None and got[1] == sh,
                             present=got == (c, sh)))
    if len(req) == 1:
        category = detect.score_single(req[0], found)["category"]  # correct / wrong / unsure
    else:
        category = detect.score_pair(tuple(req), found)["category"]
    return dict(objects=[f"{c} {s}" for c, s in keys], requests=requests,
                correct=all(r["present"] for r in requests), category=category)


def verdict_html(v: Optional[dict]) -> str:
    """A verdict of :func:`detector_verdict` as a few lines of HTML (for the panel)."""
    if v is None:
        return "<span style='color:#666'>detector: only for shapes-world prompts like 'a red circle and a blue square'</span>"
    ok, bad = "<b style='color:#1b7f3b'>&#10003;</b>", "<b style='color:#b00020'>&#10007;</b>"
    n = len(v["objects"])
    lines = [f"detector: {n} object{'s' if n != 1 else ''}"
             + (": " + ", ".join(html.escape(o) for o in v["objects"][:4]) + (" ..." if n > 4 else "") if n else "")]
    for r in v["requests"]:
        if r["present"]:
            lines.append(f"{ok} {html.escape(r['request'])}")
        elif r["matched"] is None:
            lines.append(f"{bad} {html.escape(r['request'])}: missing")
        else:
            lines.append(f"{bad} {html.escape(r['request'])}: got {html.escape(r['matched'])} "
                         f"(colour {ok if r['colour_ok'] else bad} shape {ok if r['shape_ok'] else bad})")
    lines.append(f"verdict: <b>{html.escape(v['category'].replace('_', ' '))}</b>")
    return "<div style='line-height:1.35'>" + "<br>".join(lines) + "</div>"
