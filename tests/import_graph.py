"""The structure of ``models/`` from its own imports: which feature folder uses which, and any circle.

    python -m tests.import_graph            the feature picture, then every import that breaks the rules

Every ``import``/``from ... import`` of a ``models.`` module counts, at the top of a file or inside a
function (a late import hides a circle from Python, not from this walk). ``tests/test_import_graph.py``
keeps the rules: no feature imports one that ``ALLOWED`` does not list for it, and no two modules
import each other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Which feature may use which: a feature, or one module of it by its full name. Core is used by all and
# uses none; read the list bottom-up: each feature builds on those it names, and nothing points back up.
ALLOWED: dict[str, set[str]] = {
    "core": set(),  # settings, device, errors, assets, registry, the files handed to visitors
    "compression": {"core"},  # huffman.py: the one Huffman code, shared by text/ and checkpoint/
    "compression.checkpoint": {"core", "compression"},
    # who runs the model; the classroom scheduler samples with the sliders' maths, a module that uses nothing
    "engines": {"core", "models.generation.sampling"},
    "generation": {"core", "engines"},  # the Generate tab's model work, through an engine
    "ner": {"core", "engines"},
    "compression.text": {"core", "compression", "engines"},  # the LM coder runs the model through an engine
    "training": {"core", "ner"},  # reads CoNLL with the NER feature's reader
}


def feature(module: str) -> str:
    """``models.compression.text.lm_codec`` -> ``compression.text``; ``models.core.registry`` -> ``core``."""
    parts = module.split(".")[1:]
    if parts[:1] == ["compression"] and len(parts) >= 2 and parts[1] in ("text", "checkpoint"):
        return ".".join(parts[:2])
    return parts[0] if parts else ""


def _module_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _known(modules: set[str], name: str) -> str | None:
    """``name`` or its nearest enclosing package that is a module of models/."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def module_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: modules of models/ it imports}, from every import statement in models/."""
    files = {_module_of(p, root): p for p in sorted((root / "models").rglob("*.py"))}
    modules = set(files)
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]  # a module, or a name in the module ``base``
            for name in names:
                target = _known(modules, name)
                if target and target != module and not module.startswith(target + "."):
                    edges[module].add(target)
        edges.setdefault(module, set())
    return dict(edges)


def feature_edges(edges: dict[str, set[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """{(feature, feature it uses): [(module, module), ...]} for imports across features."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for a, targets in edges.items():
        for b in sorted(targets):
            if feature(a) != feature(b):
                out[feature(a), feature(b)].append((a, b))
    return dict(out)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def back_arrows(edges: dict[str, set[str]]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Imports from one feature into another that ``ALLOWED`` does not list (by feature or by module)."""
    bad = []
    for (a, b), pairs in sorted(feature_edges(edges).items()):
        allowed = ALLOWED.get(a, set())
        pairs = [(x, y) for x, y in pairs if b not in allowed and y not in allowed]
        if pairs:
            bad.append((a, b, pairs))
    return bad


def picture(edges: dict[str, set[str]]) -> str:
    """One line per feature: the features it uses, with how many imports."""
    fe = feature_edges(edges)
    lines = []
    for f in ALLOWED:
        uses = sorted((b, len(p)) for (a, b), p in fe.items() if a == f)
        modules = sum(1 for m in edges if feature(m) == f)
        lines.append(f"{f:<24} ({modules:>2} modules) -> " + (", ".join(f"{b} ({n})" for b, n in uses) or "-"))
    others = sorted({feature(m) for m in edges} - set(ALLOWED) - {""})
    lines += [f"{f:<24} not placed in ALLOWED" for f in others]
    return "\n".join(lines)


def main() -> int:
    edges = module_edges()
    print(picture(edges))
    bad, loops = back_arrows(edges), circles(edges)
    for a, b, pairs in bad:
        print(f"\nnot allowed: {a} -> {b}")
        for x, y in pairs:
            print(f"  {x} imports {y}")
    for group in loops:
        print("\ncircle: " + " <-> ".join(group))
    if not bad and not loops:
        print("\nno back-arrow, no circle")
    return 1 if bad or loops else 0


if __name__ == "__main__":
    raise SystemExit(main())
