"""The package's module graph, read from the sources (ast; nothing is imported, ~0.2 s): no import
cycle between modules (imports inside functions count: a lazy import hides a cycle, it does not break
it), and no module over 600 lines (the panel package ``ebca_viz/widgets`` is its own issue's)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ebca_viz"
MAX_LINES = 600
SIZE_EXEMPT = ("widgets",)  # the panel issue owns it


def _name(path: Path) -> str:
    """``ebca_viz/tracing/files.py`` -> ``ebca_viz.tracing.files``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _package(mod: str) -> str:
    p = MODULES[mod]
    return mod if p.name == "__init__.py" else mod.rsplit(".", 1)[0]


def _resolve(target: str) -> str:
    """The module a dotted import target names (the longest prefix that is a module of the package)."""
    while target and target not in MODULES:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target


def imports(mod: str) -> dict:
    """``{imported ebca_viz module: first line}`` of every import in ``mod``, at any depth."""
    out = {}
    for node in ast.walk(ast.parse(MODULES[mod].read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(mod)
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
            else:
                base = ""
            head = ".".join(x for x in (base, node.module or "") if x)
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            targets = [f"{head}.{a.name}" if f"{head}.{a.name}" in MODULES else head for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            r = _resolve(t) if t.startswith("ebca_viz") else ""
            if r and r != mod:
                out.setdefault(r, node.lineno)
    return out


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _graph() -> dict:
    return {m: set(imports(m)) for m in MODULES}


def test_the_graph_reader_sees_imports():
    """The reader is not blind: it finds known edges, lazy (inside a function) ones included."""
    assert "ebca_viz.energy" in imports("ebca_viz.ebca")
    assert "ebca_viz.plots.base" in imports("ebca_viz.plots.maps")
    assert "ebca_viz.tracing.files" in imports("ebca_viz.tracing.trace_data")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    detail = []
    for comp in cycles:
        for m in comp:
            for t, line in sorted(imports(m).items()):
                if t in comp:
                    detail.append(f"  {MODULES[m].relative_to(PKG.parent)}:{line} imports {t}")
    assert not cycles, "import cycles (break them: move the shared piece down, or pass it in):\n" + "\n".join(detail)


def test_no_module_over_600_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in MODULES.values()
            if p.relative_to(PKG).parts[0] not in SIZE_EXEMPT and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"
