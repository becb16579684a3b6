"""Notebooks 01 and 02 on a user's model: EBCA_VIZ_MODEL set to a folder (the scaled SD 1.5 layout with
the real CLIP tokenizer, saved as a checkpoint folder whose name says nothing), fast mode."""
import os
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("nb", ["01_energy_descent.ipynb", "02_ebcu_multiconcept.ipynb"])
def test_notebook_runs_on_a_folder(nb, layout_folders, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    folder = layout_folders["sd15"]
    monkeypatch.setenv("EBCA_VIZ_MODEL", str(folder))
    monkeypatch.setenv("EBCA_VIZ_FAST", "1")
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    book = nbformat.read(NB / nb, as_version=4)
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NB)}}).execute()
    text = "\n".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"model {str(folder)!r}: sd" in text  # the folder was loaded and recognised as SD from the pipeline
    if nb.startswith("02"):
        assert "| up-weighted: [5]" in text  # "shirt" resolved with the folder's real CLIP tokenizer
        assert "trace: every 1 step(s)" in text
