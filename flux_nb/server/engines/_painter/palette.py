"""Colours for the offline preview engine: a mood and tints read from the prompt,
one indexed palette.

The picture is drawn as 8-bit palette indices, so every colour it uses lives in one table of at
most 256 entries. The layout of that table is fixed (sky ramp, two glow ramps, water ramp, then
named flat colours), which lets the drawing code blend "halo over sky" by remapping indices.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
from dataclasses import dataclass, field

RGB = tuple[int, int, int]

# Index layout of the palette.
SKY, SKY_N = 0, 88  # sky gradient, top of the image to the horizon
GLOW1, GLOW2, GLOW_N = 88, 132, 44  # the sky ramp (every 2nd entry) under a faint / stronger halo
WATER, WATER_N = 176, 12  # water, from the far shore to the bottom of the image
FLAT, FLAT_LAST = 188, 243  # named flat colours; 244-255 are left to the engine (noise, tag)


# Base colours per mood: sky top / middle / horizon, glow, sun (or moon), cloud, the land layers
# from far to near, water, foliage, and how much light falls on foreground objects (ambient).
@dataclass(frozen=True)
class Mood:
    """The colours of one mood (see MOODS)."""

    sky: tuple[RGB, RGB, RGB]
    glow: RGB
    sun: RGB
    cloud: RGB
    land: tuple[RGB, RGB, RGB, RGB]
    water: RGB
    foliage: RGB
    ambient: float


MOODS: dict[str, Mood] = {
    "day": Mood(
        sky=((58, 118, 196), (122, 174, 224), (214, 232, 240)),
        glow=(255, 250, 225),
        sun=(255, 251, 232),
        cloud=(250, 252, 255),
        land=((146, 176, 204), (104, 152, 132), (72, 128, 88), (46, 96, 62)),
        water=(62, 130, 182),
        foliage=(38, 86, 54),
        ambient=1.0,
    ),
    "golden": Mood(
        sky=((78, 92, 158), (232, 154, 126), (255, 208, 146)),
        glow=(255, 226, 170),
        sun=(255, 242, 204),
        cloud=(255, 206, 180),
        land=((180, 126, 132), (132, 90, 108), (90, 62, 86), (52, 38, 58)),
        water=(126, 100, 146),
        foliage=(42, 30, 46),
        ambient=0.75,
    ),
    "dusk": Mood(
        sky=((26, 32, 80), (120, 76, 134), (244, 142, 122)),
        glow=(255, 172, 140),
        sun=(255, 214, 176),
        cloud=(172, 112, 152),
        land=((100, 72, 120), (68, 52, 98), (44, 36, 72), (24, 20, 44)),
        water=(64, 54, 104),
        foliage=(20, 18, 38),
        ambient=0.5,
    ),
    "night": Mood(
        sky=((6, 10, 30), (18, 30, 66), (46, 68, 112)),
        glow=(118, 138, 188),
        sun=(240, 238, 222),
        cloud=(42, 54, 86),
        land=((36, 48, 82), (26, 36, 64), (17, 25, 47), (9, 14, 30)),
        water=(22, 36, 68),
        foliage=(8, 14, 26),
        ambient=0.35,
    ),
    "dawn": Mood(
        sky=((112, 142, 202), (222, 184, 204), (255, 216, 184)),
        glow=(255, 236, 204),
        sun=(255, 248, 226),
        cloud=(255, 232, 232),
        land=((164, 154, 192), (124, 132, 164), (86, 112, 122), (56, 82, 88)),
        water=(142, 152, 202),
        foliage=(40, 64, 70),
        ambient=0.8,
    ),
    "mist": Mood(
        sky=((150, 162, 172), (192, 200, 206), (224, 228, 230)),
        glow=(242, 242, 238),
        sun=(248, 248, 242),
        cloud=(234, 236, 238),
        land=((180, 188, 194), (148, 160, 166), (112, 126, 132), (76, 90, 96)),
        water=(172, 182, 190),
        foliage=(62, 76, 80),
        ambient=0.8,
    ),
    "snow": Mood(
        sky=((96, 140, 202), (172, 202, 234), (232, 240, 248)),
        glow=(255, 255, 250),
        sun=(255, 255, 246),
        cloud=(250, 252, 255),
        land=((182, 200, 224), (214, 226, 240), (236, 242, 250), (250, 252, 255)),
        water=(112, 152, 192),
        foliage=(40, 70, 72),
        ambient=1.0,
    ),
    "desert": Mood(
        sky=((66, 132, 202), (152, 198, 232), (250, 228, 192)),
        glow=(255, 245, 216),
        sun=(255, 252, 236),
        cloud=(255, 250, 246),
        land=((216, 172, 132), (232, 178, 114), (214, 148, 88), (186, 118, 66)),
        water=(72, 152, 182),
        foliage=(92, 112, 62),
        ambient=1.0,
    ),
    "storm": Mood(
        sky=((50, 56, 68), (86, 94, 108), (132, 140, 150)),
        glow=(182, 188, 192),
        sun=(204, 208, 210),
        cloud=(68, 74, 86),
        land=((92, 100, 112), (66, 76, 84), (46, 56, 62), (28, 36, 40)),
        water=(62, 74, 86),
        foliage=(24, 34, 34),
        ambient=0.6,
    ),
    "neon": Mood(
        sky=((18, 8, 48), (92, 22, 122), (255, 84, 152)),
        glow=(255, 122, 172),
        sun=(255, 202, 92),
        cloud=(122, 42, 142),
        land=((72, 22, 102), (48, 14, 78), (30, 8, 54), (14, 4, 30)),
        water=(42, 22, 92),
        foliage=(10, 4, 24),
        ambient=0.45,
    ),
}
AUTUMN_LAND = ((176, 150, 160), (204, 122, 62), (172, 82, 42), (112, 52, 30))
AUTUMN_FOLIAGE = (196, 84, 34)

MOOD_WORDS = {
    "night": "night",
    "midnight": "night",
    "moon": "night",
    "moonlit": "night",
    "moonlight": "night",
    "stars": "night",
    "starry": "night",
    "galaxy": "night",
    "nocturnal": "night",
    "dark": "night",
    "sunset": "golden",
    "golden": "golden",
    "evening": "dusk",
    "dusk": "dusk",
    "twilight": "dusk",
    "sunrise": "dawn",
    "dawn": "dawn",
    "morning": "dawn",
    "fog": "mist",
    "foggy": "mist",
    "mist": "mist",
    "misty": "mist",
    "haze": "mist",
    "hazy": "mist",
    "snow": "snow",
    "snowy": "snow",
    "winter": "snow",
    "ice": "snow",
    "icy": "snow",
    "frozen": "snow",
    "arctic": "snow",
    "desert": "desert",
    "dune": "desert",
    "dunes": "desert",
    "sahara": "desert",
    "storm": "storm",
    "stormy": "storm",
    "rain": "storm",
    "rainy": "storm",
    "thunder": "storm",
    "neon": "neon",
    "cyberpunk": "neon",
    "synthwave": "neon",
    "vaporwave": "neon",
    "retrowave": "neon",
    "noon": "day",
    "sunny": "day",
    "daylight": "day",
    "summer": "day",
}
AUTUMN_WORDS = frozenset({"autumn", "fall", "autumnal", "october", "harvest"})

# Colour words: hue in degrees, or None with a lightness for the achromatic ones.
COLOUR_WORDS: dict[str, tuple[float | None, float]] = {
    "red": (0, 0.5),
    "scarlet": (5, 0.5),
    "crimson": (350, 0.45),
    "ruby": (348, 0.45),
    "coral": (12, 0.62),
    "salmon": (8, 0.66),
    "rust": (16, 0.42),
    "ginger": (24, 0.5),
    "orange": (28, 0.55),
    "copper": (22, 0.48),
    "peach": (24, 0.74),
    "amber": (40, 0.52),
    "gold": (45, 0.55),
    "yellow": (54, 0.56),
    "lemon": (56, 0.62),
    "lime": (88, 0.5),
    "green": (122, 0.42),
    "emerald": (145, 0.4),
    "jade": (152, 0.45),
    "mint": (150, 0.7),
    "teal": (176, 0.4),
    "turquoise": (172, 0.52),
    "aqua": (184, 0.55),
    "cyan": (186, 0.52),
    "azure": (205, 0.55),
    "blue": (216, 0.5),
    "sapphire": (220, 0.42),
    "cobalt": (222, 0.45),
    "navy": (228, 0.3),
    "indigo": (246, 0.38),
    "violet": (270, 0.5),
    "purple": (280, 0.42),
    "lavender": (266, 0.74),
    "lilac": (285, 0.72),
    "magenta": (305, 0.5),
    "fuchsia": (312, 0.52),
    "pink": (336, 0.72),
    "rose": (345, 0.62),
    "brown": (26, 0.32),
    "tan": (32, 0.6),
    "bronze": (34, 0.45),
    "beige": (38, 0.78),
    "white": (None, 0.95),
    "snowy": (None, 0.95),
    "black": (None, 0.1),
    "silver": (None, 0.75),
    "grey": (None, 0.5),
    "gray": (None, 0.5),
}

# Nouns: what element of the picture they ask for, and what a colour word before them tints.
NOUNS: dict[str, str] = {}
for _target, _words in {
    "water": "ocean sea lake river beach coast bay harbor harbour pond waves wave water shore "
    "island lagoon waterfall",
    "mountains": "mountain mountains peak peaks alps volcano cliff cliffs canyon range summit",
    "forest": "forest forests woods tree trees pine pines jungle grove woodland leaves",
    "city": "city skyline town skyscraper skyscrapers buildings downtown metropolis street",
    "house": "house cabin cottage hut home barn farmhouse chalet",
    "village": "village houses hamlet",
    "sky": "sky skies clouds cloud heavens",
    "sun": "sun moon",
    "land": "hills hill field fields meadow meadows grass valley land ground prairie",
    "flowers": "flowers flower tulips poppies blossoms garden wildflowers",
    "birds": "birds bird eagle eagles crow crows seagulls gulls flock",
}.items():
    for _w in _words.split():
        NOUNS[_w] = _target

SUBJECTS: dict[str, str] = {
    "cat": "cat",
    "cats": "cat",
    "kitten": "cat",
    "kitty": "cat",
    "tabby": "cat",
    "fox": "fox",
    "foxes": "fox",
    "dog": "dog",
    "dogs": "dog",
    "puppy": "dog",
    "corgi": "dog",
    "wolf": "wolf",
    "wolves": "wolf",
    "husky": "wolf",
    "rabbit": "rabbit",
    "bunny": "rabbit",
    "hare": "rabbit",
    "deer": "deer",
    "stag": "deer",
    "elk": "deer",
    "reindeer": "deer",
    "person": "person",
    "man": "person",
    "woman": "person",
    "girl": "person",
    "boy": "person",
    "child": "person",
    "hiker": "person",
    "traveler": "person",
    "traveller": "person",
    "wizard": "person",
    "knight": "person",
    "people": "person",
    "astronaut": "astronaut",
    "boat": "boat",
    "ship": "boat",
    "sailboat": "boat",
    "yacht": "boat",
    "sailing": "boat",
    "lighthouse": "lighthouse",
    "balloon": "balloon",
    "balloons": "balloon",
    "castle": "castle",
    "palace": "castle",
    "tower": "castle",
    "fortress": "castle",
}
SUBJECT_COLOURS: dict[str, tuple[RGB, ...]] = {
    "cat": ((64, 60, 66), (214, 128, 58), (150, 146, 150), (236, 232, 226), (126, 96, 70)),
    "fox": ((222, 112, 40), (204, 92, 34)),
    "dog": ((150, 102, 62), (222, 196, 150), (70, 58, 52), (192, 140, 82)),
    "wolf": ((124, 124, 132), (98, 96, 104), (176, 172, 170)),
    "rabbit": ((186, 168, 150), (236, 232, 226), (130, 108, 90)),
    "deer": ((160, 112, 72), (138, 94, 60)),
    "person": ((200, 70, 60), (60, 98, 168), (222, 180, 60), (66, 130, 96)),
    "astronaut": ((240, 240, 238),),
    "boat": ((240, 240, 234), (196, 60, 50), (40, 60, 100)),
    "lighthouse": ((244, 242, 236),),
    "balloon": ((222, 70, 60), (240, 180, 50), (70, 120, 200), (150, 80, 170)),
    "castle": ((176, 170, 164), (150, 142, 136)),
}


def digest(*parts: object) -> bytes:
    """sha256 of the parts, separated so that ("ab", "c") and ("a", "bc") differ."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()


def _clamp(v: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if v < lo else hi if v > hi else v


# ---- HLS, as Python 3.11+ computes it ------------------------------------------------------------
# colorsys changed rgb_to_hls in 3.11 (gh-106498: 2.0 - maxc - minc, not 2.0 - sumc), which moved
# palette entries by one level on Python 3.10: the stand-in's pictures must not depend on the
# Python release, so that one function is written here (hls_to_rgb is the same in every release).


def rgb_to_hls(r: float, g: float, b: float) -> tuple[float, float, float]:
    maxc, minc = max(r, g, b), min(r, g, b)
    sumc, rangec = maxc + minc, maxc - minc
    lum = sumc / 2.0
    if minc == maxc:
        return 0.0, lum, 0.0
    s = rangec / sumc if lum <= 0.5 else rangec / (2.0 - maxc - minc)
    rc, gc, bc = (maxc - r) / rangec, (maxc - g) / rangec, (maxc - b) / rangec
    if r == maxc:
        h = bc - gc
    elif g == maxc:
        h = 2.0 + rc - bc
    else:
        h = 4.0 + gc - rc
    return (h / 6.0) % 1.0, lum, s


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend from a (t=0) to b (t=1)."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def tint(rgb: RGB, hue: float | None, lightness: float, amount: float) -> RGB:
    """Pull a colour toward a colour word: hue (degrees) and some saturation; None = achromatic."""
    h, lum, s = rgb_to_hls(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)
    if hue is None:
        s *= 1 - 0.8 * amount
        lum += (lightness - lum) * amount * 0.6
    else:
        target = hue / 360
        dh = ((target - h + 0.5) % 1.0) - 0.5
        h = (h + dh * amount) % 1.0
        s += (max(s, 0.5) - s) * amount
    r, g, b = colorsys.hls_to_rgb(h, _clamp(lum), _clamp(s))
    return (round(r * 255), round(g * 255), round(b * 255))


def rotate(rgb: RGB, degrees: float) -> RGB:
    """The same colour with its hue turned by some degrees."""
    h, lum, s = rgb_to_hls(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)
    r, g, b = colorsys.hls_to_rgb((h + degrees / 360) % 1.0, lum, s)
    return (round(r * 255), round(g * 255), round(b * 255))


def word_colour(hue: float | None, lightness: float) -> RGB:
    """The plain colour a colour word names, for objects painted in it ("a red boat")."""
    if hue is None:
        v = round(lightness * 255)
        return (v, v, v)
    r, g, b = colorsys.hls_to_rgb(hue / 360, lightness, 0.68)
    return (round(r * 255), round(g * 255), round(b * 255))


def grade(rgb: RGB, guidance: float) -> RGB:
    """Guidance as colour intensity: 0 washes the prompt's colours out, 10 over-saturates them."""
    if guidance <= 2.0:
        sat, con = 0.3 + 0.35 * guidance, 0.72 + 0.14 * guidance
    else:
        sat, con = 1.0 + (guidance - 2.0) * 0.11, 1.0 + (guidance - 2.0) * 0.05
    h, lum, s = rgb_to_hls(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)
    s = _clamp(s * sat)
    lum = _clamp(0.5 + (lum - 0.5) * con)
    r, g, b = colorsys.hls_to_rgb(h, lum, s)
    return (round(r * 255), round(g * 255), round(b * 255))


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2] in SUBJECTS:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass
class Reading:
    """What the prompt asks for, as far as the preview engine can draw it."""

    mood: str
    autumn: bool
    elements: list[str]  # ordered, no duplicates (never iterate a set of str: hash order varies)
    subject: str | None
    tints: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    washes: list[tuple[float | None, float]] = field(default_factory=list)
    jitter: float = 0.0  # a small hue shift from the exact prompt text, in degrees


def read_prompt(prompt: str) -> Reading:
    """Mood, elements, subject and colour words of a prompt;
    hashed choices where it says nothing."""
    words = re.findall(r"[a-z]+", prompt.lower())
    h = digest("prompt", prompt)
    mood = next((MOOD_WORDS[w] for w in words if w in MOOD_WORDS), None)
    if mood is None:
        mood = ("day", "golden", "dawn", "dusk", "day", "golden", "mist", "night")[h[0] % 8]
    elements: list[str] = []
    subject = None
    tints: dict[str, tuple[float | None, float]] = {}
    washes: list[tuple[float | None, float]] = []
    for i, w in enumerate(words):
        s = _singular(w)
        if subject is None and (w in SUBJECTS or s in SUBJECTS):
            subject = SUBJECTS.get(w) or SUBJECTS[s]
        target = NOUNS.get(w) or NOUNS.get(s)
        if target and target not in elements:
            elements.append(target)
        if w in COLOUR_WORDS and not (w == "snowy" and mood == "snow"):
            found = None
            for nxt in words[i + 1 : i + 4]:
                ns = _singular(nxt)
                if nxt in SUBJECTS or ns in SUBJECTS:
                    found = "subject"
                elif nxt in NOUNS or ns in NOUNS:
                    found = NOUNS.get(nxt) or NOUNS[ns]
                if found:
                    break
            if found and found not in tints:
                tints[found] = COLOUR_WORDS[w]
            elif not found:
                washes.append(COLOUR_WORDS[w])
    if subject == "boat" and "water" not in elements:
        elements.append("water")
    if subject == "lighthouse" and "water" not in elements:
        elements.append("water")
    if mood == "night" and "stars" not in elements:
        elements.append("stars")
    if not elements and subject is None:
        # Nothing drawable was named: let the prompt's hash pick a landscape so prompts differ.
        pool = ("mountains", "water", "forest", "land", "city", "flowers")
        elements = [pool[h[1] % len(pool)]]
        if h[2] % 3 == 0:
            elements.append(pool[(h[1] + 1 + h[3] % 5) % len(pool)])
        washes.append((h[4] * 360 / 256, 0.5))
    jitter = (h[5] / 255 - 0.5) * 14
    autumn = any(w in AUTUMN_WORDS for w in words)
    return Reading(mood, autumn, elements, subject, tints, washes, jitter)


class Palette:
    """The indexed palette: fixed ramps first, then flat colours allocated by name on first use."""

    def __init__(self, guidance: float):
        self.guidance = guidance
        self.entries: list[RGB] = [(0, 0, 0)] * 256
        self.names: dict[str, int] = {}
        self._next = FLAT

    def copy(self) -> Palette:
        other = Palette(self.guidance)
        other.entries, other.names, other._next = list(self.entries), dict(self.names), self._next
        return other

    def grade(self, rgb: RGB) -> RGB:
        return grade(rgb, self.guidance)

    def set(self, index: int, rgb: RGB, *, graded: bool = True) -> None:
        self.entries[index] = grade(rgb, self.guidance) if graded else rgb

    def __getitem__(self, name: str) -> int:
        return self.names[name]

    def add(self, name: str, rgb: RGB, *, graded: bool = True) -> int:
        """Index of the named colour, allocating it the first time
        (graded by guidance unless not)."""
        if name in self.names:
            return self.names[name]
        if self._next > FLAT_LAST:
            return self.names.get("front", FLAT)  # out of slots: fall back to a land colour
        index = self._next
        self._next += 1
        self.names[name] = index
        self.set(index, rgb, graded=graded)
        return index

    def rgb(self, index: int) -> RGB:
        return self.entries[index]

    def flat(self) -> list[int]:
        return [c for rgb in self.entries for c in rgb]
