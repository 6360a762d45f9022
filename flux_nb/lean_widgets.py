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

    lean(widget_class)   a subclass sending the trimmed whole state (one subclass per class)
"""

from __future__ import annotations

from functools import cache
from typing import Any

IDENTITY = ("_model_name", "_model_module", "_model_module_version")
EMPTY_BY_DEFAULT = ("_dom_classes",)  # every front end's model starts with no classes


class _Lean:
    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        if key is None:  # the whole state: opening the comm, or sending all of it again
            state = super().get_state(None, drop_defaults=True)  # type: ignore[misc]
            for key in EMPTY_BY_DEFAULT:  # a dynamic default: drop_defaults keeps it
                if key in state and not state[key]:
                    del state[key]
            state.update({k: getattr(self, k) for k in IDENTITY})
            return state
        return super().get_state(key, drop_defaults)  # type: ignore[misc]


@cache
def lean(widget_class: type) -> type:
    """widget_class opening with only its non-default state."""
    return type(widget_class.__name__, (_Lean, widget_class), {})


__all__ = ["lean"]
