"""The widget card driven from Python, without a kernel: buttons do what they say, state lands."""

import base64
import io
import re
import time
import types

import ipywidgets
import pytest
from helpers import data_uri, pixels_equal, png_bytes, run_fresh
from PIL import Image

from flux_nb.core._recipe import Recipe
from flux_nb.files._inputs import to_input_url
from flux_nb.jobs._sessions import Session
from flux_nb.notebook import _card_html as card_html
from flux_nb.notebook import _cards as cards
from flux_nb.notebook._cards import (
    Card,
    card_grid,
    card_stack,
    card_width,
    cards_in,
    generation_mimebundle,
    magic_line,
    wait_settled,
)
from flux_nb.notebook._magic import FluxMagics, _unquote
from flux_nb.notebook._widgets_compat import IPYWIDGETS_MAJOR, tooltip_of, widget_by_id

pytestmark = pytest.mark.colab  # runs in Colab's package set too (.venv-colab)


@pytest.fixture
def slow_session(tmp_path, progress_server):
    """On a server whose steps take visible time (cancel has something to stop) and which sends
    progress events, as the embedded server does, so the bar can follow steps."""
    s = Session(base_url=progress_server.url, output_dir=tmp_path / "slow", announce=None)
    yield s
    s.close()


def text_of(widget_or_html):
    """What an HTML widget (or a piece of HTML) shows as text."""
    value = getattr(widget_or_html, "value", widget_or_html)
    return cards.html.unescape(re.sub(r"<[^>]+>", "", value))


def settle(*gens, timeout=20):
    for gen in gens:
        assert gen._done.wait(timeout)
    assert wait_settled(timeout)


def test_card_follows_its_generation_to_the_thumbnail(session, tmp_path, monkeypatch):
    monkeypatch.chdir(
        tmp_path
    )  # the notebook's folder: the full-size file opens by a relative link
    gen = session.generate("a red fox in snow", seed=5, num_inference_steps=4, aspect_ratio="1:1")
    card = Card(gen, thumbnail_size=128)
    # While it runs: a placeholder box and a progress bar stand where the picture will be.
    running = [card.placeholder, card.progress, card.lines, card.buttons]
    assert card.gen is gen and list(card.children) == running
    assert "aspect-ratio:1/1" in card.placeholder.value
    assert not card.cancel_button.disabled
    assert "<a " not in card.file_link.value  # no file to open yet
    settle(gen)
    assert gen.status == "succeeded"
    assert bytes(card.preview.value) == gen.thumbnail(128)
    shown = Image.open(io.BytesIO(bytes(card.preview.value)))
    assert max(shown.size) == 128
    assert card.preview.format == "png" and shown.format == "PNG"  # flat art: an exact palette
    assert list(card.children) == [card.preview, card.lines, card.buttons]
    assert text_of(card.status_html).startswith("✓ done in ") and gen.path.name in card.status_html
    assert "seed 5" in card.caption_html and "4 steps" in card.caption_html
    # One widget, the status line over the caption, each in a div of its own class.
    assert card.lines.value == card_html.lines(card.status_html, card.caption_html)
    assert re.fullmatch(
        r'<div class="flux-nb-status"><div [^>]*>.*</div></div>'
        r'<div class="flux-nb-caption"><div [^>]*>[^<]*</div></div>',
        card.lines.value,
    )
    assert card.cancel_button.disabled and card.settled.is_set()
    assert f'href="out/{gen.path.name}"' in card.file_link.value


def test_a_finished_card_closes_what_it_no_longer_shows(session):
    """ipywidgets keeps every open widget for the kernel's life: a finished card closes its bar
    and the placeholder its picture replaced, and a card made for a finished generation never
    makes a bar."""
    from ipywidgets.widgets import widget as module

    _instances = module._instances if hasattr(module, "_instances") else module.Widget.widgets

    gen = session.generate("a red fox in snow", seed=5, num_inference_steps=4)
    card = Card(gen, thumbnail_size=128)
    bar, placeholder = card.progress, card.placeholder
    assert bar is not None and placeholder is not None
    ids = {bar.model_id, placeholder.model_id}
    assert ids <= set(_instances)
    settle(gen)
    assert card.progress is None and card.placeholder is None
    assert bar.comm is None and placeholder.comm is None and not ids & set(_instances)
    assert placeholder.value == ""  # a saved notebook keeps a closed model's last state
    again = Card(gen, thumbnail_size=128)
    assert again.progress is None and list(again.children)[0] is again.preview
    assert all(w.comm is not None for w in again.children)


def test_the_card_shows_a_thumbnail_the_runner_made_from_one_decode_before_the_save(slow_session):
    from flux_nb.files._thumbnail import make_thumbnail

    gen = slow_session.generate(
        "a heron at dawn", seed=8, num_inference_steps=3, output_quality="high"
    )
    card = Card(gen, thumbnail_size=128)  # asks for its size before the image is downloaded
    finished_when_shown, status_when_shown = [], []
    card.preview.observe(lambda _: finished_when_shown.append(gen.done), names="value")
    card.preview.observe(
        lambda _: status_when_shown.append(text_of(card.status_html)), names="value"
    )
    settle(gen)
    assert finished_when_shown == [False]  # the picture shows before the file is saved
    assert status_when_shown[0].startswith("saving")  # beside it: saving, not a running step
    assert bytes(card.preview.value) == gen.thumbnail(128)
    # A truecolour picture: a JPEG thumbnail, and the widget told so (a browser shows the bytes
    # by the format it is given).
    assert card.preview.format == "jpeg"
    assert Image.open(io.BytesIO(bytes(card.preview.value))).format == "JPEG"
    assert list(card.children) == [card.preview, card.lines, card.buttons]
    # The download's thread made both sizes from one decode; the card's render decoded nothing.
    from flux_nb.files import _recent as recent

    assert recent.images.get(gen.key) is None and gen._thumb is None
    assert all(recent.thumbnails.get((gen.key, side)) for side in (128, 320))
    assert gen.thumbnail(128) == make_thumbnail(gen.image, 128)  # the same bytes as made on demand
    assert gen.thumbnail() == make_thumbnail(gen.image)


def test_the_ticker_redraws_the_least_recently_drawn_running_cards_first():
    def fake(shown_at, done=False):
        return types.SimpleNamespace(gen=types.SimpleNamespace(done=done), _shown_at=shown_at)

    running = [fake(float(i)) for i in range(40)]
    finished = [fake(-1.0, done=True)]
    picked = cards._to_tick(finished + running[::-1], most=32)
    assert picked == running[:32]  # the oldest drawn 32; a finished card is never redrawn
    assert cards._to_tick(running[:3] + finished) == running[:3]


def test_the_redraw_budget_allows_its_rate_at_once_then_refills_with_time():
    budget = cards._Budget(rate=4)
    assert [budget.take(100.0) for _ in range(5)] == [True, True, True, True, False]
    assert budget.take(100.1) is False  # 0.4 of a redraw earned back: not yet one
    assert budget.take(100.35) is True and budget.take(100.35) is False  # 1.4 earned: one
    assert sum(budget.take(200.0) for _ in range(10)) == 4  # never more than its rate saved up


def test_past_the_budget_a_running_card_waits_for_the_ticker_but_its_end_shows_at_once(
    slow_session, monkeypatch
):
    monkeypatch.setattr(cards, "_live_redraws", cards._Budget(rate=0))  # the budget is spent
    # The ticker's turns are the test's (card.refresh() below): on a loaded machine the wait for
    # "processing" can outlast the ticker's second, and its redraw would look like the budget's.
    monkeypatch.setattr(cards, "_to_tick", lambda running, most=cards.TICK_CARDS: [])
    gen = slow_session.generate("a slow one", seed=5, num_inference_steps=30)
    card = Card(gen)
    first = card.status_html
    deadline = time.monotonic() + 10
    while gen.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gen.status == "processing" and card.status_html == first  # not redrawn yet
    card.refresh()  # the ticker's turn: drawn whatever the budget
    assert text_of(card.status_html).startswith("processing")
    gen.cancel()
    settle(gen)
    assert text_of(card.status_html).startswith("cancelled")


def test_a_file_outside_the_notebook_folder_is_named_not_linked(session):
    gen = session.generate("a dot", seed=2, num_inference_steps=1).wait(20)
    card = Card(gen)
    assert "<a " not in card.file_link.value and str(gen.path) in card.file_link.value


def test_a_card_for_a_finished_generation_is_complete_at_once(session):
    gen = session.generate("a lighthouse", seed=9, num_inference_steps=2).wait(20)
    card = Card(gen)
    assert card.settled.is_set() and bytes(card.preview.value) == gen.thumbnail()


def _open_models() -> set:
    from ipywidgets.widgets import widget as module

    return set(module._instances if hasattr(module, "_instances") else module.Widget.widgets)


# What a finished card keeps open for the kernel's life: itself, the picture, the status and
# caption lines (one widget), the row of four buttons and the Open link. A long session keeps
# every card it showed, so a model more per card is memory more per image
# (benchmarks/long_session.py): some 1.9 KB.
FINISHED_CARD_MODELS = 9


def test_a_finished_card_keeps_nine_widget_models_open(session):
    gen = session.generate("a lighthouse", seed=9, num_inference_steps=2).wait(20)
    card_stack([gen])  # the first makes the layouts and styles every card shares
    before = _open_models()
    card = Card(gen)
    assert card.settled.is_set()
    assert len(_open_models() - before) == FINISHED_CARD_MODELS
    before = _open_models()
    card_stack([gen])
    assert len(_open_models() - before) == FINISHED_CARD_MODELS + 1  # and its grid


# Run in a fresh interpreter: in the shared pytest process, threads other tests left behind
# allocate during the window and move the figure.
RETAINED_PER_CARD = r"""
import gc, json, sys, tracemalloc
from flux_nb.core._config import Settings
from flux_nb.jobs._sessions import Session
from flux_nb.notebook._cards import Card

session = Session("local", output_dir=sys.argv[1], settings=Settings(step_delay=0.0), announce=None)
try:
    gen = session.generate("a lighthouse", seed=9, num_inference_steps=2).wait(60)
    Card(gen)  # the first: shared layouts and styles, the thumbnail, the classes' caches
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    kept = [Card(gen) for _ in range(20)]
    gc.collect()
    per_card = (tracemalloc.get_traced_memory()[0] - start) / len(kept)
    tracemalloc.stop()
    settled = all(card.settled.is_set() for card in kept)
finally:
    session.close()
print(json.dumps({"status": gen.status, "settled": settled, "per_card": per_card}))
"""


def test_a_finished_card_retains_a_few_kilobytes_beside_its_thumbnail(tmp_path):
    """Measured with tracemalloc in a fresh process: cards of a finished generation made, then
    the bytes still held with them kept (the thumbnail is the generation's, shared by every
    card)."""
    found = run_fresh(RETAINED_PER_CARD, str(tmp_path / "out"))
    assert found["status"] == "succeeded" and found["settled"]
    per_card = found["per_card"]
    # Measured: 22 KB with ipywidgets 8 (23.5 KB with ten models a card, 35 KB before lean
    # widgets shared their per-instance objects), 33 KB with ipywidgets 7, whose comms are
    # heavier (36 KB with ten models, 47 KB before lean widgets).
    bound = 28 if IPYWIDGETS_MAJOR >= 8 else 40
    assert per_card < bound * 1024, f"{per_card:.0f} bytes retained per finished card"


def test_reproduce_and_new_seed_buttons_make_new_generations(session):
    gen = session.generate("a cabin by a lake", seed=99, num_inference_steps=4)
    made = []
    card = Card(gen, on_new=made.append)
    card.reproduce_button.click()
    card.vary_button.click()
    assert len(made) == 2
    again, other = made
    assert again.recipe == gen.recipe and other.seed != 99
    assert other.recipe == gen.recipe.with_seed(other.seed)
    settle(gen, again, other)
    assert pixels_equal(gen.image, again.image)
    assert not pixels_equal(gen.image, other.image)


def test_without_on_new_the_card_says_it_started_one(session):
    gen = session.generate("a kite", seed=1, num_inference_steps=2)
    card = Card(gen)
    card.reproduce_button.click()
    notice = card.children[-1]
    assert isinstance(notice, ipywidgets.HTML) and "seed 1" in notice.value
    settle(gen)


def test_cancel_button_stops_it_and_the_card_says_so(slow_session):
    gen = slow_session.generate("a long exposure of stars", seed=3, num_inference_steps=50)
    card = Card(gen)
    card.cancel_button.click()
    settle(gen)
    assert gen.status == "cancelled"
    assert "cancelled" in card.status_html and card.cancel_button.disabled
    assert len(card.preview.value) == 0 and card.preview not in card.children
    assert card.progress not in card.children and card.placeholder in card.children
    assert "cancelled" in text_of(card.placeholder)


def test_a_failed_generation_shows_the_reason(session):
    gen = session.generate(
        "edit this", input_image="http://127.0.0.1:9/missing.png", num_inference_steps=2
    )
    card = Card(gen)
    settle(gen)
    assert gen.status == "failed" and gen.reason
    assert "failed: " in card.status_html and cards.html.escape(gen.reason) in card.status_html
    # One line on the card (cut with an ellipsis, whole in the tooltip); the box says it in full.
    assert "white-space:nowrap" in card.status_html and "text-overflow:ellipsis" in card.status_html
    assert cards.html.escape(gen.reason) in card.placeholder.value
    assert card_html.ERROR_COLOR in card.placeholder.value


def test_the_ticker_refreshes_running_cards(slow_session):
    gen = slow_session.generate("a slow one", seed=4, num_inference_steps=30)
    card = Card(gen)
    assert card in cards._ticker.snapshot()
    card.refresh()
    assert text_of(card.status_html).startswith(("submitting", "queued", "processing"))
    assert 0.0 <= card.progress.value < 1.0
    gen.cancel()
    settle(gen)
    assert card not in cards._ticker.snapshot()


class FakeShell:
    """Stands in for IPython's shell: records set_next_input; the kernel says which request runs."""

    def __init__(self, msg_type):
        self.inputs = []
        self.kernel = types.SimpleNamespace(
            get_parent=lambda channel: {"header": {"msg_type": msg_type}}
        )

    def set_next_input(self, text, replace=False):
        self.inputs.append((text, replace))


def test_copy_recipe_from_code_puts_the_cell_below(session, monkeypatch):
    gen = session.generate("a teapot", seed=12, num_inference_steps=3, aspect_ratio="4:3")
    shell = FakeShell("execute_request")
    monkeypatch.setattr(cards, "_shell", lambda: shell)
    Card(gen).copy_button.click()
    assert shell.inputs == [(magic_line(gen.recipe), False)]
    settle(gen)


def test_copy_recipe_clicked_in_a_browser_shows_the_text(session, monkeypatch):
    # A click arrives as a comm message: set_next_input would land under the next cell run.
    gen = session.generate("a teapot", seed=12, num_inference_steps=3)
    shell = FakeShell("comm_msg")
    monkeypatch.setattr(cards, "_shell", lambda: shell)
    card = Card(gen)
    card.copy_button.click()
    box = card.children[-1]
    assert shell.inputs == [] and isinstance(box, ipywidgets.Textarea)
    assert box.value == magic_line(gen.recipe)
    settle(gen)


def parse_line(text):
    """The recipe a copied %%flux cell makes, through the magic's own parser (no kernel needed)."""
    line, _, prompt = text.partition("\n")
    assert line.startswith("%%flux ")
    args = FluxMagics(shell=None)._parse(
        line[len("%%flux ") :].replace("{{", "{").replace("}}", "}")
    )
    images = [to_input_url(_unquote(s)) for s in args.image]
    return Recipe.build(
        prompt,
        seed=args.seed,
        aspect_ratio=args.aspect_ratio,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        output_quality=args.output_quality,
        output_format=args.output_format,
        input_image=images or None,
    )


def test_magic_line_remakes_the_recipe_exactly(tmp_path):
    png = png_bytes((32, 24))
    uri = data_uri(png)
    recipe = Recipe.build(
        "two lines\nof prompt",
        seed=4242,
        aspect_ratio="9:16",
        num_inference_steps=7,
        guidance_scale=3.25,
        output_quality="high",
        output_format="webp",
        input_image=[uri, "https://example.com/a b.png"],
    )
    inputs = tmp_path / "my out" / ".inputs"
    text = magic_line(recipe, inputs_dir=inputs)
    assert text.startswith(
        "%%flux --seed 4242 --aspect 9:16 --steps 7 --guidance 3.25 --quality high --format webp"
    )
    assert text.endswith("\ntwo lines\nof prompt")
    (saved,) = inputs.iterdir()
    assert saved.suffix == ".png" and saved.read_bytes() == png
    assert parse_line(text) == recipe


def test_magic_line_doubles_what_ipython_would_expand(tmp_path):
    recipe = Recipe.build("x", seed=1, input_image=["https://example.com/$HOME/{a}.png"])
    line = magic_line(recipe, inputs_dir=tmp_path).splitlines()[0]
    assert "--image https://example.com/$$HOME/{{a}}.png" in line


def test_generation_mimebundle_has_widget_png_and_stable_text(session):
    gen = session.generate("a lantern", seed=8, num_inference_steps=2).wait(20)
    plain = generation_mimebundle(gen, widget=False)
    assert set(plain) == {"text/plain", "image/png"}
    assert base64.b64decode(plain["image/png"]) == gen.thumbnail()
    assert plain["text/plain"] == f"'a lantern'\n{gen.recipe.summary()}\ndone"  # no ids or timings
    rich = generation_mimebundle(gen, widget=True)
    view = widget_by_id(rich[cards.WIDGET_VIEW]["model_id"])
    assert [c.gen for c in cards_in(view)] == [gen]
    assert rich["image/png"] == plain["image/png"]


def test_card_stack_grows_under_the_first_cards(session):
    gens = session.generate("a row of houses", 3, seed=20, num_inference_steps=2)
    seen = []
    box = card_stack(gens, on_new=seen.append)
    assert isinstance(box, ipywidgets.GridBox) and [c.gen for c in cards_in(box)] == gens
    cards_in(box)[1].reproduce_button.click()
    assert len(box.children) == 4 and box.children[3].gen is seen[0]
    box.children[3].vary_button.click()  # the new card's buttons grow the same grid
    assert len(box.children) == 5 and len(seen) == 2
    settle(*gens, *seen)
    assert seen[0].recipe == gens[1].recipe


def test_card_grid_fits_its_cards(session):
    gen = session.generate("a dot", seed=2, num_inference_steps=1)
    grid = card_grid([Card(gen, thumbnail_size=400)])
    assert grid.layout.grid_template_columns == f"repeat(auto-fill, {400 + 18}px)"
    small = card_grid([Card(gen, thumbnail_size=128)])  # never narrower than the buttons need
    assert small.layout.grid_template_columns == f"repeat(auto-fill, {card_width(128)}px)"
    assert card_width(128) == cards.MIN_CARD_CONTENT + 18
    settle(gen)


def test_extra_buttons_sit_with_the_others(session):
    gen = session.generate("a dot", seed=2, num_inference_steps=1)
    extra = ipywidgets.Button(description="Use as input")
    card = Card(gen, extra_buttons=[extra])
    assert card.buttons.children[-2:] == (extra, card.file_link)
    assert [b.description for b in card.buttons.children[:4]] == ["Rerun", "Vary", "Copy", "Cancel"]
    assert all(tooltip_of(b) and b.icon for b in card.buttons.children[:4])
    settle(gen)


def test_the_bar_follows_the_steps_the_local_server_reports(slow_session):
    gen = slow_session.generate("a slow one", seed=4, num_inference_steps=40)
    card = Card(gen)
    assert gen._done.wait(0) is False
    deadline = cards.time.monotonic() + 20
    while not (gen.progress and gen.progress[0] >= 2) and cards.time.monotonic() < deadline:
        cards.time.sleep(0.02)
    card.refresh()
    step, total = gen.progress
    assert total == 40 and card.progress.bar_style == ""
    assert card.progress.value == pytest.approx(step / total)
    assert re.match(r"processing · step \d+/40 · \d+ s$", text_of(card.status_html))
    gen.cancel()
    settle(gen)


def test_without_step_progress_the_bar_fills_with_elapsed_time():
    # The hosted API reports no steps: the bar grows with time and never reaches the end.
    def at(seconds, status="processing"):
        gen = types.SimpleNamespace(progress=None, elapsed=seconds, status=status)
        return card_html.progress(gen, typical=10.0)

    (early, style), (late, _), (very_late, _) = at(1.0), at(10.0), at(600.0)
    assert style == "info" and 0 < early < late < very_late <= 0.95
    assert at(10.0, "queued")[0] < late  # waiting in the queue fills more slowly


def test_the_status_and_caption_lines_come_apart_as_they_went_in():
    status = card_html.line(
        '<span style="color:green">&#10003;</span> done in 1.0 s · <span>a</span>', "done\n</div>"
    )
    caption = card_html.line(card_html.esc("seed 1 · </div></div> · 2 steps"), "x", "grey")
    assert card_html.split_lines(card_html.lines(status, caption)) == (status, caption)


def test_a_running_cards_status_redraws_keep_the_caption_it_shows(slow_session):
    gen = slow_session.generate("a slow one", seed=4, num_inference_steps=30)
    card = Card(gen)
    shown = card.caption_html
    card.lines.value = card_html.lines(card.status_html, shown.replace("seed 4", "seed 4 (x)"))
    deadline = time.monotonic() + 20
    while gen.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.01)
    card.refresh()
    assert text_of(card.status_html).startswith("processing")
    assert "seed 4 (x)" in card.caption_html  # left as it was until the end
    gen.cancel()
    settle(gen)
    assert card.caption_html == card_html.caption(gen, cards.caption(gen))


def test_placeholder_has_the_recipes_shape():
    for ratio, box in (("16:9", "16/9"), ("9:16", "9/16"), ("1:1", "1/1")):
        gen = types.SimpleNamespace(
            recipe=Recipe.build("x", aspect_ratio=ratio), status="queued", reason=""
        )
        assert f"aspect-ratio:{box}" in card_html.placeholder(gen)
