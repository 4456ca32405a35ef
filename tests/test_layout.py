"""The house rules of the package layout, read from the code's own imports (README "Inside the code").

Each wing imports only the floors below it; training and generation, side by side, never import each
other; nothing imports the API or the CLI; and no modules import each other in a circle.
"""

import ast
from pathlib import Path

import hf_encdec

PACKAGE = Path(hf_encdec.__file__).parent
SHARED = {"errors", "console", "rundir", "batching", "distributed"}
# Lowest first; a module may import its own floor's modules and those of floors below.
FLOORS = [SHARED, {"data"}, {"config"}, {"models"}, {"publish"}, {"training", "generation"}, {"__init__"},
          {"cli", "__main__"}]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Modules of the package that `path` imports (relative imports at any depth, lazy ones included)."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        base = package[: len(package) - node.level + 1]
        target = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names:
            for candidate in ([*target, alias.name], target):  # a module named in the import, else its package
                if (PACKAGE.joinpath(*candidate)).with_suffix(".py").is_file():
                    found.add(".".join(candidate))
                    break
                if candidate and PACKAGE.joinpath(*candidate).is_dir():
                    found.add(".".join([*candidate, "__init__"]))
                    break
                if not candidate:  # `from .. import __version__`: the API's face
                    found.add("__init__")
    return found


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, floor in enumerate(FLOORS) if top in floor)


def graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_has_a_floor():
    for module in graph():
        floor_of(module)  # raises StopIteration for a top-level name the rules do not place


def test_no_import_runs_back_up_or_sideways():
    wrong = []
    for module, imports in graph().items():
        for target in imports:
            up = floor_of(target) > floor_of(module)
            sideways = {module.split(".")[0], target.split(".")[0]} == {"training", "generation"}
            if up or sideways:
                wrong.append(f"{module} -> {target}")
    assert not wrong


def test_no_import_circles():
    imports = graph()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(imports.get(module, ())):
            assert state.get(target) != "open", " -> ".join([*trail, module, target])
            if target not in state:
                visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(imports):
        if module not in state:
            visit(module, [])


def test_the_rules_see_the_imports():
    """The reader finds real arrows: run.py imports the trainer, generator imports decoding, card imports rundir."""
    imports = graph()
    assert "training.trainer" in imports["training.run"]
    assert "models.decoding" in imports["generation.generator"]
    assert "rundir" in imports["publish.card"]
