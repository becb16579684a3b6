"""CLI: bad paths and numbers give one line on stderr and exit code 2, before any sampling."""
import json

import pytest

from ebca_viz.cli import main


def _err(capsys):
    e = capsys.readouterr().err
    assert "Traceback" not in e
    return e


@pytest.fixture()
def a_file(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("not a folder")
    return f


def test_out_under_a_file(capsys, a_file):
    assert main(["multiconcept", "--model", "tiny", "--prompt", "a cat", "--steps", "1", "--out",
                 str(a_file / "sub")]) == 2
    assert "--out: cannot write to" in _err(capsys)
    assert main(["demo", "--model", "tiny", "--steps", "1", "--out", str(a_file / "sub")]) == 2
    assert "--out: cannot write to" in _err(capsys)


def test_image_that_is_not_an_image_or_a_directory(capsys, tmp_path, a_file):
    for bad, msg in ((a_file, "is not an image file"), (tmp_path, "is a directory")):
        assert main(["realedit", "--model", "tiny", "--image", str(bad), "--source-prompt", "a cat", "--edit", "dog",
                     "--steps", "1", "--out", str(tmp_path / "o")]) == 2
        assert msg in _err(capsys)


def test_bad_device_and_limit(capsys, tmp_path):
    assert main(["multiconcept", "--model", "tiny", "--prompt", "a cat", "--steps", "1", "--device", "cuda:99",
                 "--out", str(tmp_path)]) == 2
    assert "cuda:99" in _err(capsys)
    assert main(["sweep", "--model", "tiny", "--prompts", "animals", "--limit", "-1", "--seeds", "0",
                 "--out", str(tmp_path / "s")]) == 2
    assert "limit must be a positive number" in _err(capsys)


def test_evaluate_on_results_of_the_wrong_shape(capsys, tmp_path):
    d = tmp_path / "ebcu" / "animals"
    d.mkdir(parents=True)
    (d / "000_seed0.json").write_text(json.dumps({"job": {"prompt": "x"}}))
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a sweep result" in _err(capsys)
    (d / "000_seed0.json").write_text('{"job": ')
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not valid JSON" in _err(capsys)


def test_token_indices_on_padding_are_refused(tiny_pipe):
    from ebca_viz.tasks import multiconcept

    with pytest.raises(ValueError, match=r"token_indices \[40\] are not words of the prompt"):
        multiconcept(tiny_pipe, "a red circle", token_indices=[40], token_upweight=[2.0], num_inference_steps=1)
    with pytest.raises(ValueError, match="use 1..3"):
        multiconcept(tiny_pipe, "a red circle", token_indices=[0], token_upweight=[2.0], num_inference_steps=1)


def test_mask_that_is_not_an_image(capsys, tmp_path, a_file):
    assert main(["inpaint", "--model", "tiny-inpainting", "--prompt", "a cat", "--mask", str(a_file), "--steps", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--mask" in _err(capsys)
