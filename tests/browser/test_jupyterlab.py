"""flux-nb in JupyterLab, driven in headless Chromium as a person would (issue 6).

The notebook (conftest.CELLS) holds `%load_ext flux_nb` with a Panel, then a `%%flux` cell. Each
step leaves a screenshot in test-artifacts/browser/. Run through scripts/test.sh, which makes the
browser environment; see conftest.py.
"""

from __future__ import annotations

import json
import re
import statistics
import time

import pytest

pytest.importorskip(
    "playwright.sync_api",
    reason=(
        "browser test NOT RUN: playwright is not installed here; scripts/test.sh runs it in"
        " .venv-browser"
    ),
)

from conftest import (  # noqa: E402
    FAILED_CELL,
    GRID_CELL,
    NOTEBOOK,
    SERVER_TIMES_CELL,
    TIMING_SAMPLES,
)
from notebook_page import CARD, STATUS, NotebookPage, same_pixels  # noqa: E402

pytestmark = pytest.mark.browser

PANEL_PROMPT = "a red kite over green hills"
FLUX_SEED = 4242
FLUX_PROMPT = "a lighthouse on a cliff at dusk"
# Generate's click to one more preview loaded in an <img> of the panel's gallery than at the
# click, measured in the page (performance.now()).
GENERATE_TO_PREVIEW = """() => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[0];
    const imgs = [...cell.querySelectorAll('.flux-nb-card img.widget-image')];
    const loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
    return window.__fluxGenerateClick !== undefined && loaded > window.__fluxImagesAtClick
        && performance.now() - window.__fluxGenerateClick;
}"""
# Every text the first status line of a cell's card shows, in order, and whether a preview was
# on screen at the time.
RECORD_STATUSES = """cell => {
    const seen = window.__fluxStatuses = [];
    const record = () => {
        const html = cell.querySelector('.flux-nb-status');
        const text = html && html.textContent.trim();
        const image = !!cell.querySelector('img.widget-image');
        const last = seen[seen.length - 1];
        if (text && !(last && last.text === text && last.image === image)) seen.push({text, image});
    };
    window.__fluxStatusObserver = new MutationObserver(record);
    window.__fluxStatusObserver.observe(
        cell, {subtree: true, childList: true, characterData: true});
}"""
ACTIVE = r"(submitting|queued|processing)\b"  # jobs.ACTIVE: still running
MARK_GENERATE_CLICK = """() => window.__fluxMarked || (window.__fluxMarked = true)
    && document.addEventListener('click', event => {
    const button = event.target.closest('button');
    if (button && button.textContent.trim() === 'Generate') {
        window.__fluxGenerateClick = performance.now();
        window.__fluxClickEpoch = performance.timeOrigin + window.__fluxGenerateClick;
        const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[0];
        window.__fluxImagesAtClick = [...cell.querySelectorAll('.flux-nb-card img.widget-image')]
            .filter(i => i.complete && i.naturalWidth > 0).length;
    }
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

    first.get_by_role("button", name="Rerun").click()
    notebook.wait_cards_with_images(cell, 2)
    notebook.shot("04-panel-reproduced", cell)

    newest, older = notebook.cards(cell).nth(0), notebook.cards(cell).nth(1)  # newest first
    assert notebook.seed(newest) == notebook.seed(older) == seed
    assert same_pixels(notebook.image(newest), original)
    assert same_pixels(notebook.image(older), original)
    assert prompt.input_value() == PANEL_PROMPT  # generating keeps the typed text
    assert notebook.problems() == []
    assert console.errors == []


def saved_output(notebook: NotebookPage, path, index: int, timeout: float = 10.0) -> dict:
    """Save the notebook from the page (File > Save Notebook) until the file's cell `index`
    shows a picture; returns that output's data as written to disk."""
    deadline = time.monotonic() + timeout
    while True:
        notebook.menu("File", "Save Notebook")
        time.sleep(0.3)
        outputs = json.loads(path.read_text())["cells"][index]["outputs"]
        data = outputs[0].get("data", {}) if outputs else {}
        if {"image/png", "image/jpeg"} & set(data) or time.monotonic() > deadline:
            return data


def test_flux_cell_card_then_copy_recipe_into_a_new_cell(notebook, console, lab):
    cell = notebook.cell(1)
    cell.evaluate(RECORD_STATUSES)
    notebook.run_cell(1)

    # The card shows its status before the picture (50 steps at 0.02 s: about a second).
    notebook.page.wait_for_function(
        """cell => {
            const html = cell.querySelector('.flux-nb-status');
            return html && !cell.querySelector('img.widget-image') && html.textContent.trim();
        }""",
        arg=cell.element_handle(),
    )
    notebook.shot("05-flux-status", cell)
    notebook.wait_cards_with_images(cell, 1)
    notebook.shot("06-flux-preview", cell)
    # No cell ran since: the page applied the output's display update as it came, so the file
    # JupyterLab saves shows the final caption and picture beside the widget view.
    saved = saved_output(notebook, lab.root / NOTEBOOK, 1)
    text = "".join(saved.get("text/plain", ""))  # a list of lines in the file
    # A photograph's thumbnail is a JPEG: the widget drew it from format "jpeg" and the file
    # keeps it as image/jpeg.
    assert "image/jpeg" in saved and text.endswith("\ndone"), (saved.keys(), text)
    assert notebook.image(notebook.cards(cell).first).format == "JPEG"
    assert "application/vnd.jupyter.widget-view+json" in saved
    seen = cell.evaluate(
        "() => { window.__fluxStatusObserver.disconnect(); return window.__fluxStatuses; }"
    )
    (notebook.artifacts / "flux-card-statuses.json").write_text(json.dumps(seen, indent=1))
    assert seen and re.match(ACTIVE, seen[0]["text"]) and not seen[0]["image"], seen
    with_image = [entry["text"] for entry in seen if entry["image"]]
    # The picture shows as soon as it is downloaded, while its file is written ("saving"), then
    # the card says done: never a running step beside the picture.
    assert with_image and re.match(r"✓ done in [\d.]+ s", with_image[-1]), seen
    assert all(text.startswith("saving") for text in with_image[:-1]), seen

    card = notebook.cards(cell).first
    assert notebook.seed(card) == FLUX_SEED
    assert re.search(r"done in [\d.]+ s", card.inner_text())
    picture = notebook.image(card)

    # Copy recipe: a click cannot make a cell (cards.Card._copy), so the card shows the text.
    card.get_by_role("button", name="Copy").click()
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


TARGET_ADDED_MS = 150
REGRESSION_MS = 1000


def test_generate_click_to_preview_beside_the_servers_own_time(notebook, timings, console):
    """What the page adds (kernel, client, event stream, download, save, thumbnail, widget
    messages, drawing) over the server's own time for the same generation; target: under
    TARGET_ADDED_MS at the median. Printed in the summary and saved in timings.json."""
    cell = notebook.panel_cell
    notebook.page.evaluate(MARK_GENERATE_CLICK)
    page_ms, clicks = [], []
    for _ in range(TIMING_SAMPLES):
        before = notebook.cards(cell).count()
        cell.get_by_role("button", name="Generate").click()
        page_ms.append(
            notebook.page.wait_for_function(GENERATE_TO_PREVIEW, timeout=30_000).json_value()
        )
        clicks.append(notebook.page.evaluate("() => window.__fluxClickEpoch"))
        notebook.wait_cards_with_images(cell, before + 1)
    index = notebook.index_of(SERVER_TIMES_CELL.replace("SAMPLES", str(TIMING_SAMPLES)))
    notebook.run_cell(index)
    output = notebook.cell(index).locator(".jp-OutputArea-output")
    output.wait_for()
    server_ms, created, finished = zip(*json.loads(output.inner_text()), strict=True)
    assert len(server_ms) == TIMING_SAMPLES
    added = [p - s for p, s in zip(page_ms, server_ms, strict=True)]
    # The same machine's clock in the page (performance.timeOrigin) and in the kernel (time.time).
    shown = [c + p for c, p in zip(clicks, page_ms, strict=True)]
    for name, values in (
        ("Generate click -> preview on screen (ms)", page_ms),
        ("server's own time, POST -> row terminal (ms)", server_ms),
        (
            "click -> Generation made in the kernel (ms)",
            [k - c for k, c in zip(created, clicks, strict=True)],
        ),
        (
            "kernel: Generation made -> image saved (ms)",
            [f - k for f, k in zip(finished, created, strict=True)],
        ),
        (
            "image saved -> preview on screen (ms)",
            [s - f for s, f in zip(shown, finished, strict=True)],
        ),
        ("page adds: click->preview minus server (ms)", added),
    ):
        for value in values:
            timings.add(name, value)
    median = statistics.median(added)
    timings.add(f"page adds, median (ms; target {TARGET_ADDED_MS})", median)
    # The figure is reported against the target; the test fails only on a real regression
    # (a preview that lags its image by a second), not on a busy shared machine's noise.
    assert median < REGRESSION_MS, f"the page adds {median:.0f} ms at the median: {added}"
    assert console.errors == []


def _layout(cell) -> dict:
    """Where a cell's cards and their parts sit on screen, and the colours they are drawn in."""
    return cell.evaluate(
        """(cell, [card, status]) => [...cell.querySelectorAll(card)].map(c => {
            const box = c.getBoundingClientRect();
            const line = c.querySelector(status);
            const text = line.firstElementChild || line;
            const buttons = [...c.querySelectorAll(
                '.widget-hbox > .widget-button, .widget-hbox > .widget-html')];
            const media = c.querySelector('.flux-nb-placeholder > div, img.widget-image');
            const m = media.getBoundingClientRect();
            return {
                x: Math.round(box.left), y: Math.round(box.top), width: box.width,
                buttonTops: buttons.map(b => Math.round(b.getBoundingClientRect().top)),
                buttonsRight: Math.max(...buttons.map(b => b.getBoundingClientRect().right)),
                statusHeight: line.getBoundingClientRect().height,
                mediaRatio: m.width / m.height,
                color: getComputedStyle(text).color,
                bar: !!c.querySelector('.widget-hprogress, .progress'),
            };
        })""",
        [CARD, STATUS],
    )


def _luminance(css: str) -> float:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def _check_cards(cards, light: bool, columns: int = 1) -> None:
    for card in cards:
        assert len(set(card["buttonTops"])) == 1, card  # the buttons in one row
        assert card["buttonsRight"] <= card["x"] + card["width"], card  # inside the card
        assert card["statusHeight"] < 30, card  # one line, cut with an ellipsis
        assert (_luminance(card["color"]) < 0.5) == light, card  # readable on the theme
    assert len({card["x"] for card in cards}) >= min(columns, len(cards)), cards


def _run_grid(notebook, prefix: str, light: bool) -> None:
    """The -n 4 cell: cards with placeholders and bars while running, then a grid of pictures."""
    index = notebook.index_of(GRID_CELL)
    cell = notebook.cell(index)
    notebook.run_cell(index)
    cell.locator(f"{CARD} .flux-nb-placeholder").nth(3).wait_for()
    notebook.shot(f"{prefix}-grid-running", cell)
    running = _layout(cell)
    assert len(running) == 4 and any(card["bar"] for card in running), running
    assert any(abs(c["mediaRatio"] - 16 / 9) < 0.05 for c in running), running
    notebook.wait_cards_with_images(cell, 4)
    notebook.shot(f"{prefix}-grid", cell)
    done = _layout(cell)
    assert not any(card["bar"] for card in done)
    _check_cards(done, light, columns=2)
    assert all(abs(c["mediaRatio"] - 16 / 9) < 0.05 for c in done), done


def _run_failed(notebook, prefix: str, light: bool) -> None:
    index = notebook.index_of(FAILED_CELL)
    cell = notebook.cell(index)
    notebook.run_cell(index)
    # Looked up at each check: the status line is redrawn (a new element) with each change.
    notebook.page.wait_for_function(
        "([cell, status]) => (cell.querySelector(status) || {textContent: ''})"
        ".textContent.includes('failed')",
        arg=[cell.element_handle(), STATUS],
    )
    notebook.shot(f"{prefix}-failed", cell)
    text = notebook.cards(cell).first.inner_text()
    assert "failed" in text and "not a readable image" in text, text  # why, on the card
    (card,) = _layout(cell)
    assert card["statusHeight"] < 30 and len(set(card["buttonTops"])) == 1, card


def test_grid_running_and_failed_cards_and_the_panel_in_light_and_dark(notebook, console):
    _run_grid(notebook, "10-light", light=True)
    _run_failed(notebook, "11-light", light=True)
    notebook.shot("12-light-panel", notebook.panel_cell)
    _check_cards(_layout(notebook.panel_cell), light=True, columns=3)

    notebook.set_theme("JupyterLab Dark")
    try:
        notebook.shot("20-dark-panel", notebook.panel_cell)
        _check_cards(_layout(notebook.panel_cell), light=False, columns=3)
        _run_failed(notebook, "21-dark", light=False)
        _run_grid(notebook, "22-dark", light=False)
    finally:
        notebook.set_theme("JupyterLab Light")
    assert notebook.problems() == []
    assert console.errors == []


# VS Code's Jupyter renderer (shared notes, colab-notes.md): JupyterLab's light --jp-* values
# whatever the editor's theme, and a forced white background behind widget outputs
# (.cell-output-ipywidget-background). Applied over JupyterLab Dark, so nothing else is light.
VSCODE_LIGHT = """.jp-OutputArea-output {
    background-color: white !important;
    --jp-ui-font-color0: rgba(0, 0, 0, 1); --jp-ui-font-color1: rgba(0, 0, 0, 0.87);
    --jp-ui-font-color2: rgba(0, 0, 0, 0.54); --jp-ui-font-color3: rgba(0, 0, 0, 0.38);
    --jp-content-font-color1: rgba(0, 0, 0, 0.87);
    --jp-layout-color0: white; --jp-layout-color1: white; --jp-layout-color2: #eeeeee;
    --jp-border-color1: #bdbdbd; --jp-border-color2: #e0e0e0;
    --jp-error-color1: #d32f2f; --jp-success-color1: #388e3c;
    --jp-widgets-color: black; --jp-widgets-label-color: black;
    --jp-widgets-input-color: black; --jp-widgets-input-background-color: white;
}"""
# On top of it, flux-nb's own variables undefined: what their fallbacks draw.
UNDEFINED = (
    "--jp-ui-font-color1", "--jp-ui-font-color2", "--jp-error-color1", "--jp-success-color1",
    "--jp-layout-color2", "--jp-border-color2",
)  # fmt: skip
FALLBACKS = ".jp-OutputArea-output { " + " ".join(f"{v}: initial;" for v in UNDEFINED) + " }"


def _own_colours(cell) -> list[str]:
    """The computed colour of every element of the cards that sets its own colour (flux-nb's
    HTML: status, caption, placeholder, the Open link)."""
    return cell.evaluate(
        """cell => [...cell.querySelectorAll('.flux-nb-card [style*="color"]')]
            .map(el => getComputedStyle(el).color)"""
    )


def _background(cell) -> str:
    return cell.evaluate(
        "cell => getComputedStyle(cell.querySelector('.jp-OutputArea-output')).backgroundColor"
    )


def test_cards_and_panel_read_on_vs_codes_forced_white_background(notebook, console):
    notebook.set_theme("JupyterLab Dark")
    try:
        failed = notebook.cell(notebook.index_of(FAILED_CELL))
        for name, sheets in (
            ("40-vscode", [VSCODE_LIGHT]),
            ("41-fallbacks", [VSCODE_LIGHT, FALLBACKS]),
        ):
            styles = [notebook.page.add_style_tag(content=css) for css in sheets]
            try:
                assert _background(notebook.panel_cell) == "rgb(255, 255, 255)"
                notebook.shot(f"{name}-panel", notebook.panel_cell)
                notebook.shot(f"{name}-failed", failed)
                _check_cards(_layout(notebook.panel_cell), light=True, columns=3)
                _check_cards(_layout(failed), light=True)
                colours = _own_colours(notebook.panel_cell) + _own_colours(failed)
                assert len(colours) > 10 and all(_luminance(c) < 0.5 for c in colours), colours
            finally:
                for style in styles:
                    style.evaluate("el => el.remove()")
    finally:
        notebook.set_theme("JupyterLab Light")
    assert console.errors == []


def test_notebook_7_shows_the_panel_the_grid_and_a_failed_card(
    notebook7, browser, artifacts, console
):
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.on("console", console.on_message)
        page.on("pageerror", console.on_page_error)
        nb = NotebookPage(page, artifacts)
        nb.open(notebook7.notebook_url(NOTEBOOK), kind="notebook")
        nb.shot("30-nb7-opened")
        # Notebook 7's own start-up may log an error before any cell runs (seen: "Cannot read
        # properties of undefined (reading 'schema')"); only errors from here on are ours.
        at_open = len(console.errors)
        nb.run_cell(0)
        nb.shot("30-nb7-run")
        nb.panel_cell.get_by_role("button", name="Generate").wait_for()
        assert "offline preview engine" in nb.panel_cell.inner_text()
        nb.shot("30-nb7-panel", nb.panel_cell)
        _run_grid(nb, "31-nb7", light=True)
        _run_failed(nb, "32-nb7", light=True)
        assert nb.problems() == []
        assert console.errors[at_open:] == []
    finally:
        context.close()
