"""The package's errors are one vocabulary (ebca_viz/errors.py): every ``raise`` in ebca_viz uses it, each
class is also the builtin it replaced, messages built with ``.of()`` name the parameter, the value and the
fix, and the command line prints them as one ``error:`` line (a traceback for anything else)."""
import ast
import importlib
import os
import re
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
        if isinstance(target, ast.Attribute) and target.attr == "of":  # raise InvalidSetting.of(param, value, fix)
            target = target.value
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


# --- every message names a fix (issue 22 item 3) ---------------------------------------------------------------

FIX_WORDS = re.compile(
    r"\b(fix|use|using|pass|passing|set|choose|pick|install|run|re-?run|convert|remove|drop|add|must|expected|expects|"
    r"one of|between|at least|at most|instead|give|call|try|should|needs?|required|requires?|lower|increase|decrease|"
    r"reduce|make|rename|delete|train|download|create|leave|type|resize|paint|shorten|change|write|provide|supply|"
    r"select|omit|valid|allowed|accepts?|takes?|clear|switch|produce)\b|e\.g\.|known:", re.I)
"""Wording that tells the reader what to do (or what is accepted)."""

# the files whose messages were rewritten to name a fix: the whole package
FIXED_FILES = ["*.py", "adapters/*.py", "data/*.py", "eval/*.py", "experiments/*.py", "models/*.py", "plots/*.py",
               "shapes/*.py", "tasks/*.py", "widgets/*.py", "tracing/*.py"]
NOT_YET_DIRS: tuple = ()
NOT_YET: set = set()


def _message_text(node):
    """The literal text of a message expression (f-string constants, ``+`` joins, ``a if c else b``), or None when
    part of it is computed elsewhere (a variable, a call): such a message cannot be judged here."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return " ".join(v.value for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, (ast.BinOp, ast.IfExp)) and not (isinstance(node, ast.BinOp) and not isinstance(node.op, ast.Add)):
        parts = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.body, node.orelse)
        texts = [_message_text(p) for p in parts]
        return None if None in texts else " ".join(texts)
    return None


def messages_without_a_fix(path: Path) -> list:
    """``(line, text)`` of each ``raise X("...")`` of ``path`` whose literal message has no fix-like wording.
    ``X.of(param, value, fix)`` always names a fix; lines marked ``# internal invariant`` are not user errors."""
    src = path.read_text()
    lines = src.splitlines()
    out = []
    for node in ast.walk(ast.parse(src)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
            continue
        if MARK in lines[node.lineno - 1] or (isinstance(node.exc.func, ast.Attribute) and node.exc.func.attr == "of"):
            continue
        text = _message_text(node.exc.args[0])
        if text is not None and not FIX_WORDS.search(text):
            out.append((node.lineno, text))
    return sorted(out)


def _fixed_files():
    files = sorted({p for pat in FIXED_FILES for p in PKG.glob(pat)})
    return [p for p in files if p.relative_to(PKG).as_posix() not in NOT_YET]


def test_every_message_of_the_rewritten_files_names_a_fix():
    files = _fixed_files()
    assert len(files) > 80  # the globs found the files
    covered = {p.relative_to(PKG).as_posix() for p in files} | NOT_YET
    left = sorted(r for r in (p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py"))
                  if r not in covered and not r.startswith(NOT_YET_DIRS))
    assert not left, f"files outside FIXED_FILES (add their folder): {left}"
    bad = [f"{p.relative_to(ROOT)}:{n}: {t[:100]!r}" for p in files for n, t in messages_without_a_fix(p)]
    assert not bad, "say what to do (e.g. `InvalidSetting.of(param, value, fix)`):\n" + "\n".join(bad)


def test_the_fix_scan_catches_a_message_without_a_fix(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f(x, n):\n"
                 "    if x:\n        raise InvalidSetting(f'mean of {n} values')\n"
                 "    if n:\n        raise InvalidSetting('n: ' + 'too big; pass n <= 3')\n"
                 "    if n > 1:\n        raise InvalidSetting.of('n', n, 'pass 1')\n"
                 "    raise InvalidSetting(msg)\n")
    assert messages_without_a_fix(f) == [(3, "mean of   values")]


def test_claims_mean_of_nothing_names_values_and_fix():
    from ebca_viz import claims

    with pytest.raises(InvalidSetting) as e:
        claims.mean([])
    assert str(e.value).startswith("values=<ndarray shape=(0,)") and "fix: pass at least one measured value" in str(e.value)
    with pytest.raises(InvalidSetting, match=r"values=.*1 of 3 values are not finite; fix: remove the NaN/inf"):
        claims.mean([1.0, float("nan"), 2.0])
    with pytest.raises(InvalidSetting, match=r"^b=.*a has 2, b has 3; fix: pass a and b with one value per seed"):
        claims.paired_diff([1.0, 2.0], [1.0, 2.0, 3.0])


def test_step_filter_names_the_entry_and_fix():
    from ebca_viz.tracing.filters import StepFilter

    with pytest.raises(InvalidType, match=r"^steps=True: a bool is not a step index; fix: pass int step indices"):
        StepFilter([0, True])
    with pytest.raises(InvalidSetting, match=r"^steps=\(0\.1,\): a window is a pair .*fix: pass a window as two numbers"):
        StepFilter([(0.1,)])
    with pytest.raises(InvalidType, match=r"^steps='x': not a step selection; fix: pass ints, a range"):
        StepFilter(["x"])


def test_resume_without_saved_state_names_the_folder_and_fix(tmp_path):
    from ebca_viz.shapes.train import load_state, resume_vae

    for call in (lambda: resume_vae(None, tmp_path, print),
                 lambda: load_state(tmp_path, None, None, None, None, None, None, None)):
        with pytest.raises(MissingFile) as e:
            call()
        assert str(e.value) == (f"--resume={str(tmp_path)!r}: no saved state here (written at each checkpoint); "
                                "fix: drop --resume to start a new run, or give the --out of a run that reached a checkpoint")


def test_sweep_and_cli_parsers_name_value_and_fix():
    from ebca_viz.eval.sweep import parse_seeds, parse_setting
    from ebca_viz.tasks.cli import _direction

    with pytest.raises(InvalidSetting, match=r"seeds: range '5-3' is empty \(end before start\); fix: write it as '3-5'"):
        parse_seeds("5-3")
    with pytest.raises(InvalidSetting, match=r"setting 'ebcu:gamma_attn': 'gamma_attn' is not key=value; fix: write e\.g\."):
        parse_setting("ebcu:gamma_attn")
    with pytest.raises(InvalidSetting, match=r"^--direction='up': not a direction; fix: pass \+ \(conjunction\) or -"):
        _direction("up")


def test_layer_grid_names_num_pixels_and_latent_hw():
    from ebca_viz.attach import grid_hw

    assert grid_hw(37, (37, 1)) == (37, 1)
    with pytest.raises(InvalidSetting) as e:
        grid_hw(37, None)
    assert str(e.value) == ("num_pixels=37: not a square number and latent_hw does not give the layer's grid; "
                            "fix: pass latent_hw, the latent's (H, W), so the layer grid can be found")


def test_verdict_agreement_names_live_and_fix():
    from ebca_viz.experiments.shipped import verdict_agreement

    assert verdict_agreement([True, False], [True, True]).k == 1
    with pytest.raises(InvalidSetting) as e:
        verdict_agreement([True], [])
    assert str(e.value) == ("live=[]: verdict_agreement: no live verdicts; "
                            "fix: pass the verdicts of at least one live run")
    with pytest.raises(InvalidSetting, match=r"3 live verdicts but only 1 shipped; fix: pass at most 1 live verdicts"):
        verdict_agreement([True], [True, True, False])


def test_unknown_world_names_the_value_and_fix():
    from ebca_viz.models.worlds import world_folder

    with pytest.raises(InvalidSetting, match=r"^unknown world 'no-such-world'; fix: pass one of the worlds that ship"):
        world_folder("no-such-world")


def test_negation_choice_and_tour_rule_name_the_parameter_and_fix():
    from ebca_viz.energy_steps import largest_descending_gamma
    from ebca_viz.experiments.ebcq import choose_negation

    with pytest.raises(InvalidSetting, match=r"^rows=\[\]: choose_negation: no rows; fix: pass the rows of a negation"):
        choose_negation([])
    with pytest.raises(InvalidSetting, match=r"^gammas \(2\) and rates \(1\) differ in length; fix: pass one rate per gamma"):
        largest_descending_gamma([0.1, 0.2], [None])
