"""A card's widget models are sent with only what differs from the defaults
(notebook/_lean_widgets.py), so a saved notebook holds small models, and a page that starts each
model from the defaults, as every ipywidgets front end does, draws exactly the kernel's card."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ipywidgets

# Every widget in the kernel, its whole state as ipywidgets itself would send it (bytes hashed).
KERNEL_STATE = """
import hashlib as _h, json as _j, ipywidgets as _w
from ipywidgets.widgets.widget import _instances as _all
def _plain(v):
    return _h.sha256(bytes(v)).hexdigest() if isinstance(v, (bytes, memoryview)) else v
print(_j.dumps({i: {k: _plain(v) for k, v in _w.Widget.get_state(w).items()}
                for i, w in _all.items()}, default=list))
"""


def _defaults(model_name: str, module: str) -> dict[str, Any]:
    """The state a front end gives a new model of this name before applying what was sent:
    ipywidgets' defaults, which its own embedding (drop_defaults) relies on too."""
    for cls in _widget_classes():
        traits = cls.class_traits()
        if (
            traits["_model_name"].default_value == model_name
            and traits["_model_module"].default_value == module
        ):
            return ipywidgets.Widget.get_state(cls())
    raise AssertionError(f"no ipywidgets class makes {model_name}")


def _widget_classes() -> list[type]:
    found, todo = [], [ipywidgets.Widget]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("ipywidgets.") and "_model_name" in cls.class_traits():
            found.append(cls)
    return found


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """JSON-comparable: bytes as their hash, tuples as lists."""
    return {
        k: hashlib.sha256(bytes(v)).hexdigest()
        if isinstance(v, (bytes, memoryview))
        else list(v)
        if isinstance(v, tuple)
        else v
        for k, v in state.items()
    }


def test_a_page_that_starts_from_the_defaults_draws_the_kernels_card(page):
    page.run("%load_ext flux_nb")
    page.run("%%flux --seed 3 --steps 4 --name fox\na red fox in snow")
    page.run("%flux wait 60")
    (printed,) = [m for m in page.run(KERNEL_STATE) if m["msg_type"] == "stream"]
    kernel = json.loads(printed["content"]["text"])

    card = [i for i, m in page.truth.items() if "flux-nb-card" in m.get("_dom_classes", ())]
    assert card, "the card's model was never sent"
    sent_keys = 0
    for model_id, sent in page.truth.items():
        if model_id in page.closed:  # what a finished card no longer shows: gone in the kernel too
            assert model_id not in kernel
            continue
        drawn = _plain({**_defaults(sent["_model_name"], sent["_model_module"]), **sent})
        assert drawn == _plain(kernel[model_id]), sent["_model_name"]
        sent_keys += len(sent)
    full_keys = sum(len(state) for i, state in kernel.items() if i in page.truth)
    assert sent_keys < full_keys / 2  # most of every model is its defaults, and stays unsent


def _message(data: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"data": data}, "buffers": []}


def test_a_lean_widget_works_as_ipywidgets_own_without_its_per_instance_objects():
    """No observer of `comm` and no CallbackDispatchers of its own, one list of synced names per
    class; still registered, and what the page sends (an edit, a click) still arrives."""
    from ipywidgets.widgets import widget as module

    from flux_nb.notebook._lean_widgets import lean

    registry = module._instances if hasattr(module, "_instances") else module.Widget.widgets
    html, button = lean(ipywidgets.HTML)("before"), lean(ipywidgets.Button)(description="Go")
    assert html.keys == ipywidgets.HTML().keys and html.keys is lean(ipywidgets.HTML)().keys
    for widget in (html, button):
        assert widget._trait_notifiers == {} and registry[widget.model_id] is widget
        assert not any(isinstance(v, module.CallbackDispatcher) for v in vars(widget).values()), (
            "a HasTraits dispatcher per widget"
        )
    html._handle_msg(
        _message({"method": "update", "state": {"value": "after"}, "buffer_paths": []})
    )
    assert html.value == "after"
    clicks: list[Any] = []
    button.on_click(clicks.append)
    button._handle_msg(_message({"method": "custom", "content": {"event": "click"}}))
    button.click()
    assert clicks == [button, button]
    button.on_click(clicks.append, remove=True)
    button.click()
    assert len(clicks) == 2
    custom: list[Any] = []
    html.on_msg(lambda widget, content, buffers: custom.append(content))
    html._handle_msg(_message({"method": "custom", "content": {"hello": 1}}))
    assert custom == [{"hello": 1}]
    model_id = html.model_id
    html.close()
    assert html.comm is None and model_id not in registry
