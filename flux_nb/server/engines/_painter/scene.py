"""The offline preview engine's picture: a flat, poster-style landscape drawn from prompt and seed.

The seed fixes the composition (horizon, ridges, where the sun, clouds and subject sit), so the same
seed with another prompt keeps its layout and changes mood, colours and objects, much as a seed
does for a diffusion model. The prompt picks the mood, the elements and the subject it recognises.

Drawing is in relative coordinates, so one scene can be drawn at any resolution. The land is laid
out in "height units" from the centre of the frame, so a wider aspect ratio shows more of the same
landscape instead of stretching it; objects are sized by the picture's area, so they look alike in
portrait and landscape. Everything is drawn as palette indices into an 'L' image (see
palette.py) with Pillow's C primitives only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

from .palette import (
    AUTUMN_FOLIAGE,
    AUTUMN_LAND,
    GLOW1,
    GLOW2,
    GLOW_N,
    MOODS,
    RGB,
    SKY,
    SKY_N,
    SUBJECT_COLOURS,
    WATER,
    WATER_N,
    Palette,
    digest,
    mix,
    read_prompt,
    rotate,
    tint,
    word_colour,
)

SPAN = 1.25  # the land is generated over x in [-SPAN, SPAN] height units (16:9 shows +-0.875)
LIT_MOODS = ("night", "dusk", "neon", "storm")  # windows and lamps are lit


def rng_for(*parts: object) -> random.Random:
    """A private RNG seeded from sha256 of the parts: the same in every process."""
    return random.Random(int.from_bytes(digest(*parts)[:8], "big"))


@dataclass
class Layout:
    """Everything the seed decides, drawn in a fixed order so any prompt sees the same numbers."""

    horizon: float
    sun_x: float
    sun_lift: float
    sun_r: float
    ridge_seeds: tuple[int, ...]
    mountain_amp: float
    hill_amps: tuple[float, ...]
    subject_x: float
    facing: int
    clouds: tuple[tuple[float, float, float], ...]
    extra_trees: int
    house_x: float
    boat_x: float
    coat: int
    detail_seed: int
    subject_scale: float

    @classmethod
    def from_seed(cls, seed: int) -> Layout:
        r = rng_for("layout", seed)
        side = r.choice((-1, 1))
        return cls(
            horizon=r.uniform(0.46, 0.63),
            sun_x=r.uniform(0.15, 0.85),
            sun_lift=r.random(),
            sun_r=r.uniform(0.06, 0.085),
            ridge_seeds=tuple(r.getrandbits(32) for _ in range(4)),
            mountain_amp=r.uniform(0.16, 0.32),
            hill_amps=tuple(r.uniform(0.03, 0.1) for _ in range(4)),
            subject_x=side * r.uniform(0.25, 0.55),
            facing=r.choice((-1, 1)),
            clouds=tuple(
                (r.random(), r.uniform(0.08, 0.32), r.uniform(0.75, 1.25)) for _ in range(5)
            ),
            extra_trees=r.randrange(0, 4),
            house_x=-side * r.uniform(0.2, 0.6),
            boat_x=-side * r.uniform(0.1, 0.5),
            coat=r.getrandbits(16),
            detail_seed=r.getrandbits(32),
            subject_scale=r.uniform(0.85, 1.15),
        )


@lru_cache(maxsize=256)
def _midpoint(seed: int, depth: int, rough: float) -> tuple[float, ...]:
    """Midpoint displacement on 2**depth + 1 points in [0, 1];
    coarse levels do not depend on depth."""
    r = random.Random(seed)
    n = 1 << 10
    pts = [0.0] * (n + 1)
    pts[0], pts[n] = r.random(), r.random()
    step, amp, stop = n, 1.0, n >> depth
    while step > stop:
        half = step // 2
        for i in range(half, n, step):
            pts[i] = (pts[i - half] + pts[i + half]) / 2 + (r.random() - 0.5) * amp
        step, amp = half, amp * rough
    out = pts[::stop]
    lo, hi = min(out), max(out)
    return tuple((v - lo) / (hi - lo or 1.0) for v in out)


@lru_cache(maxsize=256)
def _hills(seed: int, n: int) -> tuple[float, ...]:
    """A smooth ridge of n samples in [0, 1]: three sines with seeded frequencies and phases."""
    r = random.Random(seed)
    waves = [(r.uniform(1.2, 2.4) * k, r.uniform(0, math.tau), 1 / k) for k in (1, 2, 3.5)]
    (f1, p1, a1), (f2, p2, a2), (f3, p3, a3) = waves
    sin, xs = math.sin, [-SPAN + 2 * SPAN * i / (n - 1) for i in range(n)]
    vals = [a1 * sin(f1 * x + p1) + a2 * sin(f2 * x + p2) + a3 * sin(f3 * x + p3) for x in xs]
    lo, hi = min(vals), max(vals)
    return tuple((v - lo) / (hi - lo) for v in vals)


class Colours:
    """What the prompt and guidance decide: the reading of the prompt and the base palette."""

    def __init__(self, prompt: str, guidance: float):
        self.reading = rd = read_prompt(prompt)
        self.palette = pal = Palette(guidance)
        mood = MOODS[rd.mood]

        def wash(c: RGB, amount: float = 0.35) -> RGB:
            for hue, light in rd.washes[:2]:
                c = tint(c, hue, light, amount)
            return rotate(c, rd.jitter)

        def target(c: RGB, name: str, amount: float = 0.7) -> RGB:
            if name in rd.tints:
                hue, light = rd.tints[name]
                return tint(c, hue, light, amount)
            return c

        top, mid, low = (wash(target(c, "sky")) for c in mood.sky)
        glow = target(wash(mood.glow, 0.2), "sun", 0.5)
        sun = target(mood.sun, "sun", 0.6)
        base_land = mood.land
        if rd.autumn and rd.mood in ("day", "golden", "dawn", "mist"):
            base_land = AUTUMN_LAND
        land = [
            wash(target(c, "mountains" if i == 0 and "mountains" in rd.tints else "land"))
            for i, c in enumerate(base_land)
        ]
        self.ambient = mood.ambient
        self.front = land[-1]
        # Ramps are mixed between graded key colours (grading each entry would cost ten times more).
        g = pal.grade
        gtop, gmid, glow_, gglow = g(top), g(mid), g(low), g(glow)
        for i in range(SKY_N):
            t = i / (SKY_N - 1)
            rgb = mix(gtop, gmid, t / 0.62) if t < 0.62 else mix(gmid, glow_, (t - 0.62) / 0.38)
            pal.entries[SKY + i] = rgb
            if i % 2 == 0:
                pal.entries[GLOW1 + i // 2] = mix(rgb, gglow, 0.14)
                pal.entries[GLOW2 + i // 2] = mix(rgb, gglow, 0.3)
        self.sky_rgb = (top, mid, low)
        water = wash(target(mood.water, "water", 0.8))
        near, deep = g(mix(low, water, 0.55)), g(mix(water, (0, 0, 0), 0.25))
        for i in range(WATER_N):
            pal.entries[WATER + i] = mix(near, deep, (i / (WATER_N - 1)) ** 0.8)
        pal.add("glow", glow)
        pal.add("sun", sun)
        pal.add("sun_shade", mix(sun, mid, 0.25))
        cloud = wash(target(mood.cloud, "sky", 0.4), 0.2)
        pal.add("cloud", cloud)
        pal.add("cloud_shade", mix(cloud, mid, 0.3))
        for i, c in enumerate(land):
            pal.add(f"land{i}", c)
        pal.add(
            "texture",
            mix(land[3], (0, 0, 0), 0.14) if rd.mood != "snow" else mix(land[3], mid, 0.25),
        )
        pal.add("snow", mix((250, 252, 255), low, 0.25))
        pal.add("water_light", mix(water, low, 0.7))
        pal.add("reflect", mix(land[0], water, 0.45))
        foliage = AUTUMN_FOLIAGE if rd.autumn else mood.foliage
        foliage = target(wash(foliage, 0.2), "forest", 0.8)
        for i in range(1, 4):
            pal.add(f"tree{i}", mix(foliage, land[i], 0.55 - 0.16 * i))
        pal.add("trunk", mix((70, 48, 34), self.front, 1 - self.ambient))
        pal.add("star", (250, 248, 236))
        pal.add("star_dim", mix((250, 248, 236), top, 0.5))
        pal.add("window_lit", (255, 210, 120))
        self.land_rgb = land


# Many generations share a prompt (new seeds, same words): its colours are worked out once.
_colours = lru_cache(maxsize=128)(Colours)


class Scene:
    """One prompt and seed resolved into colours and a layout; draw() renders it at any size."""

    def __init__(self, prompt: str, seed: int, guidance: float):
        base = _colours(prompt, float(guidance))
        self.reading = base.reading
        self.palette = base.palette.copy()  # drawing allocates more colours: never touch the cache
        self.ambient, self.front = base.ambient, base.front
        self.sky_rgb, self.land_rgb = base.sky_rgb, base.land_rgb
        self.layout = Layout.from_seed(seed)
        self.seed = seed

    def lit(self, rgb: RGB) -> RGB:
        """An object colour under the mood's light: dimmed toward the foreground at night."""
        return mix(self.front, rgb, 0.35 + 0.65 * self.ambient)

    def subject_colour(self, kind: str) -> RGB:
        if "subject" in self.reading.tints:
            return word_colour(*self.reading.tints["subject"])
        choices = SUBJECT_COLOURS.get(kind, ((200, 200, 200),))
        return choices[self.layout.coat % len(choices)]

    def draw(self, w: int, h: int, detail: float = 1.0) -> Image.Image:
        """The scene as palette indices ('L' image) of size w x h; detail scales texture counts."""
        im = Image.new("L", (w, h), SKY + SKY_N - 1)
        _bands(ImageDraw.Draw(im), 0, max(1, round(self.layout.horizon * h)), w, SKY, SKY_N)
        _Painter(self, im, detail).paint()
        return im


def _bands(d: ImageDraw.ImageDraw, top: int, bottom: int, w: int, first: int, n: int) -> None:
    """A vertical ramp of n palette entries from first,
    as horizontal bands between top and bottom."""
    y = top
    for i in range(n):
        y1 = top + (i + 1) * (bottom - top) // n
        if y1 > y:
            d.rectangle((0, y, w, y1 - 1), fill=first + i)
        y = y1


_GLOW_LUT1 = [GLOW1 + (i - SKY) // 2 if SKY <= i < SKY + SKY_N else i for i in range(256)]
_GLOW_LUT2 = [GLOW2 + (i - SKY) // 2 if SKY <= i < SKY + SKY_N else i for i in range(256)]
assert GLOW1 + (SKY_N - 1) // 2 < GLOW2 and GLOW2 + (SKY_N - 1) // 2 < GLOW2 + GLOW_N <= WATER


class _Painter:
    """Draws one scene into one index image; positions in frame fractions or height units."""

    def __init__(self, scene: Scene, im: Image.Image, detail: float):
        self.s, self.im, self.d = scene, im, ImageDraw.Draw(im)
        self.w, self.h = im.size
        self.S = math.sqrt(self.w * self.h) * 0.75  # size unit: the height of a 16:9 picture
        self.u = self.S / 768  # one pixel at the reference size, for strokes and small features
        self.detail = detail
        self.pal = scene.palette
        self.rd = scene.reading
        self.lay = scene.layout
        self.ridges: dict[int, list[tuple[float, float]]] = {}
        self.sun_xy: tuple[float, float, float] | None = None
        self.waterline: int | None = None

    def paint(self) -> None:
        rd, hz = self.rd, self.lay.horizon
        water = "water" in rd.elements
        if "stars" in rd.elements or rd.mood in ("night", "neon"):
            self.stars(hz)
        self.sun(hz)
        self.clouds(hz)
        if "birds" in rd.elements:
            self.birds(hz)
        self.land(hz, water)
        if rd.subject:
            self.subject(water)

    # ---- helpers ------------------------------------------------------------------------------
    def land_x(self, xu: float) -> float:
        """Pixel x of a land coordinate in height units from the centre."""
        return self.w / 2 + xu * self.h

    def fx(self, f: float) -> float:
        """Pixel x of a frame fraction in [-1, 1] (left edge to right edge)."""
        return self.w / 2 * (1 + f)

    def ground(self, layer: int, px: float) -> float:
        """Height (pixel y) of a land layer's ridge at pixel x;
        the ridge points are evenly spaced."""
        pts = self.ridges[layer]
        x0, step = pts[0][0], (pts[-1][0] - pts[0][0]) / (len(pts) - 1)
        i = min(len(pts) - 2, max(0, int((px - x0) / step)))
        (xa, ya), (xb, yb) = pts[i], pts[i + 1]
        return ya + (yb - ya) * (px - xa) / (xb - xa)

    def count(self, n: float) -> int:
        return max(0, round(n * self.detail))

    def width(self, k: float) -> int:
        return max(1, round(self.u * k))

    def glow(self, pts_or_disc, lut) -> None:
        """Brighten the sky under a shape by remapping its sky indices to a glow ramp."""
        if isinstance(pts_or_disc, tuple):
            cx, cy, r = pts_or_disc
            box = (int(cx - r), int(cy - r), int(cx + r) + 1, int(cy + r) + 1)
        else:
            xs, ys = [p[0] for p in pts_or_disc], [p[1] for p in pts_or_disc]
            box = (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1)
        box = (max(0, box[0]), max(0, box[1]), min(self.w, box[2]), min(self.h, box[3]))
        if box[2] <= box[0] or box[3] <= box[1]:
            return
        mask = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
        md = ImageDraw.Draw(mask)
        if isinstance(pts_or_disc, tuple):
            cx, cy, r = pts_or_disc
            md.ellipse(
                (cx - r - box[0], cy - r - box[1], cx + r - box[0], cy + r - box[1]), fill=255
            )
        else:
            md.polygon([(x - box[0], y - box[1]) for x, y in pts_or_disc], fill=255)
        self.im.paste(self.im.crop(box).point(lut), box, mask)

    # ---- sky ----------------------------------------------------------------------------------
    def stars(self, hz: float) -> None:
        dr = random.Random(self.lay.detail_seed)
        star, dim = self.pal["star"], self.pal["star_dim"]
        pts = [(dr.random(), dr.random() ** 1.3, dr.random()) for _ in range(400)]
        for x, y, b in pts[: self.count(140)]:
            px, py = x * self.w, y * hz * self.h * 0.9
            r = max(0.6, self.u * (0.7 + 1.5 * b * b))
            self.d.ellipse((px - r, py - r, px + r, py + r), fill=star if b > 0.55 else dim)

    def sun(self, hz: float) -> None:
        mood, lay = self.rd.mood, self.lay
        if mood == "storm":
            return
        cx = self.fx(lay.sun_x * 2 - 1)
        r = lay.sun_r * self.S * (1.7 if mood == "neon" else 1.0)
        if mood in ("golden", "dusk", "dawn", "neon"):
            cy = (hz - 0.02 - lay.sun_lift * 0.12) * self.h
        else:
            cy = (0.1 + lay.sun_lift * 0.16) * self.h
            r *= 0.75 if mood == "night" else 0.85
        self.glow((cx, cy, r * (2.2 if mood == "neon" else 2.8)), _GLOW_LUT1)
        self.glow((cx, cy, r * 1.75), _GLOW_LUT2)
        d = self.d
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=self.pal["sun"])
        if mood == "night":
            shade = self.pal["sun_shade"]
            for ox, oy, rr in ((-0.3, -0.2, 0.22), (0.25, 0.15, 0.16), (-0.05, 0.42, 0.12)):
                x, y, q = cx + ox * r, cy + oy * r, rr * r
                d.ellipse((x - q, y - q, x + q, y + q), fill=shade)
        elif mood == "neon":
            # a synthwave sun: horizontal cuts through its lower half, in the sky's own colour
            top_h = hz * self.h
            for k in range(6):
                y0 = cy + r * (0.05 + k * 0.16)
                th = r * (0.03 + 0.02 * k)
                idx = SKY + min(SKY_N - 1, int((y0 + th / 2) * SKY_N / top_h))
                d.rectangle((cx - r, y0, cx + r, y0 + th), fill=idx)
        self.sun_xy = (cx, cy, r)

    def clouds(self, hz: float) -> None:
        mood = self.rd.mood
        n = (
            5
            if "sky" in self.rd.elements
            else {"storm": 5, "mist": 2, "night": 1, "neon": 1}.get(mood, 3)
        )
        body, shade = self.pal["cloud"], self.pal["cloud_shade"]
        for i, (fx, fy, size) in enumerate(self.lay.clouds[:n]):
            cx = self.w * (i + 0.15 + 0.7 * fx) / n
            cy = fy * hz * self.h
            cw = size * self.S * (0.3 if n < 4 else 0.24)
            ch = cw * 0.28
            for colour, dy in ((shade, ch * 0.16), (body, 0.0)):
                y = cy + dy
                self.d.rounded_rectangle(
                    (cx - cw / 2, y - ch * 0.35, cx + cw / 2, y + ch * 0.35), ch * 0.35, fill=colour
                )
                for ox, rr in ((-0.22, 0.42), (0.05, 0.62), (0.26, 0.4)):
                    px, q = cx + ox * cw, rr * ch
                    self.d.ellipse((px - q, y - q * 1.3, px + q, y + q * 0.7), fill=colour)

    def birds(self, hz: float) -> None:
        dr = random.Random(self.lay.detail_seed ^ 0xB1D)
        colour = self.pal["land3"]
        cx, cy = self.w * dr.uniform(0.25, 0.75), self.h * hz * dr.uniform(0.25, 0.5)
        for _ in range(dr.randrange(3, 8)):
            x = cx + self.S * dr.uniform(-0.25, 0.25)
            y = cy + self.S * dr.uniform(-0.08, 0.08)
            q = self.S * dr.uniform(0.012, 0.022)
            pts = [
                (x - q, y - q * 0.5),
                (x - q * 0.4, y - q * 0.55),
                (x, y),
                (x + q * 0.4, y - q * 0.55),
                (x + q, y - q * 0.5),
            ]
            self.d.line(pts, fill=colour, width=self.width(3), joint="curve")

    # ---- land ---------------------------------------------------------------------------------
    def ridge(self, layer: int, shape, base: float, amp: float, shore: int = 0):
        """Fill one land layer under a ridge and remember its outline for placing things on it."""
        w, h = self.w, self.h
        n = len(shape)
        x_hi = w / (2 * h)
        pts = []
        for i, v in enumerate(shape):
            xu = -SPAN + 2 * SPAN * i / (n - 1)
            if abs(xu) > x_hi + 0.05:
                continue
            y = base - amp * v
            if shore:
                # land on one side only: past the middle it slopes down into the water
                f = (xu / x_hi) * shore
                t = min(1.0, max(0.0, (0.05 - f) / 0.35))
                y += (1.08 - y) * (t * t * (3 - 2 * t))
            pts.append((self.land_x(xu), y * h))
        self.ridges[layer] = pts
        self.d.polygon(pts + [(w + 1, h + 1), (-1, h + 1)], fill=self.pal[f"land{layer}"])
        return pts

    def land(self, hz: float, water: bool) -> None:
        rd, lay = self.rd, self.lay
        els = rd.elements
        mountains = (
            "mountains" in els or rd.mood == "snow" or (not water and lay.ridge_seeds[0] % 3 == 0)
        )
        desert = rd.mood == "desert"
        n = 97 if self.detail < 1.2 else 161
        if mountains:
            depth = 6 + (self.detail >= 0.6) + (self.detail >= 1.2) + (self.detail >= 1.6)
            amp = lay.mountain_amp
            far = self.ridge(0, _midpoint(lay.ridge_seeds[0], depth, 0.55), hz + 0.03, amp)
            if rd.mood in ("snow", "day", "dawn", "mist"):
                self.snowcaps(far, hz + 0.03 - amp * 0.62)
        else:
            far = self.ridge(0, _hills(lay.ridge_seeds[0], n), hz + 0.01, lay.hill_amps[0])
        if water:
            self.water(hz + (0.03 if mountains else 0.01), far)
        if "city" in els:
            self.city(hz + (0.07 if not water else 0.03))
        if water:
            grounded = rd.subject not in (None, "boat", "balloon")
            if grounded or "house" in els or "village" in els or "forest" in els:
                self.ridge(
                    3,
                    _hills(lay.ridge_seeds[3], n),
                    0.86,
                    lay.hill_amps[3] * 1.6,
                    shore=1 if lay.subject_x > 0 else -1,
                )
        else:
            for i, base in ((1, hz + 0.08), (2, hz + 0.18), (3, hz + 0.3)):
                shape = _hills(lay.ridge_seeds[i], n)
                if desert:
                    shape = tuple(v**1.7 for v in shape)
                self.ridge(i, shape, base, lay.hill_amps[i] * (1.4 if desert else 1.0))
                if "forest" in els and i < 3:
                    self.trees(i, 14 + 10 * i)
                if i == 2 and ("house" in els or "village" in els):
                    self.houses(2)
        if 3 not in self.ridges:
            return
        if "forest" in els:
            self.trees(3, 5)
        elif lay.extra_trees and rd.mood not in ("desert", "neon") and "city" not in els:
            self.trees(3, lay.extra_trees, pines=rd.mood == "snow")
        if water and ("house" in els or "village" in els):
            self.houses(3)
        self.texture(3)
        if "flowers" in els:
            self.flowers(3)

    def snowcaps(self, pts, cap: float) -> None:
        capy = cap * self.h
        run: list[tuple[float, float]] = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
            if not run and y0 < capy:
                run = [(x0, capy), (x0, y0)]
            if (y0 < capy) != (y1 < capy):
                xc = x0 + (x1 - x0) * (capy - y0) / ((y1 - y0) or 1)
                if run:
                    run.append((xc, capy))
                    self._cap(run)
                    run = []
                else:
                    run = [(xc, capy)]
            if run and y1 < capy:
                run.append((x1, y1))
        if run:
            run.append((pts[-1][0], capy))
            self._cap(run)

    def _cap(self, run) -> None:
        if len(run) < 3:
            return
        x0, x1, y = run[0][0], run[-1][0], run[0][1]
        drop = self.h * 0.022
        teeth = max(2, int((x1 - x0) / (self.S * 0.03)))
        bottom = [
            (x0 + (x1 - x0) * (k - 0.5) / teeth, y + drop * (0.3 + 0.35 * (k * 7 % 3)))
            for k in range(teeth, 0, -1)
        ]
        self.d.polygon(run + bottom, fill=self.pal["snow"])

    def water(self, wl: float, far) -> None:
        w, h, d = self.w, self.h, self.d
        top = round(wl * h)
        rows = h - top
        if rows <= 0:
            return
        _bands(d, top, h, w, WATER, WATER_N)
        refl = [(x, top + (top - y) * 0.55) for x, y in far if y < top]
        if len(refl) > 2:
            d.polygon([(refl[0][0], top)] + refl + [(refl[-1][0], top)], fill=self.pal["reflect"])
        light = self.pal["water_light"]
        dr = random.Random(self.lay.detail_seed ^ 0x3A7E)
        for _ in range(self.count(28)):
            y = top + rows * dr.random() ** 1.6
            x = dr.random() * w
            ln = self.S * (0.02 + 0.05 * dr.random()) * (0.4 + (y - top) / rows)
            d.line((x, y, x + ln, y), fill=light, width=self.width(1.5))
        if self.sun_xy:
            cx, _, r = self.sun_xy
            glow = self.pal["glow"]
            for k in range(9):
                y = top + rows * (0.02 + 0.09 * k) ** 1.3
                half = r * (1.1 - 0.1 * k) * (0.6 + 0.4 * math.sin(k * 2.1 + 1))
                d.rectangle(
                    (cx - half, y, cx + half, y + max(1.0, self.u * (2 + k * 0.6))), fill=glow
                )
        self.waterline = top

    def trees(self, layer: int, n: int, pines: bool = True) -> None:
        dr = random.Random(self.lay.detail_seed ^ (0x7EE + layer))
        colour, trunk = self.pal[f"tree{layer}"], self.pal["trunk"]
        scale = (0.05, 0.07, 0.1, 0.16)[layer] * self.S
        pts = self.ridges[layer]
        x_lo, x_hi = pts[0][0], pts[-1][0]
        keep_clear = self.fx(self.lay.subject_x) if self.rd.subject else None
        for f, size, kind in sorted(
            (dr.random(), dr.uniform(0.7, 1.25), dr.random()) for _ in range(n)
        ):
            px = x_lo + (x_hi - x_lo) * f
            if layer == 3 and keep_clear is not None and abs(px - keep_clear) < self.S * 0.2:
                continue
            gy = self.ground(layer, px) + self.h * 0.01 * (1 + layer)
            if gy > self.h * 0.96:
                continue  # the land has sloped into the water here
            th = scale * size
            if pines or kind < 0.6:
                self.d.rectangle((px - th * 0.04, gy - th * 0.25, px + th * 0.04, gy), fill=trunk)
                for k in range(3):
                    top = gy - th * (1.0 - 0.22 * k)
                    bw = th * (0.2 + 0.09 * k)
                    base = gy - th * (0.6 - 0.2 * k)
                    self.d.polygon([(px, top), (px + bw, base), (px - bw, base)], fill=colour)
            else:
                self.d.rectangle((px - th * 0.05, gy - th * 0.45, px + th * 0.05, gy), fill=trunk)
                r = th * 0.32
                self.d.ellipse((px - r, gy - th * 0.95, px + r, gy - th * 0.35), fill=colour)

    def texture(self, layer: int) -> None:
        """Grass strokes (or sand ripples) on the foreground; more of them with more steps."""
        mood = self.rd.mood
        if mood in ("snow", "night", "neon"):
            return
        dr = random.Random(self.lay.detail_seed ^ 0x6A55)
        colour, pts, h = self.pal["texture"], self.ridges[layer], self.h
        ripple = mood == "desert"
        width = self.width(2)
        for _ in range(self.count(70)):
            px = pts[0][0] + (pts[-1][0] - pts[0][0]) * dr.random()
            gy = self.ground(layer, px)
            y = gy + (h - gy) * (0.08 + 0.9 * dr.random())
            if gy > h * 0.97:
                continue
            ln = self.S * (0.008 + 0.014 * dr.random())
            if ripple:
                self.d.line(
                    (px - ln * 1.5, y, px, y - ln * 0.25, px + ln * 1.5, y),
                    fill=colour,
                    width=width,
                )
            else:
                self.d.line((px, y, px + ln * 0.3, y - ln), fill=colour, width=width)

    def flowers(self, layer: int) -> None:
        s, h = self.s, self.h
        dr = random.Random(self.lay.detail_seed ^ 0xF10)
        base = word_colour(*self.rd.tints["flowers"]) if "flowers" in self.rd.tints else None
        colours = [
            self.pal.add(f"flower{i}", s.lit(base or c))
            for i, c in enumerate(((236, 90, 110), (250, 214, 90), (246, 246, 240)))
        ]
        pts = self.ridges[layer]
        for _ in range(self.count(140)):
            px = pts[0][0] + (pts[-1][0] - pts[0][0]) * dr.random()
            gy = self.ground(layer, px)
            t = dr.random()
            pick = colours[int(dr.random() * 3)]
            if gy > h * 0.97:
                continue
            y = gy + (h - gy) * (0.1 + 0.88 * t)
            r = self.u * (2 + 5 * t)
            self.d.ellipse((px - r, y - r, px + r, y + r), fill=pick)

    def houses(self, layer: int) -> None:
        s, lay = self.s, self.lay
        xs = [lay.house_x]
        if "village" in self.rd.elements:
            xs += [lay.house_x + 0.14, lay.house_x - 0.16, lay.house_x + 0.3]
        base = word_colour(*self.rd.tints["house"]) if "house" in self.rd.tints else (226, 196, 156)
        wall = self.pal.add("wall", s.lit(base))
        side = self.pal.add("wall_shade", s.lit(mix(base, (0, 0, 0), 0.22)))
        roof = self.pal.add("roof", s.lit((150, 62, 52)))
        lit = self.rd.mood in LIT_MOODS
        window = self.pal["window_lit"] if lit else self.pal.add("window", s.lit((70, 90, 110)))
        size = self.S * (0.07 if layer == 2 else 0.12)
        d = self.d
        for f in xs:
            px = self.fx(max(-0.9, min(0.9, f)))
            gy = self.ground(layer, px) + size * 0.15
            if gy > self.h * 0.97:
                continue
            hw, top = size * 0.55, gy - size * 0.65
            d.rectangle((px - hw, top, px + hw, gy), fill=wall)
            d.rectangle((px + hw * 0.35, top, px + hw, gy), fill=side)
            d.polygon(
                [(px - hw * 1.2, top), (px, top - size * 0.5), (px + hw * 1.2, top)], fill=roof
            )
            d.rectangle(
                (px - hw * 0.6, top + size * 0.15, px - hw * 0.15, top + size * 0.35), fill=window
            )
            d.rectangle(
                (px + hw * 0.02, top + size * 0.25, px + hw * 0.3, gy), fill=window if lit else roof
            )

    def city(self, base: float) -> None:
        s, w, S = self.s, self.w, self.S
        dr = random.Random(self.lay.detail_seed ^ 0xC17)
        lit = self.rd.mood in LIT_MOODS + ("golden",)
        c1 = mix(s.land_rgb[1], s.land_rgb[2], 0.5)
        if "city" in self.rd.tints:
            c1 = tint(c1, *self.rd.tints["city"], 0.6)
        near = self.pal.add("building", c1)
        far = self.pal.add("building2", mix(c1, s.land_rgb[0], 0.45))
        win = (
            self.pal["window_lit"]
            if lit
            else self.pal.add("window_day", mix(c1, s.sky_rgb[2], 0.35))
        )
        gy = base * self.h
        share = 0.45 * min(1.5, self.detail)
        for colour, scale, windows in ((far, 0.8, False), (near, 1.05, True)):
            x = -dr.random() * S * 0.05
            while x < w:
                bw = S * dr.uniform(0.035, 0.08)
                bh = S * scale * dr.uniform(0.07, 0.28) * (1.4 if dr.random() < 0.15 else 1.0)
                self.d.rectangle((x, gy - bh, x + bw - self.u * 2, self.h), fill=colour)
                if windows:
                    cols, rows = max(1, int(bw / (S * 0.014))), int(bh / (S * 0.02))
                    for i in range(rows):
                        for j in range(cols):
                            if dr.random() < share:
                                wx = x + bw * (j + 0.3) / cols
                                wy = gy - bh + S * 0.02 * (i + 0.4)
                                self.d.rectangle((wx, wy, wx + S * 0.006, wy + S * 0.009), fill=win)
                x += bw

    # ---- the subject --------------------------------------------------------------------------
    def subject(self, water: bool) -> None:
        kind, lay = self.rd.subject, self.lay
        if kind == "boat":
            self.boat(self.fx(lay.subject_x * 0.8))
            return
        if kind == "balloon":
            self.balloon(self.fx(lay.subject_x), (0.18 + 0.2 * lay.sun_lift) * self.h)
            return
        if water and kind != "lighthouse" and lay.coat % 3 == 0:
            self.boat(self.fx(lay.boat_x))
        if 3 not in self.ridges:
            return
        px = self.fx(lay.subject_x)
        gy = min(self.ground(3, px), self.h * 0.97) + self.S * 0.012
        getattr(self, "draw_" + str(kind))(px, gy, self.S * 0.24 * lay.subject_scale, lay.facing)

    def _pts(self, px, gy, s, facing, pts):
        return [(px + facing * x * s, gy - y * s) for x, y in pts]

    def _poly(self, colour, px, gy, s, facing, pts) -> None:
        """A polygon in subject units (x right, y up from the feet), mirrored by facing."""
        self.d.polygon(self._pts(px, gy, s, facing, pts), fill=colour)

    def _ell(self, colour, px, gy, s, facing, x, y, rx, ry) -> None:
        cx, cy = px + facing * x * s, gy - y * s
        self.d.ellipse((cx - rx * s, cy - ry * s, cx + rx * s, cy + ry * s), fill=colour)

    def _line(self, colour, px, gy, s, facing, pts, width) -> None:
        self.d.line(
            self._pts(px, gy, s, facing, pts),
            fill=colour,
            width=max(1, round(width * s)),
            joint="curve",
        )

    def _mirrored_polys(self, colour, px, gy, s, facing, pts) -> None:
        """The polygon at x and its twin at -x (left first): ears, legs."""
        for sx in (-1, 1):
            self._poly(colour, px, gy, s, facing, [(sx * x, y) for x, y in pts])

    def _mirrored_lines(self, colour, px, gy, s, facing, pts, width) -> None:
        """The line through x and its twin through -x (left first): arms."""
        for sx in (-1, 1):
            self._line(colour, px, gy, s, facing, [(sx * x, y) for x, y in pts], width)

    def _tail(self, colour, px, gy, s, facing, start, end, lift, thick, tip=None) -> None:
        """A tapering, curving tail from start to end (subject units), bulging upward by lift."""
        upper, lower = [], []
        steps = 10
        for k in range(steps + 1):
            t = k / steps
            x = start[0] + (end[0] - start[0]) * t
            y = start[1] + (end[1] - start[1]) * t + lift * math.sin(math.pi * t)
            half = thick * math.sin(math.pi * min(1.0, 0.15 + t * 0.95)) * (1 - 0.3 * t)
            upper.append((x, y + half))
            lower.append((x, y - half))
        self._poly(colour, px, gy, s, facing, upper + lower[::-1])
        if tip is not None:  # the last 30% in another colour (a fox's white tip)
            k = round(steps * 0.7)
            self._poly(tip, px, gy, s, facing, upper[k:] + lower[k:][::-1])

    def _colours(self, kind: str, light=(240, 236, 228), dark=(40, 34, 34)):
        s = self.s
        body = s.subject_colour(kind)
        return (
            self.pal.add("subject", s.lit(body)),
            self.pal.add("subject_light", s.lit(mix(body, light, 0.75))),
            self.pal.add("subject_dark", s.lit(mix(body, dark, 0.6))),
        )

    def _eyes(self, px, gy, s, facing, y, dx, colour, x=0.0) -> None:
        for sx in (-1, 1):
            self._ell(colour, px, gy, s, facing, x + sx * dx, y, 0.022, 0.026)

    def _night_eyes(self, fallback: int) -> int:
        return self.pal["window_lit"] if self.s.ambient < 0.6 else fallback

    def draw_cat(self, px, gy, s, facing) -> None:
        body, light, dark = self._colours("cat")
        self._tail(body, px, gy, s, facing, (0.1, 0.05), (0.34, 0.5), 0.12, 0.035)
        self._ell(body, px, gy, s, facing, 0, 0.3, 0.21, 0.3)
        self._ell(body, px, gy, s, facing, 0, 0.66, 0.16, 0.14)
        for sx in (-1, 1):
            self._poly(
                body, px, gy, s, facing, [(sx * 0.155, 0.66), (sx * 0.14, 0.9), (sx * 0.03, 0.77)]
            )
            self._poly(
                dark, px, gy, s, facing, [(sx * 0.135, 0.72), (sx * 0.128, 0.85), (sx * 0.07, 0.78)]
            )
        self._ell(light, px, gy, s, facing, 0, 0.25, 0.1, 0.17)
        self._eyes(
            px, gy, s, facing, 0.68, 0.065, self._night_eyes(self.pal.add("eye", (96, 150, 70)))
        )
        self._ell(dark, px, gy, s, facing, 0, 0.62, 0.02, 0.014)
        for sx in (-1, 1):
            self._ell(light, px, gy, s, facing, sx * 0.08, 0.03, 0.06, 0.035)

    def draw_fox(self, px, gy, s, facing) -> None:
        body, light, dark = self._colours("fox")
        self._tail(body, px, gy, s, facing, (0.08, 0.06), (0.62, 0.12), 0.1, 0.1, tip=light)
        self._ell(body, px, gy, s, facing, 0, 0.3, 0.2, 0.3)
        self._poly(light, px, gy, s, facing, [(-0.11, 0.54), (0.11, 0.54), (0.0, 0.12)])
        for sx in (-1, 1):
            self.d.rectangle(
                (
                    px + facing * sx * 0.1 * s - s * 0.035,
                    gy - 0.16 * s,
                    px + facing * sx * 0.1 * s + s * 0.035,
                    gy,
                ),
                fill=dark,
            )
            self._poly(
                body, px, gy, s, facing, [(sx * 0.15, 0.68), (sx * 0.17, 0.98), (sx * 0.03, 0.78)]
            )
            self._poly(
                dark, px, gy, s, facing, [(sx * 0.14, 0.74), (sx * 0.16, 0.95), (sx * 0.08, 0.81)]
            )
        self._ell(body, px, gy, s, facing, 0, 0.68, 0.15, 0.13)
        self._poly(body, px, gy, s, facing, [(-0.15, 0.68), (0.15, 0.68), (0, 0.5)])
        self._poly(light, px, gy, s, facing, [(-0.09, 0.6), (0.09, 0.6), (0, 0.5)])
        self._ell(dark, px, gy, s, facing, 0, 0.52, 0.026, 0.02)
        self._eyes(px, gy, s, facing, 0.69, 0.065, self._night_eyes(dark))

    def draw_dog(self, px, gy, s, facing, wolf: bool = False) -> None:
        body, light, dark = self._colours("wolf" if wolf else "dog")
        if wolf:
            self._tail(body, px, gy, s, facing, (0.1, 0.08), (0.5, 0.05), 0.08, 0.07, tip=dark)
        else:
            self._tail(body, px, gy, s, facing, (0.12, 0.1), (0.4, 0.42), 0.06, 0.045)
        self._ell(body, px, gy, s, facing, 0, 0.3, 0.21, 0.3)
        self._ell(light, px, gy, s, facing, 0, 0.3, 0.1, 0.2)
        if wolf:
            self._mirrored_polys(body, px, gy, s, facing, [(0.15, 0.7), (0.15, 0.95), (0.03, 0.8)])
        self._ell(body, px, gy, s, facing, 0, 0.68, 0.15, 0.14)
        if not wolf:
            for sx in (-1, 1):
                self._ell(dark, px, gy, s, facing, sx * 0.16, 0.64, 0.05, 0.12)
        self._ell(light, px, gy, s, facing, 0, 0.6, 0.075, 0.06)
        self._ell(dark, px, gy, s, facing, 0, 0.63, 0.03, 0.022)
        self._eyes(px, gy, s, facing, 0.72, 0.06, self._night_eyes(dark))
        for sx in (-1, 1):
            self._ell(body, px, gy, s, facing, sx * 0.09, 0.03, 0.06, 0.035)

    def draw_wolf(self, px, gy, s, facing) -> None:
        self.draw_dog(px, gy, s, facing, wolf=True)

    def draw_rabbit(self, px, gy, s, facing) -> None:
        body, light, dark = self._colours("rabbit")
        s *= 0.75
        self._ell(body, px, gy, s, facing, 0, 0.28, 0.22, 0.28)
        self._ell(light, px, gy, s, facing, -0.2, 0.12, 0.08, 0.08)
        for sx in (-1, 1):
            self._ell(body, px, gy, s, facing, 0.04 + sx * 0.06, 0.9, 0.045, 0.2)
            self._ell(light, px, gy, s, facing, 0.04 + sx * 0.06, 0.9, 0.02, 0.14)
        self._ell(body, px, gy, s, facing, 0.04, 0.62, 0.14, 0.13)
        self._eyes(px, gy, s, facing, 0.64, 0.05, self._night_eyes(dark), x=0.04)

    def draw_deer(self, px, gy, s, facing) -> None:
        body, light, dark = self._colours("deer")
        for x in (-0.28, -0.18, 0.18, 0.26):
            self._line(body, px, gy, s, facing, [(x, 0.5), (x, 0.0)], 0.05)
        self._ell(body, px, gy, s, facing, 0, 0.55, 0.34, 0.15)
        self._ell(light, px, gy, s, facing, -0.33, 0.58, 0.05, 0.06)
        self._poly(body, px, gy, s, facing, [(0.2, 0.6), (0.3, 0.95), (0.4, 0.95), (0.34, 0.55)])
        self._ell(body, px, gy, s, facing, 0.42, 0.95, 0.1, 0.06)
        for sx in (-0.04, 0.04):
            self._line(
                dark,
                px,
                gy,
                s,
                facing,
                [(0.34 + sx, 1.0), (0.3 + sx, 1.18), (0.22 + sx, 1.26)],
                0.025,
            )
            self._line(dark, px, gy, s, facing, [(0.31 + sx, 1.12), (0.4 + sx, 1.2)], 0.025)

    def draw_person(self, px, gy, s, facing, astronaut: bool = False) -> None:
        coat, light, dark = self._colours("astronaut" if astronaut else "person")
        d = self.d
        if astronaut:
            self._poly(
                light, px, gy, s, facing, [(-0.17, 0.4), (-0.08, 0.4), (-0.08, 0.72), (-0.17, 0.72)]
            )
            self._mirrored_polys(
                coat, px, gy, s, facing, [(0.015, 0.44), (0.1, 0.44), (0.1, 0.0), (0.02, 0.0)]
            )
            box = self._pts(px, gy, s, facing, [(-0.12, 0.76), (0.12, 0.38)])
            d.rounded_rectangle(
                (min(box[0][0], box[1][0]), box[0][1], max(box[0][0], box[1][0]), box[1][1]),
                s * 0.04,
                fill=coat,
            )
            self._mirrored_lines(
                coat, px, gy, s, facing, [(0.13, 0.72), (0.17, 0.5), (0.15, 0.42)], 0.06
            )
            self._ell(coat, px, gy, s, facing, 0, 0.87, 0.12, 0.12)
            self._ell(
                self.pal.add("visor", (40, 52, 90)), px, gy, s, facing, 0.03, 0.87, 0.08, 0.065
            )
            self._ell(
                self.pal.add("visor_glint", (150, 170, 220)),
                px,
                gy,
                s,
                facing,
                0.06,
                0.9,
                0.02,
                0.015,
            )
            return
        skin = self.pal.add("skin", self.s.lit((226, 180, 150)))
        hair = self.pal.add("hair", self.s.lit((70, 48, 36)))
        self._mirrored_polys(
            dark, px, gy, s, facing, [(0.01, 0.44), (0.075, 0.44), (0.07, 0.0), (0.015, 0.0)]
        )
        self._mirrored_lines(
            coat, px, gy, s, facing, [(0.1, 0.72), (0.13, 0.52), (0.12, 0.42)], 0.045
        )
        self._poly(
            coat, px, gy, s, facing, [(-0.1, 0.74), (0.1, 0.74), (0.13, 0.36), (-0.13, 0.36)]
        )
        self._ell(skin, px, gy, s, facing, 0, 0.84, 0.065, 0.075)
        self._ell(hair, px, gy, s, facing, 0, 0.875, 0.07, 0.045)

    def draw_astronaut(self, px, gy, s, facing) -> None:
        self.draw_person(px, gy, s, facing, astronaut=True)

    def draw_lighthouse(self, px, gy, s, facing) -> None:
        white = self.pal.add("subject", self.s.lit((244, 242, 236)))
        red = self.pal.add("subject_dark", self.s.lit((196, 58, 50)))
        s *= 1.35
        if self.s.ambient < 0.8:
            cx, cy = px, gy - 0.77 * s
            for side in (-1, 1):
                far = cx + side * self.w
                self.glow(
                    [(cx, cy), (far, cy - self.S * 0.12), (far, cy + self.S * 0.03)], _GLOW_LUT2
                )
        bands = 5
        for k in range(bands):
            y0, y1 = k / bands * 0.7, (k + 1) / bands * 0.7
            w0, w1 = 0.1 - 0.035 * y0 / 0.7, 0.1 - 0.035 * y1 / 0.7
            self._poly(
                red if k % 2 else white,
                px,
                gy,
                s,
                facing,
                [(-w0, y0), (w0, y0), (w1, y1), (-w1, y1)],
            )
        lamp = self.pal["glow"] if self.s.ambient < 0.8 else self.pal.add("lamp", (250, 240, 200))
        self._poly(red, px, gy, s, facing, [(-0.09, 0.7), (0.09, 0.7), (0.09, 0.72), (-0.09, 0.72)])
        self._poly(
            lamp, px, gy, s, facing, [(-0.045, 0.72), (0.045, 0.72), (0.045, 0.82), (-0.045, 0.82)]
        )
        self._poly(red, px, gy, s, facing, [(-0.07, 0.82), (0.07, 0.82), (0, 0.9)])

    def draw_castle(self, px, gy, s, facing) -> None:
        stone, light, dark = self._colours("castle")
        roof = self.pal.add("roof", self.s.lit((150, 62, 52)))
        window = self.pal["window_lit"] if self.s.ambient < 0.6 else dark
        s *= 1.3
        d = self.d
        for x, tw, th in ((-0.32, 0.1, 0.55), (0.32, 0.1, 0.55), (0, 0.14, 0.8)):
            cx = px + facing * x * s
            d.rectangle((cx - tw * s, gy - th * s, cx + tw * s, gy), fill=stone)
            d.polygon(
                [
                    (cx - tw * 1.3 * s, gy - th * s),
                    (cx, gy - (th + 0.25) * s),
                    (cx + tw * 1.3 * s, gy - th * s),
                ],
                fill=roof,
            )
            d.rectangle(
                (cx - 0.025 * s, gy - (th - 0.12) * s, cx + 0.025 * s, gy - (th - 0.2) * s),
                fill=window,
            )
        d.rectangle((px - 0.3 * s, gy - 0.38 * s, px + 0.3 * s, gy), fill=stone)
        for k in range(7):
            x = px - 0.3 * s + k * 0.1 * s
            d.rectangle((x, gy - 0.43 * s, x + 0.05 * s, gy - 0.38 * s), fill=stone)
        d.rectangle((px - 0.06 * s, gy - 0.2 * s, px + 0.06 * s, gy), fill=dark)
        d.ellipse((px - 0.06 * s, gy - 0.26 * s, px + 0.06 * s, gy - 0.14 * s), fill=dark)

    def trapezoid(
        self, px: float, top: float, top_half: float, bottom: float, bottom_half: float, fill: int
    ) -> None:
        """A level trapezoid centred on px (hulls, baskets): its edges' y and half-widths."""
        left, right = (px - top_half, top), (px + top_half, top)
        self.d.polygon(
            [left, right, (px + bottom_half, bottom), (px - bottom_half, bottom)], fill=fill
        )

    def boat(self, px: float) -> None:
        sc, h = self.s, self.h
        top = self.waterline if self.waterline is not None else round(h * 0.62)
        y = top + (h - top) * 0.45
        s = self.S * 0.16
        tinted = "subject" in self.rd.tints and self.rd.subject == "boat"
        hull = self.pal.add(
            "boat_hull", sc.lit(word_colour(*self.rd.tints["subject"]) if tinted else (196, 60, 50))
        )
        sail = self.pal.add("boat_sail", sc.lit((246, 244, 236)))
        dark = self.pal.add("boat_dark", sc.lit((60, 46, 40)))
        d = self.d
        self.trapezoid(px, y + 0.02 * s, 0.36 * s, y + 0.12 * s, 0.3 * s, self.pal["reflect"])
        self.trapezoid(px, y - 0.16 * s, 0.5 * s, y, 0.36 * s, hull)
        d.line((px, y - 0.16 * s, px, y - 1.1 * s), fill=dark, width=max(2, round(s * 0.025)))
        d.polygon(
            [
                (px + 0.02 * s, y - 1.05 * s),
                (px + 0.02 * s, y - 0.24 * s),
                (px + 0.42 * s, y - 0.24 * s),
            ],
            fill=sail,
        )
        d.polygon(
            [
                (px - 0.03 * s, y - 0.9 * s),
                (px - 0.03 * s, y - 0.24 * s),
                (px - 0.32 * s, y - 0.24 * s),
            ],
            fill=sail,
        )

    def balloon(self, px: float, py: float) -> None:
        sc, s = self.s, self.S * 0.2
        colours = SUBJECT_COLOURS["balloon"]
        c1 = (
            word_colour(*self.rd.tints["subject"])
            if "subject" in self.rd.tints
            else colours[self.lay.coat % 4]
        )
        a = self.pal.add("balloon1", sc.lit(c1))
        b = self.pal.add("balloon2", sc.lit(colours[(self.lay.coat + 1) % 4]))
        dark = self.pal.add("boat_dark", sc.lit((60, 46, 40)))
        d = self.d
        self.trapezoid(px, py + 0.1 * s, 0.33 * s, py + 0.55 * s, 0.08 * s, a)
        d.ellipse((px - 0.4 * s, py - 0.45 * s, px + 0.4 * s, py + 0.3 * s), fill=a)
        d.ellipse((px - 0.22 * s, py - 0.45 * s, px + 0.22 * s, py + 0.3 * s), fill=b)
        self.trapezoid(px, py + 0.2 * s, 0.2 * s, py + 0.55 * s, 0.05 * s, b)
        d.ellipse((px - 0.06 * s, py - 0.45 * s, px + 0.06 * s, py + 0.3 * s), fill=a)
        for sx in (-1, 1):
            d.line(
                (px + sx * 0.08 * s, py + 0.55 * s, px + sx * 0.06 * s, py + 0.68 * s),
                fill=dark,
                width=max(1, round(s * 0.01)),
            )
        d.rectangle((px - 0.07 * s, py + 0.68 * s, px + 0.07 * s, py + 0.8 * s), fill=dark)
