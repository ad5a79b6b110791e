"""Imports flow one way (ARCHITECTURE.md, "Layers"): a module imports only its own package and the tiers below.

Pure AST over auralm/**/*.py: neither torch nor auralm is imported, so this runs in a fraction of a second.
Module-level and function-local imports count alike; `if TYPE_CHECKING:` imports count too (they name the same
dependency). Imports by string (`importlib.import_module`, the CLI's subsystem table) are not seen; only the
top tier uses them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "auralm"

# Bottom to top. A package (or root module) may import its own modules and any tier below its own; packages that
# share a tier are independent of each other. `__init__` is the package root `auralm/__init__.py`.
TIERS: list[tuple[str, ...]] = [
    ("config", "version", "terminal", "cpu"),  # configs, the version string, the bar's terminal, CPU features: no
    # auralm imports
    ("audio", "text"),  # waveforms and features; tokens, templates, task formats
    ("model", "processor"),  # the nn.Modules; text + audio -> model inputs
    ("checkpoint", "data"),  # weight files <-> the model; manifests, datasets, collation (through the processor)
    ("infer", "train", "synth"),  # generation and the high-level API; training recipes; the synthetic world
    ("eval",),  # metrics, task runners: runs infer; train's torchrun setup and DPO objective; synth's labels
    ("serve",),  # the HTTP server over infer
    ("demo",),  # the embedded demo model: its recipe (train, eval, synth), its location, `auralm demo`
    ("cli", "bindings"),  # the `auralm` command; AudioLM's transformers-style entry points
    ("__init__", "__main__"),  # the public API (AudioLM from the bindings; registers the demo model); `python -m auralm`
]
TIER = {name: i for i, names in enumerate(TIERS) for name in names}


def find_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package at `root` (a folder named auralm)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("auralm",) + path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = find_modules(ROOT)


def resolve(name: str, modules: dict[str, Path] = MODULES) -> str:
    """The auralm module an imported dotted name loads: the longest prefix that is a module."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, modules: dict[str, Path] = MODULES) -> set[tuple[str, int]]:
    """(imported auralm module, line) for every import statement of `module`, at any depth of its body."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y`
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` loads the submodule pkg.sub when there is one, else names from pkg itself.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "auralm" or name.startswith("auralm."):
                target = resolve(name, modules)
                if target != module:
                    found.add((target, node.lineno))
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[tuple[str, int]]]:
    return {m: imports_of(m, modules) for m in modules}


GRAPH = import_graph(MODULES)


def layer(module: str) -> str:
    """The tier entry a module belongs to: its top-level package or root module under auralm/."""
    return module.split(".")[1] if "." in module else "__init__"


def test_every_module_has_a_tier():
    assert not sorted({layer(m) for m in MODULES} - set(TIER)), "add the new package to TIERS and ARCHITECTURE.md"


def upward_imports(graph: dict[str, set[tuple[str, int]]], modules: dict[str, Path]) -> list[str]:
    """One line per import of a package in the importer's own tier or above (its own package excepted)."""
    return [
        f"{modules[m].relative_to(modules['auralm'].parent.parent)}:{line}: {layer(m)} (tier {TIER[layer(m)]}) "
        f"imports {target} ({layer(target)}, tier {TIER[layer(target)]})"
        for m, edges in graph.items()
        for target, line in sorted(edges)
        if layer(target) != layer(m) and TIER[layer(target)] >= TIER[layer(m)]
    ]


def test_no_module_imports_its_own_tier_or_above():
    breaches = upward_imports(GRAPH, MODULES)
    assert not breaches, "imports that run up or sideways:\n" + "\n".join(breaches)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root, children in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(children)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def import_cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    return strongly_connected({m: {t for t, _ in edges} for m, edges in graph.items()})


def test_no_import_cycles():
    cycles = import_cycles(GRAPH)
    assert not cycles, "modules that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def targets(module: str, graph: dict[str, set[tuple[str, int]]] = GRAPH) -> set[str]:
    return {t for t, _ in graph[module]}


def test_the_checker_sees_what_it_must():
    """The graph itself: module-level, function-local and `from package import submodule` imports all resolve."""
    assert "auralm.model.kv_cache" in targets("auralm.infer.engine")
    assert "auralm.infer.compiled" in targets("auralm.infer.api")  # imported inside load()
    assert {"auralm.synth.derived", "auralm.synth.stats"} <= targets("auralm.synth.world")
    assert "auralm.synth" not in targets("auralm.synth.world")  # the submodules, not the package's __init__
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
    assert resolve("auralm.audio.SAMPLE_RATE") == "auralm.audio"
    assert layer("auralm") == "__init__" and layer("auralm.cli") == "cli" and layer("auralm.infer.api") == "infer"


def write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """A synthetic auralm/ under `root` (relative path -> source) and its modules."""
    for rel, source in files.items():
        (root / "auralm" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "auralm" / rel).write_text(source)
    return find_modules(root / "auralm")


CLEAN = {
    "__init__.py": "from auralm.infer.generate import generate\n",
    "model/__init__.py": "",
    "model/layers.py": "import torch\n",
    "model/audiolm.py": "from .layers import attention\n",
    "infer/__init__.py": "",
    "infer/generate.py": "from auralm.model import audiolm\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path):
    modules = write_package(tmp_path, CLEAN)
    graph = import_graph(modules)
    assert targets("auralm.model.audiolm", graph) == {"auralm.model.layers"}  # relative import resolved
    assert upward_imports(graph, modules) == [] and import_cycles(graph) == []


def test_the_checker_fails_on_a_back_edge_and_a_cycle(tmp_path):
    # The model reaching up into infer/ from inside a function (the lazy import that hides a layering breach),
    # which also closes the loop infer.generate -> model.audiolm -> infer.generate.
    back_edge = "\n\ndef generate(model):\n    from auralm.infer.generate import generate\n"
    modules = write_package(tmp_path, {**CLEAN, "model/audiolm.py": CLEAN["model/audiolm.py"] + back_edge})
    graph = import_graph(modules)
    assert upward_imports(graph, modules) == [
        "auralm/model/audiolm.py:5: model (tier 2) imports auralm.infer.generate (infer, tier 4)"
    ]
    assert import_cycles(graph) == [["auralm.infer.generate", "auralm.model.audiolm"]]


def test_the_checker_sees_type_checking_and_sideways_imports_and_cycles_within_a_package(tmp_path):
    files = {
        **CLEAN,
        "train/__init__.py": "",
        "train/loop.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import auralm.infer.generate as g\n",
        "model/layers.py": "from auralm.model.audiolm import AudioLM\n",  # layers <-> audiolm: same package
    }
    modules = write_package(tmp_path, files)
    graph = import_graph(modules)
    assert upward_imports(graph, modules) == [
        "auralm/train/loop.py:3: train (tier 4) imports auralm.infer.generate (infer, tier 4)"
    ]
    assert import_cycles(graph) == [["auralm.model.audiolm", "auralm.model.layers"]]

