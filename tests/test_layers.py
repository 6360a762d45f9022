"""The package's layers: every module imports only from layers below its own, never sideways or up.

Read from the source with ast, so an import inside a function or under TYPE_CHECKING counts the
same as one at the top of the file: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flux_nb"

# The rooms of the house, lowest first: `ls flux_nb` shows them. A module may import from any room
# below its own, and within its room from the layers below its own (listed lowest first, by the
# module's name without its leading underscore). The local server is one unit: its own package,
# an app of its own that plays the API's part, checked inside only for circles.
ROOMS: list[tuple[str, list[tuple[str, ...]]]] = [
    (
        "core",
        [
            # errors, status names, settings, the option table, files written whole or not at
            # all, text drawn the same on every Pillow, is a process alive
            ("errors", "status", "config", "options", "atomic_write", "lettering", "processes"),
            ("recipe",),  # the validated parameters and the bundled schema
        ],
    ),
    (
        "files",
        [
            ("metadata", "thumbnail", "sheet", "recent"),  # formats, small pictures, read-backs
            ("journal", "inputs", "infotext"),  # the journal, input images, A1111 text
            ("storage",),  # the output folder
        ],
    ),
    (
        "api",
        [
            ("client", "pricing"),  # the HTTP API and prices
            ("catalog",),  # the model's schema and price, read once
        ],
    ),
    ("server", [("*",)]),  # the local loopback server
    (
        "jobs",
        [
            ("display",),  # how a Generation shows itself without widgets (text, PNG)
            ("generation",),  # the user's handle
            ("lineage", "sweeps"),  # chains of edits, grids of variations
            ("runner",),  # enqueue, event stream, polls, downloads
            # which server makes the images (the embedded one started here); collecting what a
            # gone kernel sent and never saved
            ("backends", "recovery"),
            ("sessions",),  # one per kernel: backend, runner, output folder, history
            ("aio",),  # the async twins
        ],
    ),
    (
        "notebook",
        [
            ("card_html", "settled_output", "catch_up", "lean_widgets"),  # views, their syncing
            ("widgets_compat",),  # what differs between ipywidgets 7 and 8
            ("cards", "controls"),  # the live card widgets; panel controls from the schema
            ("panel",),  # the widgets panel
            ("magic",),  # %%flux and %flux
        ],
    ),
    ("cli", [("*",)]),  # flux-nb serve / generate / keys / plan
    ("__main__", [("*",)]),  # python -m flux_nb
    ("__init__", [("*",)]),  # the package's own functions: flux_nb.generate(), session(), ...
]
ROOM_NAMES = [room for room, _ in ROOMS]
# Only these rooms may import IPython, ipywidgets, traitlets or ipykernel.
NOTEBOOK_LIBRARIES = ("IPython", "ipywidgets", "traitlets", "ipykernel")
NOTEBOOK_ROOMS = ("notebook",)


def level(unit: tuple[str, str]) -> tuple[int, int]:
    """(room, layer in the room) of a unit, for comparing: lower imports only lower. A room's own
    __init__ (its docstring) sits below the room's modules."""
    room, module = unit
    if module == "__init__":
        return ROOM_NAMES.index(room), -1
    for i, names in enumerate(dict(ROOMS)[room]):
        if module in names or names == ("*",):
            return ROOM_NAMES.index(room), i
    raise KeyError(unit)


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


def unit(name: str) -> tuple[str, str]:
    """(room, module) of a dotted name: ('jobs', 'runner') for flux_nb.jobs._runner, ('jobs',
    '__init__') for flux_nb.jobs itself, ('server', 'server') for all of flux_nb.server,
    ('cli', 'cli') and ('__init__', '__init__') for the top."""
    parts = name.split(".")[1:]
    if not parts:
        return ("__init__", "*")
    room = parts[0]
    if room in ("server", "cli", "__main__"):
        return (room, room)
    if len(parts) == 1:
        return (room, "__init__")
    return (room, parts[1].removeprefix("_"))


def graph() -> dict[tuple[str, str], set[tuple[str, str]]]:
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for name, targets in file_graph().items():
        edges.setdefault(unit(name), set()).update(unit(t) for t in targets)
    return {u: targets - {u} for u, targets in edges.items()}


def test_the_folder_shows_the_rooms() -> None:
    """`ls flux_nb` is the layer picture: the rooms, the command line and the package's face;
    every module in a room is private (its room's face is flux_nb's exports)."""
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    rooms = {room for room in ROOM_NAMES if (PACKAGE / room).is_dir()}
    assert entries == rooms | {"__init__.py", "__main__.py", "cli.py", "py.typed"}
    assert rooms == {"core", "files", "api", "server", "jobs", "notebook"}
    public = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.parent != PACKAGE
        and p.name != "__init__.py"
        and not any(part.startswith("_") for part in p.relative_to(PACKAGE).parts[1:])
    ]
    assert not public, f"modules in a room are private (name them _x.py): {public}"


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for u in graph():
        try:
            level(u)
        except KeyError:
            unplaced.append(u)
    assert not unplaced, f"add these modules to ROOMS in {Path(__file__).name}: {unplaced}"
    named = {(room, m) for room, layers in ROOMS for names in layers for m in names if m != "*"}
    gone = sorted(named - set(graph()))
    assert not gone, f"ROOMS names modules that do not exist: {gone}"


def test_imports_go_only_downward() -> None:
    wrong = [
        f"{'.'.join(module)} {level(module)} imports {'.'.join(target)} {level(target)}"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if level(target) >= level(module)
    ]
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_a_room_face_imports_nothing() -> None:
    """A room's __init__ is its docstring: importing flux_nb.files must not load the room."""
    faces = {room: targets for (room, m), targets in graph().items() if m == "__init__"}
    assert set(faces) == {"core", "files", "api", "jobs", "notebook"}
    assert not any(faces.values()), faces


def test_the_server_stands_on_core_alone() -> None:
    """The local server plays the API's part: it shares the recipe and the error tree with the
    client, never the client's files, requests or jobs."""
    assert {room for room, _ in graph()[("server", "server")]} == {"core"}


def session_parameters_without_a_type() -> list[str]:
    """Functions below the session that take a session typed Any (or not at all): such a
    parameter leans on the Session without an import the layer check could see."""
    found = []
    for path in all_files():
        if level(unit(dotted(path))) >= level(("jobs", "sessions")):
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


def test_only_the_notebook_room_uses_ipython_and_ipywidgets() -> None:
    """A script or a server outside a kernel never pays for IPython, nor breaks without it."""
    found = []
    for path in all_files():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in NOTEBOOK_ROOMS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [f"{rel}: {n}" for n in names if n.split(".")[0] in NOTEBOOK_LIBRARIES]
    assert not found, "IPython/ipywidgets outside notebook/: " + ", ".join(found)


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
    ("source", "package", "expected"),
    [
        ("from ._generation import Generation", "flux_nb.jobs", {"flux_nb.jobs._generation"}),
        (
            "def f():\n    from ..notebook._cards import card_stack",
            "flux_nb.jobs",
            {"flux_nb.notebook._cards"},
        ),
        (
            "if TYPE_CHECKING:\n    from ._runner import Runner",
            "flux_nb.jobs",
            {"flux_nb.jobs._runner"},
        ),
        (
            "from . import _errors, _status",
            "flux_nb.core",
            {"flux_nb.core._errors", "flux_nb.core._status"},
        ),
        ("import flux_nb", "flux_nb", {"flux_nb"}),
        ("from flux_nb import __version__", "flux_nb", {"flux_nb"}),
        ("from ...core._recipe import Recipe", "flux_nb.server.engines", {"flux_nb.core._recipe"}),
        ("from .jobs import _aio", "flux_nb", {"flux_nb.jobs._aio"}),
        ("import importlib\nimport httpx", "flux_nb", set()),
    ],
)
def test_the_reader_sees_every_kind_of_import(
    source: str, package: str, expected: set[str]
) -> None:
    """The checker itself: imports in functions, under TYPE_CHECKING, of the package itself."""
    assert imports_in(source, package) == expected


def test_units_and_levels() -> None:
    """The checker's map: a module's room and layer, the server one unit, the top above all."""
    assert unit("flux_nb.jobs._runner") == ("jobs", "runner")
    assert unit("flux_nb.server.engines._plan") == unit("flux_nb.server") == ("server", "server")
    assert level(unit("flux_nb.core._recipe")) < level(unit("flux_nb.files._metadata"))
    assert level(unit("flux_nb.jobs._runner")) > level(unit("flux_nb.jobs._generation"))
    assert level(unit("flux_nb.jobs")) < level(unit("flux_nb.jobs._display"))
    assert (
        level(unit("flux_nb")) > level(unit("flux_nb.cli")) > level(unit("flux_nb.notebook._magic"))
    )
