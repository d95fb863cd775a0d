"""The world's vocabulary: which attributes each modality has, their exact words, and one spec per item.

A spec is a frozen dataclass holding the categorical attributes (the words in its caption) plus the
continuous parameters that make each sample unique (size, position, f0, ...). `spec.render()` gives the
raw media, `spec.caption` the exact caption, `spec.edited(attr, value)` the same item with one word changed.

    rng = np.random.default_rng(0)
    spec = sample_spec("image", rng)   # ImageSpec(shape='circle', colour='green', size=37, cx=35.5, cy=32.5)
    spec.caption                        # 'a green circle'
    spec.render().shape                 # (64, 64, 3) uint8
    spec.edited("colour", "red")        # the same circle, now 'a red circle'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Union

import numpy as np

from nextgpt.config import MODALITY_INFO
from nextgpt.world.render import draw_shape, synth_sound

FRAME = 64             # image / video frame side in pixels
SAMPLE_RATE = 16000    # audio sample rate in Hz
AUDIO_SECONDS = 2.0    # audio clip length
VIDEO_FPS = 8          # video frame rate

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
PITCH_RANGES: dict[str, tuple[float, float]] = {"low": (200.0, 300.0), "high": (800.0, 1200.0)}

MODALITIES = tuple(spec.name for spec in MODALITY_INFO.values())  # ("image", "audio", "video"): the world's keys

# modality -> attribute -> allowed words (the whole vocabulary, as data)
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "image": {"colour": tuple(COLOURS), "shape": SHAPES},
    "audio": {"pitch": tuple(PITCH_RANGES), "rhythm": ("steady", "beeping"), "sound": ("tone", "buzz")},
    "video": {"colour": tuple(COLOURS), "shape": SHAPES, "direction": DIRECTIONS},
}
CAPTION_TEMPLATES: dict[str, str] = {
    "image": "a {colour} {shape}",
    "audio": "a {pitch} {rhythm} {sound}",
    "video": "a {colour} {shape} moving {direction}",
}
MEDIA_TOKENS: dict[str, str] = {s.name: s.media_token for s in MODALITY_INFO.values()}  # placeholder in conversation text
# How a model trained on this world says what it knows (copied into a checkpoint's world.json): a gist for
# short notices, and a phrase whose {attribute} becomes that attribute's words ("circle, square or triangle")
WORLD_GISTS: dict[str, str] = {
    "image": "coloured shapes on white",
    "audio": "tones and buzzes, steady or beeping",
    "video": "one coloured shape moving in a straight line",
}
WORLD_PHRASES: dict[str, str] = {
    "image": "one {shape} in {colour}, on white",
    "audio": "a {pitch} {sound}, {rhythm}",
    "video": "a coloured {shape} moving {direction}",
}

# Attribute combinations held out of the train and val splits (no caption or target there has them, in any
# modality); the test split holds them, and the eval reports them as their own row. Each colour is in at most
# one pair per kind, so `without_held_out` can move an item off a pair by changing one word.
HELD_OUT_PAIRS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("colour", "shape"): (("purple", "triangle"), ("orange", "circle"), ("green", "square")),
    ("colour", "direction"): (("red", "up"), ("blue", "left"), ("yellow", "down")),
}


def without_held_out(spec: "Spec") -> "Spec":
    """`spec` itself, or, when it has a held-out combination, the same item in the next colour (COLOURS order)
    that forms none. Deterministic, with no random draw, so a split's other items stay as they were."""
    if not held_out_pairs(spec.modality, spec.attributes):
        return spec
    colours = list(COLOURS)
    start = colours.index(spec.colour)
    for k in range(1, len(colours)):
        moved = spec.edited("colour", colours[(start + k) % len(colours)])
        if not held_out_pairs(moved.modality, moved.attributes):
            return moved
    raise ValueError(f"no colour takes {spec.caption!r} off the held-out combinations")


def held_out_pairs(modality: str, attributes: dict[str, str]) -> list[str]:
    """The held-out combinations an item has, as words ('purple triangle', 'red up'); [] for none."""
    found = []
    for (a, b), pairs in HELD_OUT_PAIRS.items():
        if a in ATTRIBUTES[modality] and b in ATTRIBUTES[modality] and (attributes.get(a), attributes.get(b)) in pairs:
            found.append(f"{attributes[a]} {attributes[b]}")
    return found


class _Spec:
    """Behaviour shared by all specs; subclasses are frozen dataclasses with a `modality` ClassVar."""

    modality: ClassVar[str]

    @property
    def attributes(self) -> dict[str, str]:
        """The categorical attributes, in caption order, e.g. {'colour': 'red', 'shape': 'circle'}."""
        return {name: getattr(self, name) for name in ATTRIBUTES[self.modality]}

    @property
    def caption(self) -> str:
        return CAPTION_TEMPLATES[self.modality].format(**self.attributes)

    def edited(self, attribute: str, value: str) -> "Spec":
        """The same item with one attribute changed (continuous parameters kept)."""
        if value not in ATTRIBUTES[self.modality].get(attribute, ()):
            raise ValueError(f"{value!r} is not a {self.modality} {attribute}")
        return dataclasses.replace(self, **{attribute: value})


@dataclass(frozen=True)
class ImageSpec(_Spec):
    shape: str
    colour: str
    size: int     # side of the shape's bounding box, px
    cx: float     # centre x, px (0 = left edge)
    cy: float     # centre y, px (0 = top edge)
    modality: ClassVar[str] = "image"

    def render(self) -> np.ndarray:
        """-> (64, 64, 3) uint8, white background."""
        return draw_shape(self.shape, COLOURS[self.colour], self.size, self.cx, self.cy, FRAME)


@dataclass(frozen=True)
class AudioSpec(_Spec):
    pitch: str
    rhythm: str
    sound: str
    f0: float     # fundamental frequency, Hz, inside PITCH_RANGES[pitch]
    rate: float   # beeps per second (used only when rhythm == 'beeping')
    modality: ClassVar[str] = "audio"

    def render(self) -> np.ndarray:
        """-> (32000,) float32 in [-1, 1] at 16 kHz."""
        beep = self.rate if self.rhythm == "beeping" else None
        return synth_sound(self.f0, self.sound == "buzz", beep, AUDIO_SECONDS, SAMPLE_RATE)

    def edited(self, attribute: str, value: str) -> "AudioSpec":
        spec = super().edited(attribute, value)
        if attribute == "pitch":  # keep f0's relative place inside the new range
            (lo, hi), (new_lo, new_hi) = PITCH_RANGES[self.pitch], PITCH_RANGES[value]
            spec = dataclasses.replace(spec, f0=new_lo + (self.f0 - lo) / (hi - lo) * (new_hi - new_lo))
        return spec


@dataclass(frozen=True)
class VideoSpec(_Spec):
    shape: str
    colour: str
    direction: str
    size: int          # bounding-box side, px
    travel: float      # distance moved over the clip, px (>= 24)
    start: float       # in [0, 1]: where the path starts within the free room along the motion axis
    lane: float        # centre coordinate on the axis perpendicular to the motion, px
    n_frames: int = 8  # 8..16 frames at VIDEO_FPS
    modality: ClassVar[str] = "video"

    def centres(self) -> np.ndarray:
        """Shape centre per frame -> (T, 2) as (x, y) in px."""
        half = self.size / 2
        lo = 1 + half + self.start * (FRAME - 2 - self.size - self.travel)
        along = np.linspace(lo, lo + self.travel, self.n_frames)  # (T,) increasing
        if self.direction in ("left", "up"):
            along = along[::-1]
        across = np.full(self.n_frames, self.lane)
        horizontal = self.direction in ("left", "right")
        return np.stack([along, across] if horizontal else [across, along], axis=1)

    def render(self) -> np.ndarray:
        """-> (T, 64, 64, 3) uint8."""
        rgb = COLOURS[self.colour]
        return np.stack([draw_shape(self.shape, rgb, self.size, x, y, FRAME) for x, y in self.centres()])


Spec = Union[ImageSpec, AudioSpec, VideoSpec]


def _pick(rng: np.random.Generator, modality: str) -> dict[str, str]:
    """One uniformly random word per attribute of `modality`."""
    return {name: words[rng.integers(len(words))] for name, words in ATTRIBUTES[modality].items()}


def sample_image_spec(rng: np.random.Generator) -> ImageSpec:
    size = int(rng.integers(18, 41))
    cx, cy = (rng.integers(1, FRAME - size, size=2) + size / 2).tolist()  # box fully inside, 1 px margin
    return ImageSpec(size=size, cx=cx, cy=cy, **_pick(rng, "image"))


def sample_audio_spec(rng: np.random.Generator) -> AudioSpec:
    words = _pick(rng, "audio")
    f0 = float(rng.uniform(*PITCH_RANGES[words["pitch"]]))
    return AudioSpec(f0=round(f0, 2), rate=round(float(rng.uniform(3.0, 5.0)), 3), **words)


def sample_video_spec(rng: np.random.Generator, n_frames: int = 8) -> VideoSpec:
    if not 8 <= n_frames <= 16:
        raise ValueError(f"n_frames must be in 8..16, got {n_frames}")
    size = int(rng.integers(14, 25))
    travel = float(rng.uniform(24.0, min(40.0, FRAME - 2 - size)))
    half = size / 2
    lane = float(rng.uniform(1 + half, FRAME - 1 - half))
    return VideoSpec(size=size, travel=round(travel, 2), start=round(float(rng.uniform()), 3),
                     lane=round(lane, 2), n_frames=n_frames, **_pick(rng, "video"))


SAMPLERS: dict[str, Callable[..., Spec]] = {
    "image": sample_image_spec,
    "audio": sample_audio_spec,
    "video": sample_video_spec,
}


def sample_spec(modality: str, rng: np.random.Generator, n_frames: int = 8) -> Spec:
    """A random item of `modality` ('image' | 'audio' | 'video'); `n_frames` applies to video only."""
    return sample_video_spec(rng, n_frames) if modality == "video" else SAMPLERS[modality](rng)


def random_edit(spec: Spec, rng: np.random.Generator) -> tuple[str, str, Spec]:
    """Change exactly one attribute to a different word -> (attribute, new word, new spec)."""
    names = list(ATTRIBUTES[spec.modality])
    attribute = names[rng.integers(len(names))]
    choices = [w for w in ATTRIBUTES[spec.modality][attribute] if w != getattr(spec, attribute)]
    value = choices[rng.integers(len(choices))]
    return attribute, value, spec.edited(attribute, value)
