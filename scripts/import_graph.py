"""The import graph of the ``videomamba`` package, built from the source, and its layer order.

    python scripts/import_graph.py                      # cycles, edges against the layer order, a layer table
    python scripts/import_graph.py --png layers.png     # the picture of the layers and the edges between them
    python scripts/import_graph.py --package /tmp/old/videomamba   # another checkout (e.g. before a change)

Every ``import`` statement counts, also those inside functions: a lazy import is still a dependency.
``tests/test_import_graph.py`` fails on a cycle or an edge against :data:`LAYERS`.
"""
from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "videomamba"

# module (or package prefix) -> (rank, group). Longest prefix wins. Siblings of one rank (checkpoint and data;
# modules and objectives) are different groups: neither may import the other.
LAYERS = {
    "videomamba.utils": (0, "utils"),
    "videomamba.ops": (1, "ops"),
    "videomamba.modules": (2, "modules"),
    "videomamba.objectives": (2, "objectives"),
    "videomamba.pretrain": (2, "objectives"),          # the old name of objectives (an alias)
    "videomamba.models": (3, "models"),
    "videomamba.checkpoint": (4, "checkpoint"),
    "videomamba.factory": (4, "checkpoint"),           # create_model: builds a model and loads its weights
    "videomamba.pretrained": (4, "checkpoint"),        # the old name of checkpoint.model_folder (an alias)
    "videomamba.data": (4, "data"),
    "videomamba.engine": (5, "engine"),
    "videomamba.tasks": (6, "tasks"),
    # Old paths kept as aliases of what moved: each is placed in the layer of what it now names, and nothing in
    # the package imports them (they exist for users' imports only).
    "videomamba.engine.dist": (0, "utils"),
    "videomamba.checkpoint.io": (0, "utils"),
    "videomamba.engine.classification": (6, "tasks"),
    "videomamba.engine.multiview": (6, "tasks"),
    "videomamba.engine.distill": (6, "tasks"),
    "videomamba.engine.losses": (6, "tasks"),
    "videomamba.engine.retrieval": (6, "tasks"),
    "videomamba.engine.retrieval_eval": (6, "tasks"),
    "videomamba.engine.multi_loader": (6, "tasks"),
    "videomamba.tools": (7, "tools"),
    "videomamba.bench": (7, "tools"),
    "videomamba.flops": (7, "tools"),
    "videomamba.predict": (7, "tools"),
    "videomamba.extract": (7, "tools"),
    "videomamba.search": (7, "tools"),
    "videomamba.web_demo": (7, "tools"),
    "videomamba.cli": (7, "tools"),
    "videomamba.model_source": (7, "tools"),
    "videomamba": (8, "top"),                          # the package's public names
}


def modules_of(package: Path) -> dict[str, tuple[Path, bool]]:
    """dotted name -> (file, is_package) for every .py file under ``package``."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (``from . import x`` counts as an edge to ``x`` when
    ``x`` is a module, else to the package it names)."""
    mods = modules_of(package)
    root = package.name
    graph = {}
    for name, (path, is_pkg) in mods.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target != root and not target.startswith(root + "."):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    if target != root and not target.startswith(root + "."):
                        continue
                    while target not in mods and "." in target:
                        target = target.rsplit(".", 1)[0]
                    edges.add(target)
        edges.discard(name)
        graph[name] = {e for e in edges if e in mods}
    return graph


def layer_of(module: str, layers: dict) -> tuple[int, str]:
    for prefix in sorted(layers, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return layers[prefix]
    raise KeyError(module)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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


def upward_edges(graph: dict[str, set[str]], layers: dict) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        rank, group = layer_of(src, layers)
        for dst in sorted(targets):
            dst_rank, dst_group = layer_of(dst, layers)
            if dst_group != group and dst_rank >= rank:
                bad.append(f"{src} ({group}) imports {dst} ({dst_group})")
    return bad


# Old module paths that are now aliases of the module that took their place.
ALIASES = ["videomamba.engine.dist", "videomamba.checkpoint.io", "videomamba.engine.classification",
           "videomamba.engine.multiview", "videomamba.engine.distill", "videomamba.engine.losses",
           "videomamba.engine.retrieval", "videomamba.engine.retrieval_eval", "videomamba.engine.multi_loader",
           "videomamba.pretrain", "videomamba.pretrained", "videomamba.predict", "videomamba.extract",
           "videomamba.search", "videomamba.web_demo", "videomamba.cli", "videomamba.model_source",
           "videomamba.models.pretrain"]



def layer_edges(graph: dict[str, set[str]], layers: dict) -> Counter:
    """(source group, target group) -> number of module-to-module imports, across groups only."""
    count = Counter()
    for src, targets in graph.items():
        for dst in targets:
            a, b = _group(src, layers), _group(dst, layers)
            if a != b:
                count[a, b] += 1
    return count


def _group(module: str, layers: dict) -> str:
    try:
        return layer_of(module, layers)[1]
    except KeyError:
        return "unplaced"


def plot(graph: dict[str, set[str]], layers: dict, path: Path, title: str):
    """Boxes for the groups, bottom (utils) to top (the package), arrows for imports between groups: grey when
    they go down, red when they go against the order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks: dict[int, list[str]] = {}
    for rank, group in sorted(set(layers.values())):
        ranks.setdefault(rank, [])
        if group not in ranks[rank]:
            ranks[rank].append(group)
    pos = {}
    for rank, groups in ranks.items():
        for i, g in enumerate(groups):
            pos[g] = ((i + 0.5) / len(groups) * 6.0, rank * 1.2)
    fig, ax = plt.subplots(figsize=(8, 10))
    edges = layer_edges(graph, layers)
    rank_of = {g: r for r, gs in ranks.items() for g in gs}
    for (a, b), n in sorted(edges.items()):
        if a not in pos or b not in pos:
            continue
        bad = rank_of[b] >= rank_of[a]
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=dict(
            arrowstyle="->", color="tab:red" if bad else "0.6", lw=0.6 + min(n, 20) * 0.12,
            shrinkA=18, shrinkB=18, connectionstyle="arc3,rad=0.08"))
    for g, (x, y) in pos.items():
        n = sum(1 for m in graph if _group(m, layers) == g)
        ax.text(x, y, f"{g}\n{n} module" + ("" if n == 1 else "s"), ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.5", fc="tab:blue" if g != "top" else "tab:green", alpha=0.25))
    bad = upward_edges(graph, layers)
    found = cycles(graph)
    ax.set_title(f"{title}\n{len(found)} import cycles, {len(bad)} imports against the layer order "
                 "(red); grey: imports going down", fontsize=10)
    ax.set_xlim(-0.5, 6.5)
    ax.set_ylim(-0.8, max(ranks) * 1.2 + 0.8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=PACKAGE, help="the videomamba folder to read")
    ap.add_argument("--png", type=Path, help="write the layer picture here")
    ap.add_argument("--title", default="videomamba: imports between layers")
    ap.add_argument("--old-paths", action="store_true",
                    help="place the old module paths (now aliases) in their folder's layer, as they were before "
                         "they moved: for reading an older checkout")
    args = ap.parse_args(argv)
    # (the aliases inside engine/ and checkpoint/ were modules of those folders; the top-level ones kept their layer)
    layers = {k: v for k, v in LAYERS.items()
              if not (args.old_paths and k in ALIASES and k.split(".")[1] in ("engine", "checkpoint"))}
    graph = import_graph(args.package)
    found, bad = cycles(graph), upward_edges(graph, layers)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports between them")
    print(f"import cycles: {len(found)}")
    for c in found:
        print("  " + " -> ".join(c))
    print(f"imports against the layer order: {len(bad)}")
    for line in bad:
        print("  " + line)
    print("imports between groups (source -> target: count):")
    for (a, b), n in sorted(layer_edges(graph, layers).items()):
        print(f"  {a:>10} -> {b:<10} {n}")
    if args.png:
        plot(graph, layers, args.png, args.title)
        print(f"picture: {args.png}")
    return 1 if found or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
