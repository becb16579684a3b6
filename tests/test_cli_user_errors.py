"""The CLI prints one line only for the package's own validation errors; anything else keeps its traceback."""
import pytest

from ebca_viz.cli import main
from ebca_viz.errors import EbcaVizError, EbcaVizTypeError, is_user_error


def _raise_in_diffusers():
    from diffusers import DDIMScheduler

    DDIMScheduler().set_timesteps(5000)  # diffusers' own ValueError (more steps than trained)


def test_is_user_error_is_the_package_vocabulary():
    from ebca_viz.config import EBCAConfig

    with pytest.raises(ValueError) as ours:
        EBCAConfig(gamma_attn=-1).validate()
    assert is_user_error(ours.value)
    with pytest.raises(ValueError) as theirs:
        _raise_in_diffusers()
    assert not is_user_error(theirs.value)
    with pytest.raises(ValueError) as op:
        from ebca_viz.models.hub import check_dtype
        check_dtype(7.5j)  # raised by the package, explicitly
    assert is_user_error(op.value)
    assert is_user_error(EbcaVizError("x")) and isinstance(EbcaVizTypeError("x"), TypeError)
    assert not is_user_error(KeyError("x")) and not is_user_error(ValueError("raised outside the package"))


def test_internal_valueerror_keeps_its_traceback(monkeypatch, capsys):
    import importlib

    mc = importlib.import_module("ebca_viz.tasks.multiconcept")  # the module (the package exports a function of that name)
    monkeypatch.setattr(mc, "multiconcept", lambda pipe, **kw: _raise_in_diffusers())
    with pytest.raises(ValueError, match="cannot be larger than"):  # propagates: Python prints the traceback
        main(["multiconcept", "--model", "tiny", "--prompt", "a cat", "--steps", "1", "--no-progress"])
    assert "error:" not in capsys.readouterr().err


def test_validation_error_is_one_line(capsys, tmp_path):
    assert main(["multiconcept", "--model", "tiny", "--prompt", "a red circle", "--token", "circle", "--token-indices",
                 "3", "--token-upweight", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --token and --token-indices both name the up-weighted tokens: give one of them"
    assert main(["multiconcept", "--model", "tiny", "--prompt", "a red circle", "--token", "square",
                 "--token-upweight", "2", "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'square' is not a word of the prompt" in err.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())  # refused before sampling: nothing written
