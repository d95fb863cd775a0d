"""Files <-> arrays: the single place that reads user media and writes generated media.

    from nextgpt import media

    item = media.load(Modality.VIDEO, "clip.mp4")       # one result type for every modality
    item.array, item.notes, item.fps                    # (T, H, W, 3) uint8, ["..."], 12.5 (video only)
    media.save(Modality.AUDIO, wave, "out.wav")         # the modality's writer

The loaders per modality, which `load` and `save` dispatch to (`LOADERS`, `WRITERS`: a new modality adds a row):

    load_image("cat.png").array                        # (H, W, 3) uint8
    load_audio("dog.m4a").array                        # (N,) float32 in [-1, 1] at 16 kHz, mono
    load_video("clip.mp4").fps                         # array (T, H, W, 3) uint8, short side <= 256
    save_video(frames, "out.mp4", fps=8)               # H.264, yuv420p

Every loader detects the format from the file's bytes, never from its name, and either returns
a `Loaded`, the array plus ``notes`` (short user-facing sentences about what was changed: "stereo audio was
mixed down to mono"), or raises ``MediaError`` whose message can be shown to the user as is.

Libraries: PIL for images and animated images, soundfile (libsndfile) for audio, and the ffmpeg
binary shipped by imageio-ffmpeg (the back end of imageio's FFMPEG plugin) for video and for audio
that libsndfile cannot read (m4a/aac, audio inside video files). Video is decoded by one ffmpeg
process whose own ``fps`` and ``scale`` filters sample and downscale the frames, which arrive as a
PPM stream; a long 4K video is therefore never held in memory at full size or full frame count.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# soundfile, scipy and imageio_ffmpeg are imported inside the functions that read or write files: a model that
# is given arrays (the 7B benchmark on a GPU machine) needs none of them.

from nextgpt.config import Modality

logger = logging.getLogger(__name__)

PathLike = str | Path


class MediaError(ValueError):
    """A media file cannot be used. The message is written for the user (no traceback, no internals)."""


@dataclass(frozen=True)
class MediaLimits:
    """What the loaders accept; beyond a limit they either shrink the media (with a note) or refuse it."""

    max_file_mb: float = 50.0  # larger files are refused before being opened
    max_image_pixels: int = 40_000_000  # width * height above this is refused (decompression bombs)
    max_image_side: int = 2048  # larger images are downscaled (aspect kept) while loading
    max_audio_seconds: float = 30.0  # longer audio is trimmed to its beginning
    max_video_seconds: float = 30.0  # longer video is trimmed to its beginning
    max_video_frames_read: int = 64  # more frames than this are sampled evenly over the video
    max_video_short_side: int = 256  # frames are downscaled by ffmpeg so the short side is at most this


DEFAULT_LIMITS = MediaLimits()
_FFMPEG_TIMEOUT_S = 120.0
# ffmpeg demuxers that are not audio/video: ANSI art (accepts text files) and still-image readers
# (picked by file extension, so a text file named .png would "be a video"); PIL handles real images.
_NOT_MEDIA_FORMATS = {"tty", "image2"}


@dataclass(frozen=True)
class Loaded:
    """One media file read by a loader (`load`, `load_image`, `load_audio`, `load_video`)."""

    array: np.ndarray  # image (H, W, 3) uint8 | audio (N,) float32 at 16 kHz | video (T, H, W, 3) uint8
    notes: list[str]  # user-facing sentences on what was changed while reading ("... was mixed down to mono")
    fps: float | None = None  # video only: frames per second of `array`


# ---- shared checks --------------------------------------------------------------------------------
def _check_file(path: PathLike, limits: MediaLimits) -> Path:
    """Existence, emptiness and size checks common to every loader."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path.name} was not found")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"{path.name} is empty")
    if size > limits.max_file_mb * 1024 * 1024:
        raise MediaError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {limits.max_file_mb:g} MB")
    return path


def _fit_short_side(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) scaled down so that min(w, h) <= short_side; never scaled up."""
    scale = short_side / min(width, height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


# ---- images ---------------------------------------------------------------------------------------
def _pil_to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8; transparency is composited on white."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        arr = np.asarray(im, dtype=np.float64)  # (H, W)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif mode != "F":
            arr = arr / 257.0  # 0..65535 -> 0..255
            notes.append("the 16-bit image was reduced to 8 bits per channel")
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            notes.append("transparent areas were placed on a white background")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    elif mode == "CMYK":
        notes.append("the CMYK image was converted to RGB")
    elif mode in ("1", "L"):
        notes.append("the greyscale image was converted to RGB")
    return np.array(im.convert("RGB"), dtype=np.uint8)


def load_image(path: PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> Loaded:
    """Read an image file (any format PIL knows, detected from its bytes) as (H, W, 3) uint8 RGB.

    Handles greyscale, palette, RGBA/LA (on white), CMYK, 16-bit, EXIF orientation, animated images
    (first frame) and downscales images whose long side exceeds ``limits.max_image_side``.
    """
    path = _check_file(path, limits)
    notes: list[str] = []
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > limits.max_image_pixels:
                raise MediaError(
                    f"{path.name} is {width}x{height} pixels; the limit is "
                    f"{limits.max_image_pixels / 1e6:g} megapixels"
                )
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                notes.append(f"the image is animated ({frames} frames); only the first frame is used")
                im.seek(0)
            long_side = max(width, height)
            if long_side > limits.max_image_side:
                scale = limits.max_image_side / long_side
                im.draft(im.mode, (round(width * scale), round(height * scale)))  # JPEG: decode smaller
            if im.getexif().get(0x0112, 1) != 1:  # EXIF Orientation
                im = ImageOps.exif_transpose(im)
                notes.append("the image was rotated according to its EXIF orientation")
            im.load()
            arr = _pil_to_rgb(im, notes)  # (H, W, 3) uint8
    except MediaError:
        raise
    except UnidentifiedImageError as err:
        raise MediaError(f"{path.name} is not a readable image") from err
    except Image.DecompressionBombError as err:
        raise MediaError(f"{path.name} has too many pixels to be opened safely") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        logger.info("could not decode %s: %s", path, err)
        raise MediaError(f"{path.name} is damaged or truncated and cannot be read as an image") from err
    h, w = arr.shape[:2]
    if max(h, w) > limits.max_image_side:
        scale = limits.max_image_side / max(h, w)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = np.array(Image.fromarray(arr).resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0))
    if long_side > limits.max_image_side:
        notes.append(f"the {width}x{height} image was downscaled to {arr.shape[1]}x{arr.shape[0]}")
    return Loaded(arr, notes)  # (H, W, 3) uint8


# ---- ffmpeg probing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Probe:
    """What `ffmpeg -i` says about a file."""

    format: str
    duration: float  # seconds; 0.0 when unknown
    has_video: bool  # a real video stream (cover art "attached pic" does not count)
    fps: float  # 0.0 when unknown
    has_audio: bool
    audio_rate: int  # Hz; 0 when unknown
    audio_layout: str  # "mono", "stereo", "5.1", ... ; "" when unknown


_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio): (.*)$", re.M)
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)")
_AUDIO_RE = re.compile(r"(\d+) Hz, ([^,]+)")
_SIZE_RE = re.compile(r"(?:^|[ ,])(\d+)x(\d+)(?=[ ,\[]|$)")  # "640x480", not the codec tag "0x31637661"


def _probe(path: Path) -> _Probe | None:
    """Ask ffmpeg what the file contains; None if ffmpeg cannot open it."""
    import imageio_ffmpeg
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    try:
        log = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S).stderr.decode(
            "utf-8", errors="replace"
        )
    except subprocess.TimeoutExpired:
        return None
    fmt = _INPUT_RE.search(log)
    if fmt is None or fmt.group(1) in _NOT_MEDIA_FORMATS or fmt.group(1).endswith("_pipe"):
        return None
    dur = _DURATION_RE.search(log)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    fps, rate, layout = 0.0, 0, ""
    has_video = has_audio = False
    for kind, details in _STREAM_RE.findall(log):
        if kind == "Video" and _SIZE_RE.search(details) and "(attached pic)" not in details and not has_video:
            has_video = True
            m = _FPS_RE.search(details)
            fps = float(m.group(1)) if m else 0.0
        elif kind == "Audio" and not has_audio:
            has_audio = True
            m = _AUDIO_RE.search(details)
            rate, layout = (int(m.group(1)), m.group(2).strip()) if m else (0, "")
    return _Probe(fmt.group(1), duration, has_video, fps, has_audio, rate, layout)


# ---- audio ----------------------------------------------------------------------------------------
def _read_soundfile(path: Path, max_seconds: float) -> tuple[np.ndarray, int, int, bool]:
    """libsndfile: returns ((N, C) float32, sample rate, channels, trimmed)."""
    import soundfile as sf
    with sf.SoundFile(str(path)) as f:
        max_frames = int(math.ceil(max_seconds * f.samplerate))
        total = f.frames
        n = min(total, max_frames) if total > 0 else max_frames
        data = f.read(frames=n, dtype="float32", always_2d=True)  # (N, C)
        return data, f.samplerate, f.channels, total > max_frames


def _read_ffmpeg_audio(
    path: Path, max_seconds: float, sample_rate: int
) -> tuple[np.ndarray, int, int, bool, list[str]]:
    """ffmpeg: decode the first audio stream to mono float32 at `sample_rate`."""
    import imageio_ffmpeg
    probe = _probe(path)
    if probe is None:
        raise MediaError(f"{path.name} is not a readable audio file")
    if not probe.has_audio:
        raise MediaError(f"{path.name} contains no audio")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path),
        "-t", f"{max_seconds + 1.0:.3f}", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise MediaError(f"{path.name} took too long to decode") from err
    if res.returncode != 0 and not res.stdout:
        logger.info("ffmpeg could not decode %s: %s", path, res.stderr.decode(errors="replace")[-500:])
        raise MediaError(f"{path.name} is damaged and cannot be read as audio")
    wave = np.frombuffer(res.stdout, dtype="<f4").astype(np.float32)[:, None]  # (N, 1)
    notes = []  # ffmpeg already mixed down and resampled; say so
    if probe.audio_layout not in ("", "mono"):
        notes.append(f"the {probe.audio_layout} audio was mixed down to mono")
    if probe.audio_rate and probe.audio_rate != sample_rate:
        notes.append(f"the audio was resampled from {probe.audio_rate} Hz to {sample_rate} Hz")
    trimmed = wave.shape[0] > max_seconds * sample_rate
    return wave, sample_rate, 1, trimmed, notes


def load_audio(
    path: PathLike, limits: MediaLimits = DEFAULT_LIMITS, sample_rate: int = 16000
) -> Loaded:
    """Read a sound file as mono float32 in [-1, 1] at `sample_rate`: shape (N,).

    Formats libsndfile reads (wav 8/16/24/32-bit and float, flac, ogg, mp3) are read directly; anything
    else ffmpeg can decode (m4a/aac, the audio track of a video) goes through ffmpeg.
    """
    import soundfile as sf
    from scipy.signal import resample, resample_poly
    path = _check_file(path, limits)
    notes: list[str] = []
    try:
        data, rate, channels, trimmed = _read_soundfile(path, limits.max_audio_seconds)
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        logger.debug("libsndfile cannot read %s (%s); trying ffmpeg", path, err)
        data, rate, channels, trimmed, notes = _read_ffmpeg_audio(path, limits.max_audio_seconds, sample_rate)
    if data.shape[0] == 0:
        raise MediaError(f"{path.name} contains no audio samples")
    if channels > 1:
        layout = "stereo" if channels == 2 else f"{channels}-channel"
        notes.insert(0, f"the {layout} audio was mixed down to mono")
    wave = data.mean(axis=1)  # (N,)
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
        notes.append("invalid samples (NaN/inf) were replaced")
    peak = float(np.abs(wave).max())
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        up, down = sample_rate // g, rate // g
        if max(up, down) <= 1000:  # every common rate (8k, 22.05k, 44.1k, 48k, 96k, ...)
            wave = resample_poly(wave, up, down)
        else:  # odd rates would need a huge polyphase filter
            wave = resample(wave, max(1, round(len(wave) * sample_rate / rate)))
        notes.append(f"the audio was resampled from {rate} Hz to {sample_rate} Hz")
    max_len = int(limits.max_audio_seconds * sample_rate)
    if trimmed or wave.shape[0] > max_len:
        wave = wave[:max_len]
        notes.append(f"the audio was trimmed to its first {limits.max_audio_seconds:g} seconds")
    if peak > 1.0 + 1e-6:
        notes.append("the audio was louder than full scale and was clipped")
    if peak == 0.0:
        notes.append("the audio is silent")
    return Loaded(np.clip(wave, -1.0, 1.0).astype(np.float32), notes)  # (N,)


# ---- video ----------------------------------------------------------------------------------------
def _even_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.linspace(0, n - 1, k).round().astype(int)


def _read_pil_frames(path: Path, limits: MediaLimits) -> tuple[np.ndarray, float, list[str]]:
    """Animated (or still) images through PIL: GIF, APNG, animated WebP, ..."""
    notes: list[str] = []
    with Image.open(path) as im:
        if im.size[0] * im.size[1] > limits.max_image_pixels:
            raise MediaError(f"{path.name} has frames of {im.size[0]}x{im.size[1]} pixels, too large to read")
        n = getattr(im, "n_frames", 1)
        durations_ms = []
        for i in range(n):
            im.seek(i)
            durations_ms.append(float(im.info.get("duration", 0) or 100.0))  # GIF default: 10 fps
        starts = np.cumsum([0.0] + durations_ms[:-1]) / 1000.0
        keep = np.flatnonzero(starts < limits.max_video_seconds)
        if len(keep) < n:
            notes.append(f"the animation was trimmed to its first {limits.max_video_seconds:g} seconds")
        chosen = keep[_even_indices(len(keep), limits.max_video_frames_read)]
        if len(chosen) < len(keep):
            notes.append(f"{len(chosen)} of its {len(keep)} frames were sampled evenly")
        if n == 1:
            notes.append("a still image is used as a one-frame video")
        size = _fit_short_side(im.size[0], im.size[1], limits.max_video_short_side)
        frames = []
        for i in chosen:
            im.seek(int(i))
            frame = im.convert("RGB")
            if frame.size != size:
                frame = frame.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            frames.append(np.array(frame, dtype=np.uint8))
    seconds = sum(durations_ms[: int(keep[-1]) + 1]) / 1000.0
    fps = len(frames) / seconds if seconds > 0 else 10.0
    return np.stack(frames), fps, notes


def _read_ppm(stream: IO[bytes]) -> np.ndarray | None:
    """One binary PPM (P6) frame from ffmpeg's image2pipe -> (H, W, 3) uint8; None at end of stream."""
    magic = stream.read(2)
    if not magic:
        return None
    fields: list[bytes] = []
    token = b""
    while len(fields) < 3:  # width, height, maxval, separated by single whitespace bytes
        ch = stream.read(1)
        if not ch:
            raise ValueError("stream ended inside a frame header")
        if ch.isspace():
            if token:
                fields.append(token)
                token = b""
        else:
            token += ch
    if magic != b"P6" or fields[2] != b"255":
        raise ValueError(f"unexpected frame header {magic!r} {fields!r}")
    width, height = int(fields[0]), int(fields[1])
    data = stream.read(width * height * 3)
    if len(data) != width * height * 3:
        raise ValueError("stream ended inside a frame")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def _read_ffmpeg_frames(path: Path, limits: MediaLimits) -> tuple[np.ndarray, float, list[str]]:
    """Video files through ffmpeg; sampling (fps filter) and downscaling (scale filter) happen in ffmpeg."""
    import imageio_ffmpeg
    probe = _probe(path)
    if probe is None:
        raise MediaError(f"{path.name} is not a readable video")
    if not probe.has_video:
        raise MediaError(f"{path.name} contains no video")
    notes: list[str] = []
    seconds = probe.duration
    if seconds > limits.max_video_seconds:
        notes.append(f"the video was trimmed to its first {limits.max_video_seconds:g} seconds")
        seconds = limits.max_video_seconds
    filters, rate = [], probe.fps
    if seconds > 0 and probe.fps > 0 and seconds * probe.fps > limits.max_video_frames_read:
        rate = limits.max_video_frames_read / seconds
        filters.append(f"fps={rate:.6f}")
        notes.append(f"{limits.max_video_frames_read} frames were sampled evenly from the video")
    s = limits.max_video_short_side  # the expression keeps the aspect and even sizes; never upscales
    filters.append(f"scale=w='if(lte(iw,ih),min(iw,{s}),-2)':h='if(lte(iw,ih),-2,min(ih,{s}))':flags=area")
    cap = 16 * limits.max_video_frames_read  # guards against unknown durations
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-t", f"{limits.max_video_seconds:.3f}",
        "-i", str(path), "-an", "-vf", ",".join(filters), "-f", "image2pipe", "-c:v", "ppm", "-",
    ]  # fmt: skip
    frames: list[np.ndarray] = []
    with tempfile.TemporaryFile() as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log) as proc:
        try:
            assert proc.stdout is not None
            while (frame := _read_ppm(proc.stdout)) is not None:
                frames.append(frame)
                if len(frames) >= cap:
                    notes.append(f"only the first {cap} frames were read")
                    break
        except ValueError as err:  # a cut-off frame at the end of the stream
            logger.info("incomplete frame from %s: %s", path, err)
        finally:
            if proc.poll() is None:
                proc.kill()
        proc.wait()
        if not frames:
            log.seek(0)
            logger.info("ffmpeg could not read %s: %s", path, log.read()[-500:].decode(errors="replace"))
            raise MediaError(f"{path.name} is damaged and cannot be read as a video")
    chosen = _even_indices(len(frames), limits.max_video_frames_read)
    fps = (rate if rate > 0 else 8.0) * len(chosen) / len(frames)
    return np.stack([frames[i] for i in chosen]), fps, notes


def load_video(path: PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> Loaded:
    """Read a video as (T, H, W, 3) uint8 frames, their rate in frames per second, and notes.

    At most ``limits.max_video_frames_read`` frames, sampled evenly over the first
    ``limits.max_video_seconds``; the short side is at most ``limits.max_video_short_side``. The
    returned fps describes the returned frames (T / fps = the seconds covered). Animated images
    (GIF, APNG, WebP) are accepted as videos. The audio track, if any, is ignored.
    """
    path = _check_file(path, limits)
    if _pil_format(path) is not None:
        try:
            frames, fps, notes = _read_pil_frames(path, limits)
        except MediaError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            raise MediaError(f"{path.name} is damaged and cannot be read as an animation") from err
    else:
        frames, fps, notes = _read_ffmpeg_frames(path, limits)
    return Loaded(frames, notes, float(fps))  # (T, H, W, 3) uint8


# ---- modality detection -----------------------------------------------------------------------------
def _pil_format(path: Path) -> str | None:
    """PIL's format name if PIL can identify the file's bytes as an image, else None."""
    try:
        with Image.open(path) as im:
            return None if im.format == "MPEG" else im.format  # PIL identifies but cannot decode MPEG
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def guess_modality(path: PathLike) -> Modality | None:
    """What an uploaded file is, by its content: IMAGE, VIDEO (incl. animated GIF), AUDIO, or None."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    if _pil_format(path) is not None:
        with Image.open(path) as im:
            return Modality.VIDEO if getattr(im, "n_frames", 1) > 1 else Modality.IMAGE
    try:
        sf.info(str(path))
        return Modality.AUDIO
    except (sf.SoundFileError, RuntimeError, TypeError):
        pass
    probe = _probe(path)
    if probe is None:
        return None
    if probe.has_video:
        return Modality.VIDEO
    return Modality.AUDIO if probe.has_audio else None


# ---- writers --------------------------------------------------------------------------------------
def _as_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 as is; floats are taken to be in [0, 1]."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _prepare_out(path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_image(arr: np.ndarray, path: PathLike) -> Path:
    """Write (H, W, 3) / (H, W, 4) / (H, W) uint8 (or float in [0, 1]) as PNG."""
    arr = _as_uint8(arr)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an (H, W[, 3|4]) image, got shape {arr.shape}")
    path = _prepare_out(path)
    Image.fromarray(arr.squeeze(2) if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(path, format="PNG")
    return path


def save_audio(wave: np.ndarray, path: PathLike, sample_rate: int = 16000) -> Path:
    """Write (N,) or (N, C) float audio in [-1, 1] as 16-bit PCM WAV."""
    import soundfile as sf
    wave = np.clip(np.nan_to_num(np.asarray(wave, dtype=np.float32)), -1.0, 1.0)
    if wave.ndim not in (1, 2):
        raise ValueError(f"expected (N,) or (N, C) audio, got shape {wave.shape}")
    path = _prepare_out(path)
    sf.write(str(path), wave, sample_rate, subtype="PCM_16", format="WAV")
    return path


def save_video(frames: np.ndarray, path: PathLike, fps: float = 8) -> Path:
    """Write (T, H, W, 3) uint8 (or float in [0, 1]) frames as H.264 MP4 (yuv420p).

    yuv420p needs even sizes: an odd height/width is padded by repeating the last row/column.
    """
    import imageio_ffmpeg
    frames = _as_uint8(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected (T, H, W, 3) frames with T >= 1, got shape {frames.shape}")
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (T, H', W', 3)
    path = _prepare_out(path)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (frames.shape[2], frames.shape[1]),
        fps=float(fps),
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=2,
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


# ---- one entry point per direction ------------------------------------------------------------------
LOADERS: dict[Modality, Callable[[PathLike, MediaLimits], Loaded]] = {
    Modality.IMAGE: load_image,
    Modality.AUDIO: load_audio,
    Modality.VIDEO: load_video,
}
# (array, path, audio sample rate, video fps) -> the written path
WRITERS: dict[Modality, Callable[[np.ndarray, PathLike, int, float], Path]] = {
    Modality.IMAGE: lambda arr, path, rate, fps: save_image(arr, path),
    Modality.AUDIO: lambda arr, path, rate, fps: save_audio(arr, path, rate),
    Modality.VIDEO: lambda arr, path, rate, fps: save_video(arr, path, fps),
}


def load(modality: Modality | str, path: PathLike, limits: MediaLimits = DEFAULT_LIMITS) -> Loaded:
    """Read a file of the given modality (its format detected from its bytes); raises `MediaError`."""
    return LOADERS[Modality(modality)](path, limits)


def save(modality: Modality | str, arr: np.ndarray, path: PathLike, *, sample_rate: int = 16000,
         fps: float = 8) -> Path:
    """Write a generated item in its modality's file format (PNG, 16-bit WAV, H.264 MP4)."""
    return WRITERS[Modality(modality)](arr, path, sample_rate, fps)
