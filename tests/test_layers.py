"""The package's import graph has layers and no circles: a module imports only from its own layer or the
ones below (tas.codedeps.import_graph: every import that can run, function-level ones included)."""

from __future__ import annotations

from tas.codedeps import import_graph

# Low to high. A module belongs to the first entry that names it or a package above it; the package
# `tas` itself (the entry point's __init__) sits on top.
LAYERS = (
    # 0 foundation: constants, errors, files, plugin discovery: imports nothing of tas above it
    ("tas._torchvision_guard", "tas._deferred_dynamo", "tas.errors", "tas.paths", "tas.io", "tas.plugins",
     "tas.subcommands", "tas.validation", "tas.batching", "tas.yamlload", "tas.usercache",
     "tas.gcpause"),
    # 1 declarations: params.yaml as frozen specs, and what planning knows of each plugin (no torch)
    ("tas.data.spec", "tas.data.sources:package", "tas.distillers.registry", "tas.config", "tas.sanity",
     "tas.runs", "tas.settings", "tas.smoke:package", "tas.smoke.inputs"),
    # 2 the library: models, losses, data, methods, the trainer, the smoke study's input maker, describe's FLOP count
    ("tas.losses", "tas.models", "tas.data", "tas.distillers", "tas.engine", "tas.smoke", "tas.stepflops"),
    # 3 the plan: jobs, their code, the DAG for Snakemake and DVC
    ("tas.codedeps", "tas.matrix", "tas.dvcyaml", "tas.preflight"),
    # 4 what a subcommand runs
    ("tas.jobs", "tas.report", "tas.describe"),
    # 5 the entry points
    ("tas.bench", "tas.cli", "tas.sweep", "tas.__main__", "tas:package"),
)


def layer(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        for name in names:
            prefix, _, only_package = name.partition(":")
            if module == prefix or (not only_package and module.startswith(prefix + ".")):
                return rank
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it where it belongs")


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in import_graph().items() for d in sorted(deps) if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_circles():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles
