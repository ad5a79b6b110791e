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
    ("config", "version"),  # dataclass configs, the version string: no auralm imports at all
    ("audio", "text"),  # waveforms and features; tokens, templates, task formats
    ("model", "processor"),  # the nn.Modules; text + audio -> model inputs
    ("checkpoint", "data"),  # weight files <-> the model; manifests, datasets, collation (through the processor)
    ("infer", "train", "synth"),  # generation and the high-level API; training recipes; the synthetic world
    ("eval",),  # metrics, task runners: runs infer; train's torchrun setup and DPO objective; synth's labels
    ("serve",),  # the HTTP server over infer
    ("demo",),  # the embedded demo model: its recipe (train, eval, synth), its location, `auralm demo`
    ("cli", "bindings"),  # the `auralm` command; AudioLM's transformers-style entry points
    ("__init__", "__main__"),  # the public API (attaches the bindings, registers the demo model); `python -m auralm`
]
TIER = {name: i for i, names in enumerate(TIERS) for name in names}


def module_name(path: Path) -> str:
    parts = ("auralm",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(name: str) -> str:
    """The auralm module an imported dotted name loads: the longest prefix that is a module."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[tuple[str, int]]:
    """(imported auralm module, line) for every import statement of `module`, at any depth of its body."""
    path = MODULES[module]
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
                target = resolve(name)
                if target != module:
                    found.add((target, node.lineno))
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module: str) -> str:
    """The tier entry a module belongs to: its top-level package or root module under auralm/."""
    return module.split(".")[1] if "." in module else "__init__"


def test_every_module_has_a_tier():
    assert not sorted({layer(m) for m in MODULES} - set(TIER)), "add the new package to TIERS and ARCHITECTURE.md"


def test_no_module_imports_its_own_tier_or_above():
    breaches = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line}: {layer(m)} (tier {TIER[layer(m)]}) imports {target} "
        f"({layer(target)}, tier {TIER[layer(target)]})"
        for m, edges in GRAPH.items()
        for target, line in sorted(edges)
        if layer(target) != layer(m) and TIER[layer(target)] >= TIER[layer(m)]
    ]
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


def test_no_import_cycles():
    cycles = strongly_connected({m: {t for t, _ in edges} for m, edges in GRAPH.items()})
    assert not cycles, "modules that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def targets(module: str) -> set[str]:
    return {t for t, _ in GRAPH[module]}


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
