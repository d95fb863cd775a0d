"""Rule-based judges: read the world's attributes back from raw media, with no learned model.

Used to score generated media (and model-written captions) against the requested caption:

    judge_image(arr)           -> {'colour': 'red', 'shape': 'circle'}
    judge_audio(wave, sr)      -> {'pitch': 'high', 'rhythm': 'beeping', 'sound': 'buzz'}
    judge_video(frames)        -> {'colour': 'blue', 'shape': 'square', 'direction': 'left'}
    parse_caption(text, 'image') -> {'colour': 'red', 'shape': 'circle'}
    judge_small_talk("Glad you like it!", "Thanks, happy you like it.") -> True
    question_truth("which", "colour", "red", [{"colour": "blue", ...}, {"colour": "red", ...}]) -> 'second'
    read_verdict("The second one is red.", "which") -> 'second'

Every judge tolerates noise, blur and codec artefacts, and answers None for an attribute it cannot
find instead of raising. A judge answers "nothing there" (every attribute None) for what is not one world
object, so that no input scores by luck: images and video frames that show nothing, noise, a full-frame
field, an outline or several objects; sound that is silent, not tonal (spectral flatness), pitched outside any
world range, with much of its power away from the odd harmonics of its pitch (where every world sound has it)
or with an overtone as strong as its fundamental (two pitches at once).
"""

from __future__ import annotations

import re

import numpy as np

from nextgpt.world.prompts import SMALL_TALK_CONTENT
from nextgpt.world.vocab import ATTRIBUTES, COLOURS

CHROMA_MIN = 0.25         # max(rgb) - min(rgb) in [0, 1]: below it a pixel is background (white/grey/black)
MIN_PIXELS = 12           # fewer foreground pixels than this means "no shape"
FILL_TRIANGLE_MAX = 0.62  # bounding-box fill ratio: triangle ~0.5, circle ~0.785, square ~1.0
FILL_CIRCLE_MAX = 0.89
TRIANGLE_OFFSET = 0.045   # |centroid row - box centre| / box height: triangle ~0.16, circle/square ~0
PITCH_SPLIT_HZ = 500.0    # low (200-300 Hz) vs high (800-1200 Hz)
BAND_HZ = 40.0            # half-width of the spectral band measured around a harmonic
BUZZ_RATIO = 0.03         # energy(3, 5, 7 f0) / energy(f0): a square wave has 1/9 + 1/25 + 1/49 = 0.17, a sine ~0
BEEP_CV = 0.35            # coefficient of variation of the 20 ms envelope: beeping ~0.85, steady ~0.02
MIN_MOTION_PX = 4.0       # a smaller centroid displacement over the clip means "no direction"
# what counts as one world object (the world draws one filled, one-coloured shape of 18-40 px in a 64 px frame)
MAX_AREA = 0.5            # foreground above this fraction of the frame: a field or noise, not a shape (max ~0.39)
SECOND_OBJECT = 0.15      # a second component this large (x the largest) means several objects
MIN_SOLIDITY = 0.7        # area / area with holes filled: a filled shape ~1, an outline far less
MIN_HUE_SHARE = 0.7       # share of the object's pixels within HUE_TOLERANCE of its colour's hue: one colour
HUE_TOLERANCE = 35.0      # degrees; shading into a neighbouring hue (red 0 / orange 28) is still one colour
MIN_OBJECT_FRAMES = 0.75  # a clip is judged when at least this share of its frames shows one world object
# world sounds: a sine or an odd-harmonic square wave
MAX_FLATNESS = 0.3        # spectral flatness (geometric / arithmetic mean of power) up to where 99 % of the power
                          # lies: noise ~0.56, tones ~0
F0_RANGE_HZ = (100.0, 2000.0)  # world pitches are 200-300 and 800-1200 Hz
HARMONIC_BAND_HZ = 100.0  # half-width of a harmonic's band for the power share: a tone modulated at up to 100 Hz
                          # (a vocoder's frame rate at hop 160) keeps its sidebands inside
MIN_HARMONIC_SHARE = 0.6  # share of the power in the bands around f0 and its odd harmonics
MAX_OVERTONE = 0.5        # an odd harmonic with this share of the fundamental's power: a second pitch (square ~0.11)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of (..., 3) floats in [0, 1]."""
    r, g, b = np.moveaxis(rgb, -1, 0)
    hi, lo = rgb.max(-1), rgb.min(-1)
    chroma = np.where(hi > lo, hi - lo, 1.0)
    h = np.where(hi == r, ((g - b) / chroma) % 6, np.where(hi == g, (b - r) / chroma + 2, (r - g) / chroma + 4))
    return h * 60.0


_NAMES = list(COLOURS)
_PALETTE_HUES = _hue(np.array(list(COLOURS.values()), dtype=np.float64) / 255.0)  # (K,)


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    """Any image-like array (H, W), (H, W, 3|4), uint8 or float -> (H, W, 3) float64 in [0, 1]."""
    x = np.asarray(arr)
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    scale = 255.0 if x.dtype == np.uint8 or (finite.size and finite.max() > 1.5) else 1.0
    x = np.nan_to_num(x.astype(np.float64) / scale, nan=1.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    return x[..., :3]


def _foreground(rgb: np.ndarray) -> np.ndarray:
    """Saturated (non-white, non-grey, non-black) pixels -> (H, W) bool."""
    return (rgb.max(-1) - rgb.min(-1)) > CHROMA_MIN


def _colour(pixels: np.ndarray, min_share: float = 0.0) -> str | None:
    """Majority vote of the nearest palette hue over (N, 3) foreground pixels; None when fewer than
    `min_share` of them lie within HUE_TOLERANCE of the winner's hue (several colours, noise)."""
    if len(pixels) < MIN_PIXELS:
        return None
    dist = np.abs(_hue(pixels)[:, None] - _PALETTE_HUES[None, :])  # (N, K)
    dist = np.minimum(dist, 360.0 - dist)
    winner = int(np.bincount(dist.argmin(1), minlength=len(_NAMES)).argmax())
    if (dist[:, winner] <= HUE_TOLERANCE).mean() < min_share:
        return None
    return _NAMES[winner]


def _one_object(rgb: np.ndarray) -> np.ndarray | None:
    """The (H, W) mask of the one filled, one-coloured world object in `rgb`, or None when the image shows
    nothing, noise, a full-frame field, an outline or several objects. Specks below SECOND_OBJECT x the
    largest component (noise, codec ringing) are left out of the mask."""
    from scipy import ndimage

    mask = _box_mean3(_foreground(rgb).astype(np.float64)) > 0.5   # (H, W): majority of the 3x3 neighbourhood
    if mask.sum() < MIN_PIXELS or mask.mean() > MAX_AREA:
        return None
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]                          # (n,)
    order = np.argsort(sizes)[::-1]
    if n > 1 and sizes[order[1]] >= max(MIN_PIXELS, SECOND_OBJECT * sizes[order[0]]):
        return None
    obj = labels == order[0] + 1
    if obj.sum() < MIN_PIXELS or obj.sum() / ndimage.binary_fill_holes(obj).sum() < MIN_SOLIDITY:
        return None
    if _colour(rgb[obj & _foreground(rgb)], MIN_HUE_SHARE) is None:
        return None
    return obj


def _box_mean3(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter (edge-padded): suppresses pixel noise before thresholding."""
    p = np.pad(x, 1, mode="edge")
    return sum(p[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3)) / 9.0


def _shape_features(rgb: np.ndarray) -> tuple[float, float] | None:
    """(fill ratio of the bounding box, vertical centroid offset / height) of the shape, or None.

    The mask is the denoised chroma above half the shape's own median chroma, i.e. the true edge even
    when blurred; rows/columns holding a single stray pixel do not stretch the box. Fill: triangle ~0.5,
    circle ~0.785, square ~1.0. Offset: an apex-up triangle's mass sits 1/6 of its height below the box
    centre, circles and squares 0.
    """
    chroma = rgb.max(-1) - rgb.min(-1)                       # (H, W)
    seed = chroma > CHROMA_MIN
    if seed.sum() < MIN_PIXELS:
        return None
    mask = _box_mean3(chroma) > 0.5 * np.median(chroma[seed])  # (H, W)
    rows, cols = np.flatnonzero(mask.sum(1) >= 2), np.flatnonzero(mask.sum(0) >= 2)
    if len(rows) < 3 or len(cols) < 3:
        return None
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]   # (h, w)
    if box.sum() < MIN_PIXELS:
        return None
    centroid_row = (box.sum(1) * np.arange(box.shape[0])).sum() / box.sum()
    return float(box.mean()), float((centroid_row - (box.shape[0] - 1) / 2) / box.shape[0])


def _shape(features: tuple[float, float] | None) -> str | None:
    if features is None:
        return None
    fill, offset = features
    if abs(offset) > TRIANGLE_OFFSET or fill < FILL_TRIANGLE_MAX:
        return "triangle"
    return "circle" if fill < FILL_CIRCLE_MAX else "square"


def _isolate(rgb: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """`rgb` with everything but the object (and a 2 px rim for its blurred edge) painted white."""
    from scipy import ndimage

    keep = ndimage.binary_dilation(obj, iterations=2)
    return np.where(keep[..., None], rgb, 1.0)


def judge_image(arr: np.ndarray) -> dict[str, str | None]:
    """Colour and shape of the one shape in an image -> {'colour': ..., 'shape': ...}; both None when the
    image does not show exactly one filled, one-coloured object."""
    rgb = _as_rgb(arr)                # (H, W, 3)
    obj = _one_object(rgb) if rgb.size else None
    if obj is None:
        return {"colour": None, "shape": None}
    return {"colour": _colour(rgb[obj & _foreground(rgb)]), "shape": _shape(_shape_features(_isolate(rgb, obj)))}


def judge_video(frames: np.ndarray) -> dict[str, str | None]:
    """Colour, shape and motion direction of a (T, H, W, 3) clip (None where it cannot tell)."""
    frames = np.asarray(frames)
    if frames.ndim == 3 and frames.shape[-1] not in (3, 4):  # (T, H, W) greyscale
        frames = frames[..., None].repeat(3, -1)
    nothing = {"colour": None, "shape": None, "direction": None}
    rgbs = [_as_rgb(f) for f in frames]
    objects = [_one_object(rgb) if rgb.size else None for rgb in rgbs]  # per frame: the object's mask or None
    shown = [(t, rgb, obj) for t, (rgb, obj) in enumerate(zip(rgbs, objects)) if obj is not None]
    if not rgbs or len(shown) < MIN_OBJECT_FRAMES * len(rgbs):
        return nothing
    masks = [obj & _foreground(rgb) for _, rgb, obj in shown]
    pixels = np.concatenate([rgb[m] for (_, rgb, _), m in zip(shown, masks)])
    if _colour(pixels, MIN_HUE_SHARE) is None:  # one colour over the clip, not a different one per frame
        return nothing
    features = [f for f in (_shape_features(_isolate(rgb, obj)) for _, rgb, obj in shown) if f is not None]
    # centroid track of the frames that show the object: (t, x, y)
    track = np.array([(t, *np.argwhere(obj)[:, ::-1].mean(0)) for t, _, obj in shown])
    direction = None
    if len(track) >= 2:
        dx, dy = (np.polyfit(track[:, 0], track[:, k], 1)[0] * (track[-1, 0] - track[0, 0]) for k in (1, 2))
        if max(abs(dx), abs(dy)) >= MIN_MOTION_PX:
            direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    shape = _shape(tuple(np.median(features, axis=0))) if features else None
    return {"colour": _colour(pixels), "shape": shape, "direction": direction}


def judge_audio(wave: np.ndarray, sr: int = 16000) -> dict[str, str | None]:
    """Pitch, rhythm and sound of a mono clip -> {'pitch', 'rhythm', 'sound'}; all None for silence and for
    sound that is not one world tone or buzz (noise, several pitches)."""
    x = np.nan_to_num(np.asarray(wave, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    window = int(0.02 * sr)  # 20 ms
    if x.ndim == 2 and x.size:  # (N, C) or (C, N) -> mono
        x = x.mean(axis=int(np.argmin(x.shape)))
    x = x.reshape(-1)
    if x.size < 4 * window or np.std(x) < 1e-4:  # too short, silent or constant
        return {"pitch": None, "rhythm": None, "sound": None}
    x = x - x.mean()

    # 1. pitch: strongest spectral peak above 60 Hz
    spectrum = np.fft.rfft(x * np.hanning(x.size))                  # (F,)
    power = np.abs(spectrum) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)                       # (F,)
    f0 = float(freqs[np.argmax(np.where(freqs >= 60.0, power, 0.0))])

    # 2. a world sound at all? tonal (flat spectra are noise) and its power at f0 and the odd harmonics
    def band(f: float) -> np.ndarray:
        return np.abs(freqs - f) <= BAND_HZ

    top = freqs[min(int(np.searchsorted(np.cumsum(power) / power.sum(), 0.99)), len(freqs) - 1)]
    audible = power[(freqs >= 60.0) & (freqs <= max(top, 120.0))]
    flatness = float(np.exp(np.mean(np.log(audible + 1e-30))) / max(audible.mean(), 1e-30))
    odd = np.arange(1, (sr / 2 - BAND_HZ) / f0 + 1, 2) * f0  # f0, 3 f0, 5 f0, ... below Nyquist
    wide = [power[np.abs(freqs - f) <= HARMONIC_BAND_HZ].sum() for f in odd]  # power around each odd harmonic
    harmonic_share = float(sum(wide) / max(power.sum(), 1e-30))
    overtone = max(wide[1:], default=0.0) / max(wide[0], 1e-30)
    if (flatness > MAX_FLATNESS or not F0_RANGE_HZ[0] <= f0 <= F0_RANGE_HZ[1] or harmonic_share < MIN_HARMONIC_SHARE
            or overtone > MAX_OVERTONE):
        return {"pitch": None, "rhythm": None, "sound": None}

    # 3. sound: a square wave's odd harmonics carry 1/9, 1/25, 1/49 ... of its fundamental's power, a sine's none
    overtones = odd[1:4]  # 3, 5, 7 f0 where below Nyquist
    ratio = sum(power[band(f)].sum() for f in overtones) / max(power[band(f0)].sum(), 1e-12)

    # 4. rhythm: RMS envelope of the f0 band (so broadband noise does not fill the gaps) in 20 ms windows
    narrow = np.fft.irfft(np.where(np.abs(freqs - f0) <= 1.5 * BAND_HZ, np.fft.rfft(x), 0.0), n=x.size)
    n_win = x.size // window
    env = np.sqrt((narrow[:n_win * window].reshape(n_win, window) ** 2).mean(1))[2:-2]  # (W,) minus fades
    cv = float(env.std() / max(env.mean(), 1e-12)) if env.size else 0.0

    return {"pitch": "high" if f0 >= PITCH_SPLIT_HZ else "low",
            "rhythm": "beeping" if cv > BEEP_CV else "steady",
            "sound": "buzz" if ratio > BUZZ_RATIO else "tone"}


def parse_caption(text: str, modality: str) -> dict[str, str | None]:
    """Vocabulary words of `modality` found in free text (first mention wins; None if missing)."""
    lowered = text.lower()
    found = {}
    for attribute, words in ATTRIBUTES[modality].items():
        hits = [(m.start(), w) for w in words for m in re.finditer(rf"\b{re.escape(w)}\b", lowered)]
        found[attribute] = min(hits)[1] if hits else None
    return found


def _says(text: str, group: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}(s|es)?\b", text) for w in group)


def judge_small_talk(reference: str, reply: str) -> bool | None:
    """Does `reply` say what the small-talk answer `reference` says (`prompts.SMALL_TALK_CONTENT`: thanks
    acknowledged, a greeting returned, the abilities named)? None when `reference` is not small talk."""
    readings = SMALL_TALK_CONTENT.get(reference.strip())
    if readings is None:
        return None
    lowered = reply.lower()
    return any(all(_says(lowered, group) for group in reading) for reading in readings)


_VERDICT_WORDS = {"check": ("yes", "no"), "same": ("yes", "no"), "which": ("first", "second")}


def question_truth(form: str, attribute: str, word: str | None, items: list[dict[str, str]]) -> str:
    """The right verdict of a question about uploaded items (their world attributes, in upload order): 'check'
    (is the one item `word`?) and 'same' (do the two share `attribute`?) -> 'yes' | 'no'; 'which' (which of the two
    is `word`?) -> 'first' | 'second'. See `prompts.question_senses` for what each phrasing asks."""
    values = [item[attribute] for item in items]
    if form == "check":
        return "yes" if values[0] == word else "no"
    if form == "same":
        return "yes" if values[0] == values[1] else "no"
    if form == "which":
        if (values[0] == word) == (values[1] == word):
            raise ValueError(f"which of {values} is {word!r} has no single answer")
        return "first" if values[0] == word else "second"
    raise ValueError(f"unknown question form {form!r}")


def read_verdict(text: str, form: str) -> str | None:
    """The verdict a reply gives to a question of `form`: its first 'yes' / 'no' (check, same) or 'first' /
    'second' (which); None when it gives none."""
    words = _VERDICT_WORDS[form]
    found = re.search(r"\b(" + "|".join(words) + r")\b", text.lower())
    return found.group(1) if found else None
