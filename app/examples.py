"""The chat's clickable examples: one per conversion type, with media and thumbnails drawn by the nano world.

    python -m app.examples            # (re)writes assets/examples/ and its thumbnails/

Prompts use the phrasings the nano model was tuned on (nextgpt/world/prompts.py). Each example has a plain
title and a thumbnail for the empty chat's example slots; the first four are the ones a new user sees first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextgpt.media import save_audio, save_image, save_video
from nextgpt.world import SAMPLE_RATE, VIDEO_FPS, AudioSpec, ImageSpec, VideoSpec

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
THUMBNAILS = "thumbnails"  # sub-folder of EXAMPLES_DIR

# file name -> the world item it shows (fixed parameters: the assets are reproducible)
ASSETS = {
    "green_triangle.png": ImageSpec(shape="triangle", colour="green", size=36, cx=32.0, cy=32.0),
    "high_steady_buzz.wav": AudioSpec(pitch="high", rhythm="steady", sound="buzz", f0=1000.0, rate=4.0),
    "orange_circle_moving_up.mp4": VideoSpec(shape="circle", colour="orange", direction="up", size=20,
                                             travel=32.0, start=0.5, lane=32.0, n_frames=8),
}


def _image(shape: str, colour: str) -> ImageSpec:
    return ImageSpec(shape=shape, colour=colour, size=36, cx=32.0, cy=32.0)


# thumbnail file name -> the world items drawn side by side in it (an image, a sound's envelope, a video's path)
THUMBNAIL_ITEMS: dict[str, tuple[ImageSpec | AudioSpec | VideoSpec, ...]] = {
    "describe_picture.png": (ASSETS["green_triangle.png"],),
    "draw.png": (_image("circle", "red"),),
    "make_sound.png": (AudioSpec(pitch="low", rhythm="beeping", sound="tone", f0=300.0, rate=4.0),),
    "edit_picture.png": (ASSETS["green_triangle.png"], _image("triangle", "blue")),
    "make_video.png": (VideoSpec(shape="square", colour="blue", direction="right", size=20, travel=32.0,
                                 start=0.5, lane=32.0, n_frames=8),),
    "describe_sound.png": (ASSETS["high_steady_buzz.wav"],),
    "describe_video.png": (ASSETS["orange_circle_moving_up.mp4"],),
    "conversation.png": (_image("square", "yellow"), _image("square", "purple")),
    "abilities.png": (_image("circle", "red"), ASSETS["high_steady_buzz.wav"]),
}


@dataclass(frozen=True)
class Example:
    title: str  # what a new user reads in the example slot, e.g. "Edit my picture"
    conversion: str  # what it shows, e.g. "T+I->I"
    turns: tuple[tuple[str, tuple[str, ...]], ...]  # per user turn: (text, names of files in EXAMPLES_DIR)
    thumbnail: str  # a key of THUMBNAIL_ITEMS

    @property
    def thumbnail_path(self) -> Path:
        return EXAMPLES_DIR / THUMBNAILS / self.thumbnail


EXAMPLES: tuple[Example, ...] = (
    Example("Describe a picture", "I->T", (("What does this image show?", ("green_triangle.png",)),),
            "describe_picture.png"),
    Example("Draw something", "T->I", (("Draw a red circle.", ()),), "draw.png"),
    Example("Make a sound", "T->A", (("Please play a low beeping tone.", ()),), "make_sound.png"),
    Example("Edit my picture", "T+I->I", (("Now make it blue.", ("green_triangle.png",)),), "edit_picture.png"),
    Example("Make a video", "T->V", (("Make a video of a blue square moving right.", ()),), "make_video.png"),
    Example("Describe a sound", "A->T", (("Describe the sound.", ("high_steady_buzz.wav",)),),
            "describe_sound.png"),
    Example("Describe a video", "V->T", (("What happens in this video?", ("orange_circle_moving_up.mp4",)),),
            "describe_video.png"),
    Example("Draw, change, ask", "multi-turn",
            (("Draw a yellow square.", ()), ("Now make it purple.", ()), ("What shape is it?", ())),
            "conversation.png"),
    Example("What can you do?", "T->T", (("What can you do?", ()),), "abilities.png"),
)


def _panel(item: ImageSpec | AudioSpec | VideoSpec) -> np.ndarray:
    """One 64x64 RGB panel: an image as is, a video's frames overlaid (its path), a sound's envelope as bars."""
    if isinstance(item, ImageSpec):
        return item.render()
    if isinstance(item, VideoSpec):
        frames = item.render().astype(np.float32)  # (T, 64, 64, 3)
        fade = np.linspace(0.25, 1.0, len(frames))[:, None, None, None]  # later frames stronger
        return (255 - ((255 - frames) * fade).max(axis=0)).round().astype(np.uint8)
    wave = np.abs(item.render())
    bars = wave[: wave.size // 16 * 16].reshape(16, -1).max(axis=1)  # (16,) loudness over the clip
    panel = np.full((64, 64, 3), 255, np.uint8)
    for i, level in enumerate(bars / max(float(bars.max()), 1e-9)):  # a bar every 4 px: rhythm at a glance
        half = max(1, round(level * 24))
        panel[32 - half: 32 + half, 1 + 4 * i: 4 + 4 * i] = (60, 60, 160)
    return panel


def thumbnail(name: str) -> np.ndarray:
    """The thumbnail `name` (a key of THUMBNAIL_ITEMS) -> (64, 64, 3) uint8: one panel, or two at half size."""
    panels = [_panel(item) for item in THUMBNAIL_ITEMS[name]]
    if len(panels) == 1:
        return panels[0]
    out = np.full((64, 64, 3), 255, np.uint8)
    for i, panel in enumerate(panels[:2]):
        out[16:48, 32 * i: 32 * i + 32] = panel.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return out


def make_assets(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """Render every example file into `folder` and every thumbnail into `folder`/thumbnails."""
    folder = Path(folder)
    written = []
    for name, spec in ASSETS.items():
        media = spec.render()
        path = folder / name
        if isinstance(spec, ImageSpec):
            written.append(save_image(media, path))
        elif isinstance(spec, AudioSpec):
            written.append(save_audio(media, path, SAMPLE_RATE))
        else:
            written.append(save_video(media, path, fps=VIDEO_FPS))
    (folder / THUMBNAILS).mkdir(parents=True, exist_ok=True)
    for name in THUMBNAIL_ITEMS:
        written.append(save_image(thumbnail(name), folder / THUMBNAILS / name))
    return written


if __name__ == "__main__":
    for p in make_assets():
        print(p)
