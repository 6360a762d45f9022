"""The package's layers: every module imports only from layers below its own, never sideways or up.

Read from the source with ast, so an import inside a function or under TYPE_CHECKING counts the
same as one at the top of the file: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flux_nb"

# Lowest first. A module may import modules of any layer below its own, and no other of ours.
# The local server is one unit (its own package, an app of its own that plays the API's part).
LAYERS: list[tuple[str, ...]] = [
    # errors, status names, settings, the option table, files written whole or not at all, text
    # drawn the same on every Pillow
    ("errors", "status", "config", "options", "atomic_write", "lettering", "processes"),
    ("recipe",),  # the validated parameters and the bundled schema
    ("metadata", "pricing", "thumbnail", "sheet", "recent"),  # file formats, small pictures
    (
        "client",
        "journal",
        "inputs",
        "infotext",
    ),  # the HTTP API, the journal, input images, A1111 text
    ("storage", "catalog"),  # the output folder; the model's schema and price, read once
    ("display",),  # how a Generation shows itself without widgets (text, PNG)
    ("generation",),  # the user's handle
    ("lineage", "sweeps"),  # chains of edits, grids of variations
    ("runner",),  # enqueue, event stream, polls, downloads
    ("server",),  # the local loopback server
    # which server makes the images (the embedded one started here); collecting what a gone
    # kernel sent and never saved
    ("backends", "recovery"),
    ("sessions",),  # one per kernel: backend, runner, output folder, history
    ("aio",),  # the async twins
    ("card_html", "settled_output", "catch_up", "lean_widgets"),  # views and their syncing
    ("widgets_compat",),  # what differs between ipywidgets 7 and 8, for the widget views above
    ("cards", "controls"),  # the live card widgets; panel controls made from the schema
    ("panel",),  # the widgets panel
    ("magic", "cli"),  # %%flux, and the command line
    ("__init__", "__main__"),  # the package's own functions (flux_nb.session(), ...)
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def dotted(path: Path) -> str:
    """flux_nb.jobs._generation, flux_nb.server._app; flux_nb.server for its __init__.py."""
    parts = ("flux_nb", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def imports_in(text: str, package: str) -> set[str]:
    """The flux_nb modules some source text imports, anywhere in it (inside functions and
    TYPE_CHECKING blocks too); `package` is the package the file sits in, for relative imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "flux_nb":
                continue
            for alias in node.names:  # `from . import errors` imports a module; `import x` a name
                sub = f"{target}.{alias.name}"
                found.add(sub if is_module(sub) else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flux_nb":
                    found.add(alias.name)
    return found


def all_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def file_graph() -> dict[str, set[str]]:
    """Every file of the package (the server's own too) -> the flux_nb modules it imports."""
    edges: dict[str, set[str]] = {}
    for path in all_files():
        name = dotted(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges[name] = imports_in(path.read_text(encoding="utf-8"), package) - {name}
    return edges


def unit(name: str) -> str:
    """The layer name of a module: 'generation'; 'server' for all of flux_nb.server; '__init__'."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, targets in file_graph().items():
        edges.setdefault(unit(name), set()).update(unit(t) for t in targets)
    return {u: targets - {u} for u, targets in edges.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(set(graph()) - set(LEVEL))
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"
    gone = sorted(set(LEVEL) - set(graph()))
    assert not gone, f"LAYERS names modules that do not exist: {gone}"


def test_imports_go_only_downward() -> None:
    wrong = [
        f"{module} (layer {LEVEL[module]}) imports {target} (layer {LEVEL[target]})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if LEVEL.get(target, len(LAYERS)) >= LEVEL.get(module, -1)
    ]
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def session_parameters_without_a_type() -> list[str]:
    """Functions below sessions.py that take a session typed Any (or not at all): such a
    parameter leans on the Session without an import the layer check could see."""
    found = []
    for path in all_files():
        name = unit(dotted(path))
        if LEVEL.get(name, len(LAYERS)) >= LEVEL["sessions"]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                    note = ast.unparse(arg.annotation) if arg.annotation else "Any"
                    if arg.arg in ("session", "sess") and note in ("Any", "typing.Any"):
                        found.append(f"{dotted(path)}.{node.name}({arg.arg}: {note})")
    return found


def test_a_lower_layer_says_what_it_needs_of_a_session() -> None:
    """lineage and sweeps take a session: a Protocol of their own names what they use of it."""
    assert session_parameters_without_a_type() == []


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that comes back to its start), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        for target in sorted(edges.get(node, ())):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done:
                found = visit(target, [*path, target])
                if found:
                    return found
        done.add(node)
        return None

    for start in sorted(edges):
        if start not in done:
            circle = visit(start, [start])
            if circle:
                return circle
    return None


def test_no_import_circle_between_any_two_files() -> None:
    """Every file its own node, the server package's too: no circle anywhere, however hidden."""
    circle = find_circle(file_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_a_circle_is_found() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .generation import Generation", {"flux_nb.jobs._generation"}),
        ("def f():\n    from .cards import card_stack", {"flux_nb.notebook._cards"}),
        ("if TYPE_CHECKING:\n    from .runner import Runner", {"flux_nb.jobs._runner"}),
        ("from . import errors, display", {"flux_nb.core._errors", "flux_nb.jobs._display"}),
        ("import flux_nb", {"flux_nb"}),
        ("from flux_nb import __version__", {"flux_nb"}),
        ("from ..recipe import Recipe", {"flux_nb.core._recipe"}),
        ("import importlib\nimport httpx", set()),
    ],
)
def test_the_reader_sees_every_kind_of_import(source: str, expected: set[str]) -> None:
    """The checker itself: imports in functions, under TYPE_CHECKING, of the package itself."""
    package = "flux_nb.server" if source.startswith("from ..") else "flux_nb"
    assert imports_in(source, package) == expected
