"""Imports flow one way: utils -> ops -> modules/objectives -> models -> (checkpoint, data) -> engine -> tasks ->
tools. The graph is built from the source (every ``import`` statement, also those inside functions: a lazy import
is still a dependency), so it cannot be fooled by import order at run time.

An edge is allowed when it goes to a lower layer or stays inside its own group; there must be no cycle between
files. The checker is tested on a planted package first, so a checker that sees nothing fails here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "import_graph", Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py")
_graph = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_graph)
PACKAGE, LAYERS, ALIASES = _graph.PACKAGE, _graph.LAYERS, _graph.ALIASES
modules_of, import_graph, layer_of, cycles, upward_edges = (_graph.modules_of, _graph.import_graph, _graph.layer_of,
                                                            _graph.cycles, _graph.upward_edges)


# ---------------------------------------------------------------------------------------------- the checker
def _planted(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "from . import low, high\n",
        "low/__init__.py": "",
        "low/a.py": "from .b import f\n",
        "low/b.py": "def f():\n    from . import a\n    from ..high import h\n",    # a cycle and an upward edge
        "high/__init__.py": "h = 1\n",
        "high/g.py": "import pkg.low.a  # downward: fine\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_checker_finds_a_planted_cycle_and_upward_edge(tmp_path):
    pkg = _planted(tmp_path)
    graph = import_graph(pkg)
    assert graph["pkg.low.a"] == {"pkg.low.b"}
    assert graph["pkg.low.b"] == {"pkg.low.a", "pkg.high"}       # imports inside a function count
    assert graph["pkg.high.g"] == {"pkg.low.a"}                   # `import pkg.low.a`
    assert graph["pkg"] == {"pkg.low", "pkg.high"}
    assert cycles(graph) == [["pkg.low.a", "pkg.low.b"]]
    layers = {"pkg.low": (0, "low"), "pkg.high": (1, "high"), "pkg": (2, "top")}
    assert upward_edges(graph, layers) == ["pkg.low.b (low) imports pkg.high (high)"]


def test_every_module_has_a_layer():
    unplaced = []
    for name in modules_of(PACKAGE):
        try:
            layer_of(name, {k: v for k, v in LAYERS.items() if k != "videomamba"})
        except KeyError:
            if name != "videomamba":
                unplaced.append(name)
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


def test_no_import_cycle_between_files():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_flow_down_the_layers():
    bad = upward_edges(import_graph(PACKAGE), LAYERS)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["videomamba.utils", "videomamba.ops", "videomamba.modules", "videomamba.models",
                                   "videomamba.checkpoint", "videomamba.data", "videomamba.objectives"])
def test_nothing_below_the_engine_reaches_it(layer):
    """Transitively: no module below the engine can reach ``videomamba.engine`` through any chain of imports."""
    graph = import_graph(PACKAGE)
    starts = [m for m in graph if m == layer or m.startswith(layer + ".")]
    seen, todo = set(starts), list(starts)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    reached = sorted(m for m in seen if m.startswith("videomamba.engine") or m.startswith("videomamba.tasks"))
    assert not reached, f"{layer} reaches {reached}"


def test_nothing_in_the_package_imports_an_old_alias():
    """The aliases kept for users (``engine.dist``, ``checkpoint.io``, ``engine.multiview``, ...) are not used
    inside the package: its own code imports what they name from its new home."""
    graph = import_graph(PACKAGE)
    users = sorted(f"{src} imports {dst}" for src, targets in graph.items() for dst in targets
                   if dst in ALIASES and not src.startswith("videomamba.pretrain"))
    assert set(ALIASES) <= set(graph), "an alias in the list does not exist"
    assert not users, "\n".join(users)


OLD_TO_NEW = {
    "videomamba.engine.dist": "videomamba.utils.dist",
    "videomamba.checkpoint.io": "videomamba.utils.checkpoint_io",
    "videomamba.engine.multiview": "videomamba.tasks.classification.multiview",
    "videomamba.engine.distill": "videomamba.tasks.classification.distill",
    "videomamba.engine.losses": "videomamba.tasks.classification.losses",
    "videomamba.engine.retrieval": "videomamba.tasks.video_text.metrics",
    "videomamba.engine.retrieval_eval": "videomamba.tasks.video_text.retrieval",
    "videomamba.engine.multi_loader": "videomamba.tasks.video_text.alternating_loader",
    "videomamba.pretrain": "videomamba.objectives",
    "videomamba.pretrain.masks": "videomamba.objectives.masks",
    "videomamba.pretrain.alignment": "videomamba.objectives.alignment",
    "videomamba.pretrain.contrastive": "videomamba.objectives.contrastive",
    "videomamba.pretrained": "videomamba.checkpoint.model_folder",
    "videomamba.models.pretrain": "videomamba.models.masked_student",
    "videomamba.predict": "videomamba.tools.predict",
    "videomamba.extract": "videomamba.tools.extract",
    "videomamba.search": "videomamba.tools.search",
    "videomamba.web_demo": "videomamba.tools.web_demo",
    "videomamba.cli": "videomamba.tools.cli",
    "videomamba.model_source": "videomamba.tools.model_source",
}


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_an_old_module_path_is_the_new_module(old):
    """Users' imports keep working, and monkeypatching either name patches the one module (no second copy)."""
    import importlib

    assert importlib.import_module(old) is importlib.import_module(OLD_TO_NEW[old])


def test_the_old_engine_classification_names_still_import():
    from videomamba.engine.classification import (autocast, batch_len, default_loss_fn, evaluate, set_lr,  # noqa: F401
                                                  to_device, train_one_epoch)
    from videomamba.tasks.classification import evaluate as moved

    assert evaluate is moved
