"""A JupyterLab notebook in a Playwright page, used by what a person sees: menus, visible labels,
the cards' text and pictures. Every wait is on the page's state, never a fixed sleep."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import Locator, Page

# A card (cards.Card) and its one-line status, by the classes the card gives them (the status
# line is a div inside the card's lines widget, redrawn with each change: look it up each time).
CARD = ".flux-nb-card"
STATUS = ".flux-nb-status"
# The bytes the page shows in an <img>: ipywidgets' Image sets a blob: URL.
IMAGE_BYTES = """async img => {
    const data = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let text = '';
    for (const byte of data) text += String.fromCharCode(byte);
    return btoa(text);
}"""
SEED = re.compile(r"\bseed (\d+)\b")


class NotebookPage:
    def __init__(self, page: Page, artifacts: Path):
        self.page = page
        self.artifacts = artifacts

    # -- JupyterLab --------------------------------------------------------------------------------

    def open(self, url: str, kind: str = "lab") -> None:
        """Load the notebook and wait until its kernel is idle; fold the file browser away.
        Notebook 7 (kind "notebook") has no status bar and no side bar to fold."""
        self.page.goto(url)
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        if kind != "lab":
            self.page.locator(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']"
            ).first.wait_for()
            return
        self.page.get_by_text("| Idle").wait_for()  # status bar: "Python 3 (ipykernel) | Idle"
        left = self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if left.count():
            left.first.click()
            self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").wait_for(
                state="detached"
            )

    @property
    def cells(self) -> Locator:
        return self.page.locator(".jp-Notebook .jp-Cell")

    def cell(self, index: int) -> Locator:
        return self.cells.nth(index)

    @property
    def panel_cell(self) -> Locator:
        return self.cell(0)

    def index_of(self, source: str) -> int:
        """The position of the cell whose text is `source` (cells move as others are inserted)."""
        texts = self.page.locator(
            ".jp-Notebook .jp-Cell .jp-InputArea .cm-content"
        ).all_inner_texts()
        for index, text in enumerate(texts):
            if text.strip() == source.strip():
                return index
        raise AssertionError(f"no cell holds {source.splitlines()[0]!r}")

    def set_theme(self, theme: str) -> None:
        """Switch JupyterLab's theme ("JupyterLab Light" / "JupyterLab Dark") and wait for it."""
        light = "true" if "Light" in theme else "false"
        self.page.get_by_role("menuitem", name="Settings", exact=True).click()
        self.page.locator(".lm-Menu-item").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$"))
        ).hover()
        self.page.locator(".lm-Menu-item:not(.lm-mod-disabled)").filter(
            has=self.page.locator(
                ".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(theme)}$")
            )
        ).click()
        self.page.wait_for_function(
            "light => document.body.dataset.jpThemeLight === light", arg=light
        )
        self.page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )

    def select(self, index: int) -> None:
        """Click the cell's prompt area, as a person selects a cell (command mode)."""
        self.cell(index).locator(".jp-InputArea-prompt").click()
        self.page.locator(".jp-Notebook .jp-Cell.jp-mod-active").and_(self.cell(index)).wait_for()

    def menu(self, menu: str, item: str) -> None:
        self.page.get_by_role("menuitem", name=menu, exact=True).click()
        self.page.locator(".lm-Menu-item:not(.lm-mod-disabled)").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$"))
        ).click()

    def run_cell(self, index: int) -> None:
        """Select the cell and use Run > Run Selected Cell and Do not Advance (keyboard shortcuts
        right after the page loads were seen to lose the first key press)."""
        self.select(index)
        self.menu("Run", "Run Selected Cell and Do not Advance")

    def insert_below(self, index: int) -> Locator:
        """The cell toolbar's "Insert a cell below" on cell `index`; returns the new cell."""
        count = self.cells.count()
        self.select(index)
        self.cell(index).get_by_title("Insert a cell below").click()
        self.page.wait_for_function(
            "n => document.querySelectorAll('.jp-Notebook .jp-Cell').length > n", arg=count
        )
        return self.cell(index + 1)

    def source(self, index: int) -> str:
        """The text of a cell as its editor shows it."""
        return self.cell(index).locator(".cm-content").inner_text()

    def shot(self, name: str, focus: Locator | None = None) -> Path:
        """Screenshot of the page (after scrolling `focus` into view) as
        test-artifacts/browser/NAME.png."""
        if focus is not None:
            focus.scroll_into_view_if_needed()
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def problems(self) -> list[str]:
        """What a person would see as trouble: toasts, dialogs, stderr or error outputs, and the
        panel's own error line."""
        found = []
        for selector, what in (
            (".Toastify__toast", "a notification toast"),
            (".jp-Dialog", "a dialog"),
            (
                "[data-mime-type='application/vnd.jupyter.stderr']",
                "stderr or a traceback in a cell",
            ),
            (".widget-html [role=alert]", "an error line in the panel or a card"),
        ):
            for text in self.page.locator(selector).all_inner_texts():
                found.append(f"{what}: {text.strip()[:300]}")
        return found

    # -- flux-nb cards -----------------------------------------------------------------------------

    def cards(self, cell: Locator) -> Locator:
        return cell.locator(CARD)

    def wait_cards_with_images(self, cell: Locator, count: int) -> None:
        """Until the cell holds `count` cards and every one shows a loaded preview."""
        cell.locator(CARD).nth(count - 1).locator("img.widget-image").wait_for()
        cell.evaluate(
            """(cell, n) => new Promise(done => {
                const check = () => {
                    const imgs = [...cell.querySelectorAll('img.widget-image')];
                    if (imgs.length >= n
                        && imgs.every(i => i.complete && i.naturalWidth > 0)) done();
                    else requestAnimationFrame(check);
                };
                check();
            })""",
            count,
        )

    def image(self, card: Locator) -> Image.Image:
        """The preview the card shows, decoded from the bytes the page holds."""
        data = base64.b64decode(card.locator("img.widget-image").evaluate(IMAGE_BYTES))
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    @staticmethod
    def seed(card: Locator) -> int:
        match = SEED.search(card.inner_text())
        assert match, f"no seed on the card: {card.inner_text()!r}"
        return int(match.group(1))


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()
