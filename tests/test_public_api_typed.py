"""Issue 22: the public API (``ebca_viz.__all__``: functions, and the public methods of its classes) has type hints
on every parameter and on its return value, so an editor can tell a newcomer what a call accepts."""
import inspect

import ebca_viz as ev


def _unannotated():
    out = []
    for name in ev.__all__:
        obj = getattr(ev, name)
        if inspect.isfunction(obj):
            funcs = [(name, obj)]
        elif inspect.isclass(obj) and obj.__module__.startswith("ebca_viz"):
            funcs = [(f"{name}.{m}", f) for m, f in vars(obj).items()
                     if inspect.isfunction(f) and (not m.startswith("_") or m == "__init__")]
        else:
            continue
        for qual, f in funcs:
            sig = inspect.signature(f)
            for p in sig.parameters.values():
                if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.annotation is inspect.Parameter.empty:
                    out.append(f"{qual}({p.name})")
            if not qual.endswith("__init__") and sig.return_annotation is inspect.Signature.empty:
                out.append(f"{qual} -> ?")
    return out


def test_public_api_has_type_hints():
    missing = _unannotated()
    assert not missing, "add type hints (ebca_viz/hints.py has the shared aliases): " + ", ".join(missing)

