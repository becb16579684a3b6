"""The package's layers (docs/architecture.md): every module imports only from its own layer or
below, at module level or inside functions. Reads the sources (ast), runs nothing: ~0.1 s."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ebca_viz"

# lowest first; a module may import from its layer and the ones before it
LAYERS = [
    {"energy", "schedule", "claims", "data", "errors", "hints", "util"},  # errors: the error vocabulary; hints: type aliases; util: fast mode, device
    {"config"},
    {"attach", "attn_io", "guards", "adapters"},  # adapters: one per denoiser family
    {"tokens", "denoiser_hook"},  # tokens: readable token labels; denoiser_hook: the one hook per call, its events
    {"ebca", "seg", "seg_dit"},  # seg_dit: SEG on diffusion transformers
    {"tracing"},
    {"plots"},
    {"models"},
    {"shapes", "sampling"},  # sampling: the one sample-and-score (seeded latents, a method, detector verdicts)
    {"tasks"},
    {"eval"},
    {"experiments", "energy_steps", "tour"},  # energy_steps samples pipelines (record_updates, sweep_step_size); tour: the demo-seed rule
    {"notebook"},
    {"demo", "gallery", "widgets"},
    {"cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else path.stem


def _imported(path: Path):
    """Top-level ebca_viz modules imported by ``path`` (relative and absolute imports, at module level
    or inside functions: nothing is exempt)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PKG).parts) - 1  # 0 for ebca_viz/x.py
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1  # levels above the file's own package
                if up < depth:  # inside the same subpackage
                    continue
                if node.module:
                    yield node.module.split(".")[0], node.lineno
                else:
                    for a in node.names:
                        yield a.name, node.lineno
            elif node.module and node.module.startswith("ebca_viz."):
                yield node.module.split(".")[1], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ebca_viz."):
                    yield a.name.split(".")[1], node.lineno


def test_every_module_has_a_layer():
    tops = {_top(p) for p in PKG.rglob("*.py")}
    assert tops <= set(RANK), f"modules without a layer in this test (add them): {sorted(tops - set(RANK))}"


def test_no_module_imports_upward():
    bad = []
    for p in sorted(PKG.rglob("*.py")):
        me = _top(p)
        for mod, line in _imported(p):
            if mod in RANK and mod != me and RANK[mod] > RANK[me]:
                bad.append(f"{p.relative_to(PKG.parent)}:{line} ({me}) imports {mod}")
    assert not bad, "imports against the layering of docs/architecture.md:\n" + "\n".join(bad)


def test_no_module_level_getattr():
    """No module answers for names it does not define (``def __getattr__`` at module level): every
    name has one home and is imported from there."""
    bad = [str(p.relative_to(PKG.parent)) for p in sorted(PKG.rglob("*.py"))
           if any(isinstance(f, ast.FunctionDef) and f.name == "__getattr__" for f in ast.parse(p.read_text()).body)]
    assert not bad, f"module-level __getattr__ routes (import the names explicitly instead): {bad}"


def test_every_module_imports():
    """Every module of the package imports (a missing name in a re-export fails here, not in a notebook)."""
    import importlib

    names = sorted({".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
                    for p in PKG.rglob("*.py") if p.stem != "__main__"})
    failed = []
    for n in names:
        try:
            importlib.import_module(n)
        except Exception as e:  # noqa: BLE001 -- report every module that fails, with its error
            failed.append(f"{n}: {type(e).__name__}: {e}")
    assert not failed, "\n".join(failed)
