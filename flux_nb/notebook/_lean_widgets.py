"""Smaller widget models in a saved notebook: a card's widgets send their whole state with only
what differs from the defaults.

nbclient (nbconvert --execute, the tutorials) saves every widget's state as it was sent, and a
widget opens by sending every trait: a Layout is some 45 keys, nearly all null, and a card has
some 25 models. ipywidgets' own embedding drops the values equal to their defaults
(`get_state(drop_defaults=True)`), since every front end's model starts from the same defaults;
the message that opens a widget, and any other sending the whole state (a front end asking for
it, resend_settled, catch_up), do the same here, keeping the model's name and module, which the
front end needs to make the model at all. Updates of single traits are sent as they are. (A
trait set back to its default would not reach a model that has another value in a whole-state
send: the cards' traits never go back.)

They are also smaller in the kernel, where a long session keeps every card it showed: ipywidgets
gives each instance its own list of synced trait names, its own observer of `comm` and, for a
button, two CallbackDispatchers (HasTraits objects): some 650 bytes a widget and 1.2 KB more a
button, and a card has ten widgets, four of them buttons. A lean class shares one list per class,
wires its comm in open() and keeps callbacks in plain lists run by ipywidgets' own dispatching.

    lean(widget_class)   a subclass sending the trimmed whole state (one subclass per class)
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from ipywidgets.widgets.widget import CallbackDispatcher
from traitlets import ObserveHandler

IDENTITY = ("_model_name", "_model_module", "_model_module_version")
EMPTY_BY_DEFAULT = ("_dom_classes",)  # every front end's model starts with no classes


class _Callbacks:
    """A CallbackDispatcher's behaviour (its own methods run on this object) without a HasTraits
    instance each."""

    __slots__ = ("callbacks",)
    log = logging.getLogger("flux_nb.widgets")
    __call__ = CallbackDispatcher.__call__
    register_callback = CallbackDispatcher.register_callback

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        self.callbacks = callbacks or []


class _Lean:
    comm: Any  # ipywidgets traits, for the type checker (annotations only: no class values)
    keys: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        made = self.__dict__.get("_click_handlers")  # a Button's, made by its __init__
        if isinstance(made, CallbackDispatcher):
            self._click_handlers = _Callbacks(list(made.callbacks))

    def on_msg(self, callback: Any, remove: bool = False) -> None:
        """Widget.on_msg, the callbacks in a plain list (run by _handle_custom_msg)."""
        found = self.__dict__.get("_lean_msg_callbacks")
        if found is None:
            found = self._lean_msg_callbacks = _Callbacks()
        found.register_callback(callback, remove=remove)

    def _handle_custom_msg(self, content: Any, buffers: Any) -> None:
        found = self.__dict__.get("_lean_msg_callbacks")
        if found is not None:
            found(self, content, buffers)

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        if key is None:  # the whole state: opening the comm, or sending all of it again
            state = super().get_state(None, drop_defaults=True)  # type: ignore[misc]
            for key in EMPTY_BY_DEFAULT:  # a dynamic default: drop_defaults keeps it
                if key in state and not state[key]:
                    del state[key]
            state.update({k: getattr(self, k) for k in IDENTITY})
            return state
        return super().get_state(key, drop_defaults)  # type: ignore[misc]

    def _keys_default(self) -> list[str]:
        """The synced trait names, one list per class: read only, except by add_traits."""
        return _synced(type(self))

    def add_traits(self, **traits: Any) -> None:
        self.keys = list(self.keys)  # its own, before it grows
        super().add_traits(**traits)  # type: ignore[misc]

    def open(self) -> None:
        """Open the comm as ipywidgets does, then what its per-instance `comm` observer would
        do (a lean class has none: see lean())."""
        was = self.comm
        super().open()  # type: ignore[misc]
        if self.comm is not None and self.comm is not was:
            _COMM_CHANGED(self, {"name": "comm", "old": was, "new": self.comm, "owner": self})


def _ipywidgets_comm_observer() -> Any:
    """Widget._comm_changed, ipywidgets' observer of `comm` (7 and 8): what registers a widget
    and routes its comm's messages."""
    import ipywidgets

    found = ipywidgets.Widget.__dict__.get("_comm_changed")
    return found if isinstance(found, ObserveHandler) else None


_COMM_CHANGED = _ipywidgets_comm_observer()


_SYNCED: dict[type, list[str]] = {}


def _synced(widget_class: Any) -> list[str]:
    found = _SYNCED.get(widget_class)
    if found is None:  # two threads making the first one: both lists are the same
        found = _SYNCED[widget_class] = list(widget_class.class_traits(sync=True))
    return found


@cache
def lean(widget_class: type) -> type:
    """widget_class opening with only its non-default state."""
    body: dict[str, Any] = {}
    if _COMM_CHANGED is not None:
        # Hidden: traitlets registers an ObserveHandler on every instance it makes (three small
        # containers each); open() calls ipywidgets' one itself.
        body["_comm_changed"] = _Hidden()
    return type(widget_class.__name__, (_Lean, widget_class), body)


class _Hidden:
    """An inherited attribute that instances do not have (hasattr is False: traitlets would
    call a plain `_comm_changed` as an old-style change handler) and that is no traitlets
    descriptor on the class (so nothing is registered per instance)."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        raise AttributeError("_comm_changed")


__all__ = ["lean"]
