"""flux-nb in JupyterLab, driven in headless Chromium as a person would (issue 6).

The notebook (conftest.CELLS) holds `%load_ext flux_nb` with a Panel, then a `%%flux` cell. Each
step leaves a screenshot in test-artifacts/browser/. Run through scripts/test.sh, which makes the
browser environment; see conftest.py.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip(
    "playwright.sync_api",
    reason="browser test NOT RUN: playwright is not installed here; scripts/test.sh runs it in .venv-browser",
)

from notebook_page import same_pixels  # noqa: E402 - after the skip above

pytestmark = pytest.mark.browser

PANEL_PROMPT = "a red kite over green hills"
FLUX_SEED = 4242
FLUX_PROMPT = "a lighthouse on a cliff at dusk"
# Generate's click to the preview loaded in its <img>, measured in the page (performance.now()).
GENERATE_TO_PREVIEW = """() => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[0];
    const img = cell.querySelector('img.widget-image');
    return window.__fluxGenerateClick !== undefined && img && img.complete && img.naturalWidth > 0
        && performance.now() - window.__fluxGenerateClick;
}"""
# Every text the first status line of a cell's card shows, in order, and whether a preview was
# on screen at the time.
RECORD_STATUSES = """cell => {
    const seen = window.__fluxStatuses = [];
    const record = () => {
        const html = cell.querySelector('.widget-html');
        const text = html && html.textContent.trim();
        const image = !!cell.querySelector('img.widget-image');
        const last = seen[seen.length - 1];
        if (text && !(last && last.text === text && last.image === image)) seen.push({text, image});
    };
    window.__fluxStatusObserver = new MutationObserver(record);
    window.__fluxStatusObserver.observe(cell, {subtree: true, childList: true, characterData: true});
}"""
ACTIVE = r"(submitting|queued|processing)\b"  # jobs.ACTIVE: still running
MARK_GENERATE_CLICK = """() => document.addEventListener('click', event => {
    const button = event.target.closest('button');
    if (button && button.textContent.trim() === 'Generate') window.__fluxGenerateClick = performance.now();
}, true)"""


def test_panel_generate_then_reproduce_gives_the_same_picture(notebook, timings, console):
    cell = notebook.panel_cell
    assert "local offline stand-in" in cell.inner_text()  # the panel says which backend draws
    assert notebook.cards(cell).count() == 0  # a fresh output folder: an empty gallery

    prompt = cell.get_by_label("Prompt")
    prompt.click()
    prompt.press_sequentially(PANEL_PROMPT)
    assert prompt.input_value() == PANEL_PROMPT
    notebook.shot("02-panel-prompt-typed", cell)

    notebook.page.evaluate(MARK_GENERATE_CLICK)
    cell.get_by_role("button", name="Generate").click()
    elapsed_ms = notebook.page.wait_for_function(GENERATE_TO_PREVIEW, timeout=30_000).json_value()
    timings.add("Generate click -> preview on screen (ms)", elapsed_ms)
    notebook.wait_cards_with_images(cell, 1)
    notebook.shot("03-panel-generated", cell)

    first = notebook.cards(cell).first
    seed = notebook.seed(first)
    # The file name is made from the prompt: the typed text reached the kernel.
    assert "a-red-kite-over-green-hills" in first.inner_text()
    assert re.search(r"done in [\d.]+ s", first.inner_text())
    original = notebook.image(first)

    first.get_by_role("button", name="Reproduce").click()
    notebook.wait_cards_with_images(cell, 2)
    notebook.shot("04-panel-reproduced", cell)

    newest, older = notebook.cards(cell).nth(0), notebook.cards(cell).nth(1)  # newest first
    assert notebook.seed(newest) == notebook.seed(older) == seed
    assert same_pixels(notebook.image(newest), original)
    assert same_pixels(notebook.image(older), original)
    assert prompt.input_value() == PANEL_PROMPT  # generating keeps the typed text
    assert notebook.problems() == []
    assert console.errors == []


def test_flux_cell_card_then_copy_recipe_into_a_new_cell(notebook, console):
    cell = notebook.cell(1)
    cell.evaluate(RECORD_STATUSES)
    notebook.run_cell(1)

    # The card shows its status before the picture (50 steps at 0.02 s: about a second).
    notebook.page.wait_for_function(
        """cell => {
            const html = cell.querySelector('.widget-html');
            return html && !cell.querySelector('img.widget-image') && html.textContent.trim();
        }""",
        arg=cell.element_handle(),
    )
    notebook.shot("05-flux-status", cell)
    notebook.wait_cards_with_images(cell, 1)
    notebook.shot("06-flux-preview", cell)
    seen = cell.evaluate(
        "() => { window.__fluxStatusObserver.disconnect(); return window.__fluxStatuses; }"
    )
    (notebook.artifacts / "flux-card-statuses.json").write_text(json.dumps(seen, indent=1))
    assert seen and re.match(ACTIVE, seen[0]["text"]) and not seen[0]["image"], seen
    with_image = [entry["text"] for entry in seen if entry["image"]]
    assert with_image and re.match(r"done in [\d.]+ s", with_image[0]), seen

    card = notebook.cards(cell).first
    assert notebook.seed(card) == FLUX_SEED
    assert re.search(r"done in [\d.]+ s", card.inner_text())
    picture = notebook.image(card)

    # Copy recipe: a click cannot make a cell (cards.Card._copy), so the card shows the text.
    card.get_by_role("button", name="Copy recipe").click()
    recipe = card.locator("textarea")
    recipe.wait_for()
    text = recipe.input_value()
    notebook.shot("07-flux-copy-recipe", cell)
    assert text.startswith(f"%%flux --seed {FLUX_SEED} "), text
    assert text.splitlines()[-1] == FLUX_PROMPT

    # ...which a person copies into a new cell below and runs.
    recipe.click()
    notebook.page.keyboard.press("Control+A")
    notebook.page.keyboard.press("Control+C")
    new = notebook.insert_below(1)
    new.locator(".cm-content").click()
    notebook.page.keyboard.press("Control+V")
    notebook.page.wait_for_function(
        "([cell, text]) => cell.querySelector('.cm-content').innerText.trim() === text",
        arg=[new.element_handle(), text.strip()],
    )
    source = notebook.source(2)
    notebook.shot("08-new-cell-with-recipe", new)
    first_line = source.splitlines()[0]
    assert re.match(rf"%%flux .*--seed {FLUX_SEED}\b", first_line), source

    notebook.run_cell(2)
    notebook.wait_cards_with_images(new, 1)
    notebook.shot("09-new-cell-run", new)
    again = notebook.cards(new).first
    assert notebook.seed(again) == FLUX_SEED
    assert same_pixels(notebook.image(again), picture)
    assert notebook.problems() == []
    assert console.errors == []
