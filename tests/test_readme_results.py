"""The README's result lines are the shipped comparison files' numbers (python -m ebca_viz.experiments.neglect --readme)."""
from pathlib import Path

from ebca_viz.experiments import neglect

ROOT = Path(__file__).resolve().parents[1]


def test_readme_result_lines_are_the_shipped_reports():
    text = (ROOT / "README.md").read_text()
    a, b = text.index(neglect.README_BEGIN) + len(neglect.README_BEGIN), text.index(neglect.README_END)
    reports = {w: neglect.load_comparison(w) for w in ("neglect-world", "shapes-world")}  # digests checked
    assert text[a:b].strip() == neglect.readme_lines(reports), \
        "README's result lines are stale: python -m ebca_viz.experiments.neglect --readme"
