"""The package's import graph (docs/architecture.md): no circle, no module importing another's
underscore names, and the run layer's rooms importing only the rooms below them.

``python tests/test_architecture.py`` prints the graph's layers (the listing in
docs/architecture.md)."""

import ast
import pathlib

PACKAGE = "pyro_sparsegen"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE

# the run layer, bottom to top (DESIGN.md §3): each room may import only the package modules
# listed for it (besides the math / model / inference rooms below the run layer)
BELOW_THE_RUN_LAYER = {"version", "errors", "distributions", "schedules", "networks", "model",
                       "config", "infer", "data"}
RUN_LAYER = {
    "runtime": set(),
    "files": set(),
    "metrics": set(),
    "checkpoint": {"files", "runtime"},
    "builders": {"checkpoint", "runtime"},
    "abp": {"runtime"},
    "encoding": {"abp", "builders", "files", "metrics"},
    "monitor": {"abp", "checkpoint", "encoding", "files", "metrics"},
    "loop": {"abp", "builders", "checkpoint", "files", "monitor", "runtime"},
    "figures": {"encoding", "metrics", "plots"},
    "training": {"abp", "builders", "encoding", "figures", "loop", "metrics"},
}


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    """``{module name: path}`` of every module of the package."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name, path, known):
    """``[(imported module, imported names)]`` of every import of the package in ``path`` (at
    any depth: a lazy import inside a function is an import too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == PACKAGE:
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            out += [(m, []) for m in submodules]
            rest = [n for n in names if f"{target}.{n}" not in known]
            if rest or not submodules:
                out.append((target, rest))
    return out


def graph():
    """``{module: {modules it imports}}`` (a module never depends on itself through its own
    package's ``__init__``: Python imports the parents first, which is not a dependency)."""
    known = modules()
    return {name: {m for m, _ in imports(name, path, known) if m != name and m in known}
            for name, path in known.items()}


def find_cycle(edges):
    """One circle of ``edges`` as a list of modules, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layers(edges):
    """The modules by layer: layer 0 imports nothing of the package, layer n only layers
    below n (needs a graph without a circle)."""
    level = {}

    def depth(node):
        if node not in level:
            level[node] = 1 + max((depth(m) for m in edges[node]), default=-1)
        return level[node]

    for node in edges:
        depth(node)
    out = {}
    for node, n in level.items():
        out.setdefault(n, []).append(node)
    return [sorted(out[n]) for n in sorted(out)]


def short(name):
    return name[len(PACKAGE) + 1:] if name != PACKAGE else PACKAGE


def test_the_import_graph_has_no_circle():
    assert find_cycle(graph()) is None


def test_no_module_imports_another_modules_underscore_names():
    known = modules()
    reach_ins = [(short(name), short(target), n)
                 for name, path in known.items()
                 for target, names in imports(name, path, known) if target != name
                 for n in names if n.startswith("_") and not n.startswith("__")]
    assert reach_ins == []


def test_the_run_layer_imports_only_the_rooms_below_it():
    edges = graph()
    wrong = {}
    for room, allowed in RUN_LAYER.items():
        used = {short(m).split(".")[0] for m in edges[f"{PACKAGE}.{room}"]}
        extra = used - allowed - BELOW_THE_RUN_LAYER
        if extra:
            wrong[room] = sorted(extra)
    assert wrong == {}


def test_importing_the_package_leaves_the_plotting_stack_for_later():
    # every command starts by importing the package: ArviZ, xarray, SciPy and matplotlib
    # (about 2 s) are imported when a function first uses them (runtime.LazyModule)
    import subprocess
    import sys

    code = ("import sys, pyro_sparsegen, pyro_sparsegen.cli; print(sorted(m for m in "
            "('arviz', 'xarray', 'scipy', 'matplotlib', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


if __name__ == "__main__":
    edges = graph()
    cycle = find_cycle(edges)
    if cycle:
        raise SystemExit("circle: " + " -> ".join(map(short, cycle)))
    for n, names in enumerate(layers(edges)):
        print(f"layer {n}: {', '.join(map(short, names))}")
