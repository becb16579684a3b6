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


def test_readme_is_for_users_and_short():
    """Issue 22: the README stays a user's page (at most 200 lines); the developer's layout lives in CONTRIBUTING.md."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, f"README.md has {len(text.splitlines())} lines; move details to docs/"
    assert "CONTRIBUTING.md" in text and "## Layout" not in text


def test_contributing_paths_exist():
    """Every file or glob CONTRIBUTING.md's tables name exists, so a newcomer is never sent to a stale path."""
    import glob
    import re

    text = (ROOT / "CONTRIBUTING.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    paths = {p for line in rows for p in re.findall(r"`((?:ebca_viz|tests|docs|benchmarks)/[^`]+)`", line)}
    assert len(paths) >= 10
    for p in sorted(paths):
        pattern = p.replace("<quantity>", "*")
        if not pattern.startswith(("ebca_viz/", "tests/", "docs/", "benchmarks/")) or "/" not in pattern:
            continue
        assert glob.glob(str(ROOT / pattern)), f"CONTRIBUTING.md names {p}, which does not exist"


def test_the_documented_data_path_is_true():
    """docs/architecture.md's "Following one number" table: six files, and each does what its row says."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text[text.index("## Following one number"):]
    block = block[: block.index("\n## ", 10)] if "\n## " in block[10:] else block
    files = re.findall(r"^\| \d \| `([^`]+)` \|", block, flags=re.M)
    assert len(files) <= 6, f"the path crosses {len(files)} files (issue 22: at most 6)"
    must = {"ebca.py": "class EnergyCrossAttnProcessor", "denoiser_hook.py": "class CrossAttnEvent",
            "tracing/recorder.py": "layer_energies(", "energy.py": "def layer_energies",
            "tracing/trace_data.py": "def energies(", "plots/energy.py": "def plot_trace_energies"}
    assert set(files) == set(must), files
    for f, needle in must.items():
        assert needle in (ROOT / "ebca_viz" / f).read_text(), f"{f} no longer has {needle!r}: update the table"
