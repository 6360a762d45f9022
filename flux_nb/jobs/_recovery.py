"""Recovering what earlier (now gone) kernels sent and never saved, from the output folder's
journal, each from the server it was sent to, without paying for anything twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core import _errors as errors
from ..core._recipe import Recipe
from ..core._status import FAILED
from ..files._journal import Journal
from ._generation import Generation
from ._runner import Runner


def unfinished(journal: Journal, history: Sequence[Generation]) -> list[dict[str, Any]]:
    """Journalled generations not yet saved whose kernel is gone, and this kernel's own (in
    `history`) that failed before their end was journalled (a download that kept failing, an
    enqueue whose fate could not be read): work of another live kernel sharing the folder is
    left to it."""
    failed = {g.key for g in history if g.status == FAILED}
    live = {g.key for g in history if g.status != FAILED}
    return [
        e
        for e in journal.pending()
        if (e.get("key") in failed and e.get("key") not in live)
        or (
            e.get("key") not in failed | live
            and not journal.is_alive(e.get("writer"), e.get("pid"))
        )
    ]


def collect(runner: Runner, entries: list[dict[str, Any]]) -> tuple[list[Generation], list[str]]:
    """Handles for the unfinished entries, and a note for each one left alone (why).

    One sent to this runner's server with a known id is fetched by id; one whose enqueue answer
    was lost is looked for in the queue (finished rows included) before anything is sent again.
    Local work whose server is gone (an earlier kernel's embedded server) is made again here with
    the same seed: the same pixels. Work sent to another server is left for a session pointed at
    it. An image already on disk (the kernel died between writing and journalling it) is loaded.
    """
    taken = {g.id for g in runner.history if g.id} | {str(e["id"]) for e in entries if e.get("id")}
    gens: list[Generation] = []
    notes: list[str] = []
    for entry in entries:
        try:
            recipe = Recipe.from_dict(entry["recipe"])
        except (errors.FluxError, KeyError, TypeError):
            continue
        try:  # an older journal's data: inputs are stored and named by hash from here on
            recipe = runner.output.inputs.intern(recipe)
        except errors.InputImageError as exc:  # named by a hash whose bytes are gone
            missing: str | None = exc.message
        else:
            missing = None
        gid = entry.get("id")
        saved = runner.output.find(str(gid)) if gid else None
        if saved is not None:
            runner.journal.saved(entry["key"], gid, saved)
            gens.append(runner.load(saved))
            continue
        where = _elsewhere(runner, entry)
        if where == "gone":
            gid = None  # its server died with its kernel: make it again, same seed
        elif where is not None:
            notes.append(
                f"{_label(entry, recipe)} was sent to {where}; this session uses"
                f" {runner.client.base_url}: resume it from a session pointed at that server."
            )
            continue
        elif not gid:
            gid = _find_in_queue(runner, recipe, entry, taken)
        if missing is not None and not gid:  # it would have to be sent again, and cannot be
            notes.append(f"{_label(entry, recipe)}: {missing}")
            continue
        from ._lineage import parse  # only when something is resumed: %load_ext stays light

        runner.journal.resumed(entry["key"], gid)
        gens.append(runner.adopt(recipe, entry["key"], gid, parse(entry.get("lineage"))))
    return gens, notes


def _elsewhere(runner: Runner, entry: dict[str, Any]) -> str | None:
    """None when the entry was sent to this runner's server; 'gone' when it went to an earlier
    kernel's embedded server and this one is local too; else where it was sent."""
    local = entry.get("backend", "local") == "local"
    server = entry.get("server")
    here = server == runner.client.base_url if server else local == (runner.backend == "local")
    if here:
        return None
    if local and runner.backend == "local":
        return "gone"
    return str(server or entry.get("backend"))


def _find_in_queue(
    runner: Runner, recipe: Recipe, entry: dict[str, Any], taken: set[str]
) -> str | None:
    """The id of the oldest queue row of this recipe since it was journalled that no handle has
    (its enqueue answer was lost), else None: then it is sent again."""
    found = [
        r
        for r in runner.client.find_enqueued(recipe, entry.get("t", 0))
        if str(r["generation_id"]) not in taken
    ]
    gid = str(found[0]["generation_id"]) if found else None
    if gid:
        taken.add(gid)
    return gid


def _label(entry: dict[str, Any], recipe: Recipe) -> str:
    return f"{str(entry['key'])[:8]} ({recipe.prompt[:30]!r})"
