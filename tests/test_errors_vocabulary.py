"""The package's errors are one vocabulary (ebca_viz/errors.py): every ``raise`` in ebca_viz uses it, each
class is also the builtin it replaced, messages built with ``.of()`` name the parameter, the value and the
fix, and the command line prints them as one ``error:`` line (a traceback for anything else)."""
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ebca_viz
from ebca_viz import errors
from ebca_viz.cli import main
from ebca_viz.errors import (EbcaVizError, EbcaVizTypeError, InvalidSetting, InvalidType, MissingFile, NonFinite,
                             NotFound, RefusedFile, StateError, UnsupportedModel, is_user_error)

PKG = Path(ebca_viz.__file__).parent
ROOT = PKG.parent
MARK = "# internal invariant"


def _raises(path: Path):
    """(line number, raised name or None, source line) for every ``raise`` statement of ``path``;
    the name is None for a bare ``raise`` and for ``raise <caught exception>``."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    caught = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise):
            continue
        exc = node.exc
        if exc is None or (isinstance(exc, ast.Name) and exc.id in caught):
            yield node.lineno, None, lines[node.lineno - 1]
            continue
        target = exc.func if isinstance(exc, ast.Call) else exc
        yield node.lineno, ast.unparse(target), lines[node.lineno - 1]


def _resolve(path: Path, name: str):
    """The object ``name`` (a dotted name) refers to in the module of ``path``."""
    mod = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    obj = mod
    if "." not in name and not hasattr(mod, name):
        import builtins

        return getattr(builtins, name, None)
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def test_every_raise_in_the_package_uses_the_vocabulary():
    bad, counts = [], {}
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        for lineno, name, line in _raises(path):
            if name is None or MARK in line:
                continue
            cls = _resolve(path, name)
            where = f"{path.relative_to(ROOT)}:{lineno}: raise {name}"
            if cls is NotImplementedError:
                continue
            if not (isinstance(cls, type) and issubclass(cls, EbcaVizError)):
                bad.append(where)
                continue
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
    assert not bad, ("raise a class of ebca_viz.errors (or mark a genuine internal invariant with "
                     f"'{MARK}'):\n" + "\n".join(bad))
    assert sum(counts.values()) > 400 and counts["InvalidSetting"] > 200  # the scan found the package's raises


def test_the_scan_catches_a_builtin_raise(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f(x):\n    try:\n        pass\n    except KeyError as e:\n        raise e\n"
                 "    if x:\n        raise ValueError('x')\n    raise RuntimeError('y')  # internal invariant\n")
    assert sorted((n, name or "") for n, name, _ in _raises(f)) == [(5, ""), (7, "ValueError"), (8, "RuntimeError")]


@pytest.mark.parametrize("cls", list(errors.VOCABULARY))
def test_each_class_is_a_package_error_and_its_builtin(cls):
    builtins = errors.VOCABULARY[cls]
    e = cls("x")
    assert isinstance(e, EbcaVizError) and is_user_error(e)
    for b in builtins:
        assert isinstance(e, b), (cls, b)
        with pytest.raises(b):  # every existing `pytest.raises(<builtin>)` / `except <builtin>` still catches it
            raise cls("x")
    assert str(cls("a sentence")) == "a sentence"  # not quoted (KeyError) nor decorated (OSError)
    assert cls.__doc__ and len(cls.__doc__) > 40  # each says when to use it


def test_the_vocabulary_covers_the_builtins_and_the_old_names():
    assert {InvalidSetting, InvalidType, UnsupportedModel, MissingFile, RefusedFile, NonFinite, StateError,
            NotFound} == set(errors.VOCABULARY)
    assert EbcaVizTypeError is InvalidType and issubclass(EbcaVizTypeError, TypeError)
    assert not issubclass(MissingFile, ValueError)  # `except ValueError` does not swallow a missing file
    from ebca_viz.eval.sweep import SweepMismatchError
    from ebca_viz.experiments.shipped import ShippedMismatchError
    from ebca_viz.guards import NonFiniteError
    from ebca_viz.tracing.budget import TraceBudgetError
    from ebca_viz.tracing.files import TraceFileError
    from ebca_viz.widgets.runs import RateUnavailable

    assert issubclass(TraceFileError, RefusedFile) and issubclass(ShippedMismatchError, RefusedFile)
    assert issubclass(SweepMismatchError, RefusedFile) and issubclass(NonFiniteError, NonFinite)
    assert issubclass(TraceBudgetError, StateError) and issubclass(TraceBudgetError, RuntimeError)
    assert issubclass(RateUnavailable, InvalidSetting)


def test_user_error_is_exactly_an_instance_of_the_vocabulary():
    assert not is_user_error(ValueError("a library's"))
    assert not is_user_error(KeyError("x"))
    assert is_user_error(NotFound("x"))
    assert "linecache" not in Path(errors.__file__).read_text()


def test_of_names_the_parameter_the_value_and_the_fix():
    e = InvalidSetting.of("steps", 0, "pass steps=1 or more", why="must be >= 1")
    assert str(e) == "steps=0: must be >= 1; fix: pass steps=1 or more"
    assert isinstance(e, ValueError)
    e = MissingFile.of("--weights", "runs/x", "train first with `python -m ebca_viz train`")
    assert str(e) == "--weights='runs/x'; fix: train first with `python -m ebca_viz train`"
    assert isinstance(e, FileNotFoundError)
    import torch

    e = InvalidType.of("mask", torch.zeros(2, 3), "pass a PIL image")
    assert str(e) == "mask=<Tensor shape=(2, 3) dtype=torch.float32>; fix: pass a PIL image"
    long = InvalidSetting.of("prompt", "x" * 500, "shorten it")
    assert len(str(long)) < 120 and str(long).endswith("...; fix: shorten it")


def test_cli_prints_one_error_line_for_a_package_error(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: evaluate: {str(tmp_path / 'nowhere')!r} is not a directory (give the --out of a sweep)\n"
    assert out.out == ""


def test_cli_keeps_the_traceback_of_anything_else(monkeypatch, capsys, tmp_path):
    agg = importlib.import_module("ebca_viz.eval.aggregate")

    def broken(out):
        return {}["no such key"]  # a bug: KeyError, not ebca_viz.errors.NotFound

    monkeypatch.setattr(agg, "aggregate", broken)
    with pytest.raises(KeyError, match="no such key"):
        main(["evaluate", str(tmp_path)])
    assert "error:" not in capsys.readouterr().err


def test_python_m_ebca_viz_exit_code_and_one_line(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "ebca_viz", "evaluate", str(tmp_path / "nowhere")], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: evaluate: {str(tmp_path / 'nowhere')!r} is not a directory "
                                     "(give the --out of a sweep)"]
