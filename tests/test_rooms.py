"""The rooms of ffstream (its packages and top modules) import one another only downwards, and in no cycle.

Read from the source with ast, every import counted: at module top, inside functions (lazy) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import ffstream

PACKAGE = Path(ffstream.__file__).parent

# Lowest first: a room may import only the rooms before it. Written once, here; a new room must be placed.
ROOMS = (
    "ff",  # the maths: FF layers, goodness, negatives, checkpoints
    "net",  # wire format, transport, security
    "sources",  # frames from files, cameras, datasets; the webcam preflight
    "config",  # sections, the cross-field rules, loading, recipes (reads ff's layer specs)
    "monitor",  # dashboard, Prometheus, TensorBoard, previews, web
    "offline",  # evaluate, score, filters, reference, the Stack API
    "workers",  # the processes: source, layers, sleep, sink, monitor
    "supervisor",  # starts and watches the workers
    "bench",
    "commands",
    "__init__",  # the package's public API (ffstream.load, __version__), lazily from offline
    "cli",
    "entry",  # the console script
    "__main__",
)


def room_of_file(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def room_of_module(module: str) -> str | None:
    """The room a dotted import names; None outside ffstream. `from ffstream import x` is a room's when x is one."""
    parts = module.split(".")
    if parts[0] != "ffstream":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from a import b` counts a.b, so a room named as b counts."""
    package = ".".join(("ffstream", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            if module == "ffstream":  # `from ffstream import sources` names a room; `from ffstream import load` the package's
                found.update(f"ffstream.{a.name}" if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                             else "ffstream" for a in node.names)
            else:
                found.add(module)
    return found


def room_imports() -> dict[str, dict[str, list[str]]]:
    """room -> {room it imports: [the files that do]}."""
    arrows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of_file(path)
        for module in imported_modules(path):
            target = room_of_module(module)
            if target is not None and target != source:
                arrows[source][target].append(str(path.relative_to(PACKAGE.parent)))
    return arrows


def test_every_room_is_placed_in_the_order():
    rooms = {room_of_file(p) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(ROOMS), f"rooms with no place in ROOMS: {sorted(rooms - set(ROOMS))}"


def test_no_room_imports_a_room_above_it():
    rank = {room: i for i, room in enumerate(ROOMS)}
    upward = [f"{source} -> {target} ({', '.join(sorted(set(files)))})"
              for source, targets in room_imports().items() for target, files in targets.items()
              if rank[target] > rank[source]]
    assert not upward, "imports from a lower room to a higher one:\n" + "\n".join(upward)


def test_the_rooms_import_one_another_in_no_cycle():
    arrows = {source: set(targets) for source, targets in room_imports().items()}
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(room: str, path: list[str]) -> list[str] | None:
        state[room] = "open"
        for target in sorted(arrows.get(room, ())):
            if state.get(target) == "open":
                return [*path, room, target]
            if target not in state and (cycle := visit(target, [*path, room])):
                return cycle
        state[room] = "done"
        return None

    for room in sorted(arrows):
        if room not in state:
            cycle = visit(room, [])
            assert cycle is None, "an import cycle between rooms: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_check_sees_an_upward_arrow(tmp_path, monkeypatch):
    """The check itself can fail: a lower room's lazy import of a higher one is found."""
    fake = tmp_path / "ffstream"
    (fake / "ff").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cli.py").write_text("from ffstream.ff import layer\n")
    (fake / "ff" / "layer.py").write_text("def f():\n    from ffstream import cli\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert {s: set(t) for s, t in room_imports().items()} == {"ff": {"cli"}, "cli": {"ff"}}
