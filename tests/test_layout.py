"""The package's shape, checked from the source: no import cycle, each layer importing only the layers
below it (the plain models nothing but tokenization), files small enough to read."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import gptlab

SRC = Path(gptlab.__file__).resolve().parent
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name, with its file."""
    found = {"gptlab": SRC / "__init__.py"}
    for info in pkgutil.walk_packages([str(SRC)], prefix="gptlab."):
        spec = info.module_finder.find_spec(info.name)
        found[info.name] = Path(spec.origin)
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, file: Path) -> set[str]:
    """The gptlab modules ``name`` imports when it runs, lazy (in-function) imports included;
    ``if TYPE_CHECKING:`` blocks never run and are left out."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # `from pkg import module` imports the module itself
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(file.read_text(encoding="utf-8")))
    return {target for target in targets if target in MODULES and target != name}


GRAPH = {name: _imports(name, file) for name, file in MODULES.items()}


def test_the_walk_sees_the_whole_package():
    expected = {"gptlab.train", "gptlab.tasks.registry", "gptlab.tokenization.base", "gptlab.data.cache"}
    assert expected <= set(GRAPH)
    assert "gptlab.checkpoints.read" in GRAPH["gptlab.tasks.registry"]
    assert "gptlab.tokenization.fast_bpe" in GRAPH["gptlab.tokenization.bpe"]


def test_no_import_cycle():
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for target in sorted(GRAPH[name]):
            walk(target, [*path, name])
        done.add(name)

    for name in sorted(GRAPH):
        walk(name, [])


# The layers, lowest first: a package imports only packages before it (and itself); the entry points
# (gptlab.train, .eval, ...) stand above them all and nothing imports them.
LAYERS = ["tokenization", "models", "checkpoints", "run", "data", "tasks", "callbacks"]
ENTRY_POINTS = {"train", "eval", "generate", "predict", "export"}


def _layer(module: str) -> str:
    """``gptlab.tasks.lm`` -> ``tasks``; the package root ``gptlab`` -> ``""``; an entry point -> itself."""
    return module.split(".")[1] if "." in module else ""


def test_the_plain_models_import_nothing_of_gptlab_but_tokenization():
    offenders = {
        name: sorted(t for t in targets if _layer(t) not in ("models", "tokenization"))
        for name, targets in GRAPH.items()
        if _layer(name) == "models"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_every_module_belongs_to_a_layer_or_is_an_entry_point():
    assert {_layer(name) for name in GRAPH} - {""} == set(LAYERS) | ENTRY_POINTS


def test_no_layer_imports_a_layer_above_it():
    rank = {layer: i for i, layer in enumerate(LAYERS)} | {entry: len(LAYERS) for entry in ENTRY_POINTS}
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name != "gptlab"
        for target in targets
        if target != "gptlab" and rank[_layer(target)] > rank[_layer(name)]
    )
    assert upward == []
    entry_imports = sorted(f"{n} -> {t}" for n, ts in GRAPH.items() for t in ts if _layer(t) in ENTRY_POINTS)
    assert entry_imports == []


def test_the_package_root_imports_nothing_of_gptlab():
    assert GRAPH["gptlab"] == set()


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # the walk the checks above rely on: a models module importing a task is found as an upward edge
    source = tmp_path / "bad.py"
    source.write_text("from gptlab.tasks.lm import GPTModule\n")
    assert _imports("gptlab.models.bad", source) == {"gptlab.tasks.lm"}


def test_source_files_stay_under_the_line_limit():
    lengths = {
        path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in SRC.rglob("*.py")
    }
    too_long = {file: n for file, n in lengths.items() if n > MAX_LINES}
    assert too_long == {}, f"split these files (at most {MAX_LINES} lines): {too_long}"
