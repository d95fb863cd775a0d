"""Dependencies point one way: every import of nextgpt/ and app/ (function-local ones included) goes down the
floors below or stays in its own room, and no room's imports go round in a circle.

    .venv/bin/python -m pytest tests/test_imports.py -q

Nothing is imported: the modules are read with `ast`. A package's ``__init__`` is a module of its own (the
facade that re-exports its submodules); `from pkg import sub` counts as importing the submodule `pkg.sub`.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first: a module may import from its own room and from any room on a lower floor, never from a room on
# its own floor or above. Rooms sharing a floor (eval, training) do not import each other.
FLOORS: list[dict[str, tuple[str, ...]]] = [
    {"config": ("nextgpt.config",), "files": ("nextgpt.files",)},  # settings; atomic writes (imports nothing of ours)
    {"world": ("nextgpt.world", "nextgpt.world.*")},  # the procedural world and its record formats
    {"stages": ("nextgpt.media", "nextgpt.encode", "nextgpt.project", "nextgpt.llm", "nextgpt.signals",
                "nextgpt.decode", "nextgpt.decoder_configs", "nextgpt.unet3d", "nextgpt.vocoder",
                "nextgpt.conversation", "nextgpt.memory", "nextgpt.world_profile", "nextgpt.abilities")},  # one file per pipeline stage, each taking and returning tensors
    {"loading": ("nextgpt.loading",)},  # checkpoint paths, files and the parts they hold
    {"model": ("nextgpt", "nextgpt.model", "nextgpt.synthetic", "nextgpt.tiny")},  # the tiers composed
    {"eval": ("nextgpt.eval", "nextgpt.eval.*"), "training": ("nextgpt.training", "nextgpt.training.*")},
    {"study": ("nextgpt.study", "nextgpt.study.*")},  # human evaluation studies: questions, answers, ratings
    {"cli": ("nextgpt.cli", "nextgpt.__main__", "nextgpt.options")},
    {"app": ("app", "app.*", "app.py")},  # the web app sits on top; nothing in nextgpt imports it
]


def project_modules() -> dict[str, Path]:
    """Module name -> file for nextgpt/, app/ and the app.py entry point (named "app.py": it is run, never
    imported, and the app/ package takes the name `app`)."""
    modules = {"app.py": ROOT / "app.py"}
    for package in ("nextgpt", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The project modules `name` imports anywhere in its file, each with the line of its first import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . / .. import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` the module itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import nextgpt.world.vocab.x` -> the longest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def room_of(name: str) -> tuple[int, str]:
    for floor, rooms in enumerate(FLOORS):
        for room, patterns in rooms.items():
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                return floor, room
    raise LookupError(name)


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_room(graph):
    homeless = []
    for name in graph:
        try:
            room_of(name)
        except LookupError:
            homeless.append(name)
    assert not homeless, f"modules on no floor of FLOORS (add them where they belong): {homeless}"


def test_no_import_points_up_or_sideways(graph):
    wrong = []
    for name, targets in graph.items():
        floor, room = room_of(name)
        for target, line in targets.items():
            t_floor, t_room = room_of(target)
            if t_room != room and t_floor >= floor:
                wrong.append(f"{name}:{line} ({room}, floor {floor}) imports {target} ({t_room}, floor {t_floor})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_circles(graph):
    """Depth-first search for a back edge; reports one circle, in import order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_the_walk_sees_function_local_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function and a relative one are both found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "high.py").write_text("def f():\n    from pkg.low import X\n    return X\n")
    (pkg / "side.py").write_text("from . import low\nfrom .high import f\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.low": pkg / "low.py", "pkg.high": pkg / "high.py",
               "pkg.side": pkg / "side.py"}
    assert imported("pkg.high", modules["pkg.high"], modules) == {"pkg.low": 2}
    assert imported("pkg.side", modules["pkg.side"], modules) == {"pkg.low": 1, "pkg.high": 2}
