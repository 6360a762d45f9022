"""What differs between ipywidgets 7.7 (Colab) and 8 (JupyterLab, Notebook 7, VS Code, Kaggle).

Cards, the panel and its controls build their widgets through these few helpers, so one code path
serves both: ipywidgets 7 has no HTMLStyle and no font size on buttons, calls a text widget's
tooltip `description_tooltip`, and gives a FileUpload's files as a dict of name -> {metadata,
content} where 8 gives a tuple of dicts. Icons need no adapter: the names used are Font Awesome 4
names, which ipywidgets 7 draws and 8 maps onto its Font Awesome (tests/test_widgets_compat.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import ipywidgets as widgets

IPYWIDGETS_MAJOR = int(widgets.__version__.split(".")[0])

W = TypeVar("W", bound=widgets.Widget)
S = TypeVar("S", bound=widgets.Style)


def make(cls: type[W], **kwargs: Any) -> W:
    """cls(**kwargs), with `tooltip` given the name this ipywidgets uses for it on cls."""
    if "tooltip" in kwargs:
        kwargs[_tooltip_name(cls)] = kwargs.pop("tooltip")
    return cls(**kwargs)


def tooltip_of(widget: widgets.Widget) -> str:
    return str(getattr(widget, _tooltip_name(type(widget))) or "")


def set_tooltip(widget: widgets.Widget, text: str) -> None:
    setattr(widget, _tooltip_name(type(widget)), text)


def _tooltip_name(cls: type[widgets.Widget]) -> str:
    # ipywidgets 8: `tooltip` on every DOM widget. 7: `tooltip` on buttons only, the others have
    # `description_tooltip`.
    return "tooltip" if cls.class_traits().get("tooltip") else "description_tooltip"


def style_class(widget_class: type[widgets.DOMWidget]) -> Any:
    """The style class a widget class takes: an HTML widget's is HTMLStyle in 8 and, in 7, where
    an HTML widget has no font settings, DescriptionStyle (its HTML carries its own sizes)."""
    return widget_class.class_traits()["style"].klass


def style(cls: type[S], **css: Any) -> S:
    """cls(**css) with only the settings this ipywidgets' cls has."""
    known = cls.class_trait_names()
    return cls(**{name: value for name, value in css.items() if name in known})


def widget_by_id(model_id: str) -> widgets.Widget:
    """The live widget of a model id, as a widget-view output names it."""
    from ipywidgets.widgets import widget

    registry = getattr(widget, "_instances", None)  # ipywidgets 8
    if registry is None:
        registry = widgets.Widget.widgets  # ipywidgets 7
    return registry[model_id]


class BundleDisplay:
    """Put first in a widget class's bases so display() uses its _repr_mimebundle_ in ipywidgets
    7 too: 7 shows a widget through _ipython_display_, which drops the display_id (the settled
    output updates the output by it) and every MIME type but the widget view and text."""

    _ipython_display_ = None  # IPython skips a _ipython_display_ that is not callable

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """text/plain and the widget view: ipywidgets 8's own bundle, built the same way in 7."""
        own = getattr(super(), "_repr_mimebundle_", None)
        if own is not None:
            return dict(own(**kwargs))
        return {
            "text/plain": repr(self),
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": getattr(self, "model_id", None),
            },
        }


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """(name, bytes) for each file of a FileUpload's value: a tuple of dicts with name and
    content in ipywidgets 8, a dict of name -> {"metadata": ..., "content": ...} in 7."""
    if isinstance(value, Mapping):
        return [
            (str(name or "upload"), bytes(entry.get("content") or b""))
            for name, entry in value.items()
        ]
    return [
        (str(entry.get("name") or "upload"), bytes(entry.get("content") or b""))
        for entry in value or ()
    ]


def clear_upload(upload: widgets.FileUpload) -> None:
    """Drop a FileUpload's files from the kernel (and from the widget state a notebook saves)."""
    if IPYWIDGETS_MAJOR >= 8:
        upload.value = ()
        return
    # ipywidgets 7: `value` is read-only, made from the synced `data` and `metadata` lists.
    with upload.hold_sync():
        upload.set_trait("data", [])
        upload.set_trait("metadata", [])
    upload.set_trait("value", {})


__all__ = [
    "style",
    "style_class",
    "BundleDisplay",
    "IPYWIDGETS_MAJOR",
    "clear_upload",
    "make",
    "set_tooltip",
    "tooltip_of",
    "uploaded_files",
    "widget_by_id",
]
