"""Tests for nextgpt.media: every awkward input is made on the fly in tmp_path and either loads with
the documented note or raises MediaError with a message a user can read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from nextgpt.config import Modality
from nextgpt.media import (
    MediaError,
    MediaLimits,
    guess_modality,
    load,
    load_audio,
    load_image,
    load_video,
    save,
    save_audio,
    save_image,
    save_video,
)

RNG = np.random.default_rng(0)
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _has(notes: list[str], word: str) -> bool:
    return any(word in n for n in notes)


def _raises(fn, path: Path, match: str, **kwargs) -> None:
    with pytest.raises(MediaError, match=match) as err:
        fn(path, **kwargs)
    assert path.name in str(err.value) and "Traceback" not in str(err.value)


def _tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, capture_output=True)


# ---- images ----------------------------------------------------------------------------------------------
def test_rgb_png_round_trip(tmp_path):
    img = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    item = load_image(save_image(img, tmp_path / "a.png"))
    arr, notes = item.array, item.notes
    assert arr.dtype == np.uint8 and np.array_equal(arr, img) and notes == []


@pytest.mark.parametrize(
    "mode, value, note",
    [("L", 128, "greyscale"), ("1", 1, "greyscale"), ("CMYK", (0, 255, 0, 0), "CMYK"), ("P", 7, "")],
)
def test_modes_become_rgb(tmp_path, mode, value, note):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    Image.new(mode, (9, 5), value).save(path)
    item = load_image(path)
    arr, notes = item.array, item.notes
    assert arr.shape == (5, 9, 3) and arr.dtype == np.uint8
    assert _has(notes, note) if note else notes == []
    if mode == "CMYK":
        assert arr[0, 0].tolist() == [255, 0, 255]  # full magenta ink -> magenta


def test_transparency_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(tmp_path / "t.png")
    item = load_image(tmp_path / "t.png")
    arr, notes = item.array, item.notes
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[1, 1].tolist() == [255, 255, 255]
    assert _has(notes, "white background")
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "p.gif", transparency=0)
    item = load_image(tmp_path / "p.gif")
    arr, notes = item.array, item.notes
    assert arr[0, 0].tolist() == [255, 255, 255] and _has(notes, "white background")


def test_16_bit_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    item = load_image(tmp_path / "g16.png")
    arr, notes = item.array, item.notes
    assert arr.shape == (8, 8, 3) and arr.max() == 255 and 120 < arr[4, 0, 0] < 136
    assert _has(notes, "16-bit")


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), (200 * (i == 0), 0, 200 * (i > 0))) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    item = load_image(tmp_path / "a.gif")
    arr, notes = item.array, item.notes
    assert arr[0, 0, 0] > 150 and arr[0, 0, 2] < 50 and _has(notes, "animated")


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "p.png")
    item = load_image(tmp_path / "p.png")
    arr, notes = item.array, item.notes
    assert arr.shape == (1, 1, 3) and arr[0, 0].tolist() == [1, 2, 3]


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "o.jpg", exif=exif)
    item = load_image(tmp_path / "o.jpg")
    arr, notes = item.array, item.notes
    assert arr.shape == (20, 10, 3) and _has(notes, "EXIF")


def test_content_not_extension_decides(tmp_path):
    Image.new("RGB", (5, 4), (9, 9, 9)).save(tmp_path / "really.jpg", format="JPEG")
    (tmp_path / "photo.png").write_bytes((tmp_path / "really.jpg").read_bytes())
    assert load_image(tmp_path / "photo.png").array.shape == (4, 5, 3)
    (tmp_path / "notes.png").write_text("this is plain text, not a picture")
    _raises(load_image, tmp_path / "notes.png", "is not a readable image")


def test_broken_images_raise(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _raises(load_image, tmp_path / "empty.png", "is empty")
    _raises(load_image, tmp_path / "missing.png", "was not found")
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _raises(load_image, tmp_path / "cut.png", "damaged or truncated")
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    _raises(load_image, tmp_path / "cut.jpg", "damaged or truncated")


def test_image_limits(tmp_path):
    Image.new("RGB", (100, 50), (5, 5, 5)).save(tmp_path / "big.png")
    _raises(load_image, tmp_path / "big.png", "megapixels", limits=MediaLimits(max_image_pixels=4000))
    _raises(load_image, tmp_path / "big.png", "the limit is", limits=MediaLimits(max_file_mb=1e-5))
    item = load_image(tmp_path / "big.png", limits=MediaLimits(max_image_side=32))
    arr, notes = item.array, item.notes
    assert arr.shape == (16, 32, 3) and _has(notes, "downscaled")


# ---- audio -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, subtype, ext",
    [("WAV", "PCM_16", "wav"), ("WAV", "PCM_U8", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "FLOAT", "wav"),
     ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")],
)  # fmt: skip
def test_soundfile_formats(tmp_path, fmt, subtype, ext):
    wave = _tone(0.5, 16000)
    path = tmp_path / f"a.{ext}"
    sf.write(str(path), wave, 16000, format=fmt, subtype=subtype)
    item = load_audio(path)
    out, notes = item.array, item.notes
    assert out.dtype == np.float32 and out.ndim == 1 and abs(len(out) - 8000) < 1200
    assert np.abs(out).max() <= 1.0 and 0.3 < np.abs(out).max() < 0.7
    if fmt in ("WAV", "FLAC"):
        assert notes == [] and np.allclose(out, wave, atol=0.02)


@pytest.mark.parametrize("rate", [8000, 44100, 96000])
def test_resampled_to_16k(tmp_path, rate):
    sf.write(str(tmp_path / "r.wav"), _tone(1.0, rate), rate)
    item = load_audio(tmp_path / "r.wav")
    out, notes = item.array, item.notes
    assert abs(len(out) - 16000) <= 1 and _has(notes, f"from {rate} Hz to 16000 Hz")
    assert np.allclose(out[100:-100], _tone(1.0, 16000)[100:-100], atol=0.02)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = _tone(0.25, 16000, amp=0.4), np.zeros(4000, np.float32)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, right], axis=1), 16000)
    item = load_audio(tmp_path / "s.wav")
    out, notes = item.array, item.notes
    assert np.allclose(out, left / 2, atol=1e-3) and _has(notes, "stereo")


def test_long_audio_is_trimmed(tmp_path):
    sf.write(str(tmp_path / "long.wav"), _tone(3.0, 8000), 8000)
    item = load_audio(tmp_path / "long.wav", limits=MediaLimits(max_audio_seconds=1.0))
    out, notes = item.array, item.notes
    assert len(out) == 16000 and _has(notes, "trimmed")


def test_silent_and_loud_audio(tmp_path):
    sf.write(str(tmp_path / "quiet.wav"), np.zeros(1600, np.float32), 16000)
    item = load_audio(tmp_path / "quiet.wav")
    out, notes = item.array, item.notes
    assert not out.any() and _has(notes, "silent")
    sf.write(str(tmp_path / "loud.wav"), np.full(1600, 2.0, np.float32), 16000, subtype="FLOAT")
    item = load_audio(tmp_path / "loud.wav")
    out, notes = item.array, item.notes
    assert out.max() == 1.0 and _has(notes, "clipped")


def test_m4a_goes_through_ffmpeg(tmp_path):
    sf.write(str(tmp_path / "s.wav"), np.stack([_tone(1.0, 44100)] * 2, axis=1), 44100)
    _ffmpeg("-i", str(tmp_path / "s.wav"), "-c:a", "aac", str(tmp_path / "s.m4a"))
    item = load_audio(tmp_path / "s.m4a")
    out, notes = item.array, item.notes
    assert abs(len(out) - 16000) < 1600 and 0.3 < np.abs(out).max() <= 1.0
    assert _has(notes, "stereo") and _has(notes, "44100 Hz")


def test_broken_audio_raises(tmp_path):
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), 16000)
    _raises(load_audio, tmp_path / "zero.wav", "no audio samples")
    (tmp_path / "noise.wav").write_bytes(RNG.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _raises(load_audio, tmp_path / "noise.wav", "not a readable audio file|damaged")
    (tmp_path / "empty.wav").write_bytes(b"")
    _raises(load_audio, tmp_path / "empty.wav", "is empty")
    save_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "mute.mp4")
    _raises(load_audio, tmp_path / "mute.mp4", "contains no audio")


# ---- video -----------------------------------------------------------------------------------------------
def _colour_frames(n: int, h: int, w: int) -> np.ndarray:
    """Flat frames whose red channel counts up, so decoded frames can be identified despite H.264."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = (np.linspace(0, 250, n)[:, None, None]).astype(np.uint8)
    frames[..., 1] = 90
    return frames


def test_video_round_trip(tmp_path):
    frames = _colour_frames(10, 32, 48)
    path = save_video(frames, tmp_path / "v.mp4", fps=8)
    item = load_video(path)
    out, fps, notes = item.array, item.fps, item.notes
    assert out.shape == (10, 32, 48, 3) and out.dtype == np.uint8 and fps == pytest.approx(8.0)
    assert np.abs(out.astype(int).mean(axis=(1, 2)) - frames.mean(axis=(1, 2))).max() < 6
    assert notes == []


def test_saved_video_is_h264_yuv420p_even(tmp_path):
    path = save_video(_colour_frames(2, 33, 47), tmp_path / "odd.mp4", fps=4)
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert "h264" in info and "yuv420p" in info and "48x34" in info
    assert load_video(path).array.shape == (2, 34, 48, 3)


def test_one_frame_video(tmp_path):
    item = load_video(save_video(_colour_frames(1, 16, 16), tmp_path / "one.mp4"))
    out, fps = item.array, item.fps
    assert out.shape == (1, 16, 16, 3)


def test_4k_is_downscaled_while_reading(tmp_path):
    path = save_video(_colour_frames(2, 2160, 3840), tmp_path / "uhd.mp4", fps=2)
    out = load_video(path).array
    assert out.shape[0] == 2 and out.shape[1] == 256 and out.shape[2] in (454, 455, 456)


def test_many_frames_are_sampled_evenly(tmp_path):
    path = save_video(_colour_frames(40, 16, 16), tmp_path / "many.mp4", fps=20)  # 2 s
    item = load_video(path, limits=MediaLimits(max_video_frames_read=8))
    out, fps, notes = item.array, item.fps, item.notes
    assert len(out) == 8 and fps == pytest.approx(4.0, rel=0.2) and _has(notes, "sampled evenly")
    reds = out[..., 0].astype(int).mean(axis=(1, 2))
    assert reds[0] < 40 and reds[-1] > 190 and bool(np.all(np.diff(reds) > 0))


def test_long_video_is_trimmed(tmp_path):
    path = save_video(_colour_frames(16, 16, 16), tmp_path / "long.mp4", fps=8)  # 2 s
    item = load_video(path, limits=MediaLimits(max_video_seconds=1.0))
    out, fps, notes = item.array, item.fps, item.notes
    assert 7 <= len(out) <= 9 and _has(notes, "trimmed")


def test_animated_gif_is_a_video(tmp_path):
    frames = [Image.fromarray(f) for f in _colour_frames(5, 12, 10)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    item = load_video(tmp_path / "a.gif")
    out, fps, notes = item.array, item.fps, item.notes
    assert out.shape == (5, 12, 10, 3) and fps == pytest.approx(5.0)


def test_broken_videos_raise(tmp_path):
    data = save_video(_colour_frames(12, 32, 32), tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    _raises(load_video, tmp_path / "cut.mp4", "not a readable video|damaged")
    (tmp_path / "text.mp4").write_text("hello, this is not a film")
    _raises(load_video, tmp_path / "text.mp4", "not a readable video")
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=8", "-frames:v", "0", "-c:v", "libx264",
            str(tmp_path / "zero.mp4"))  # fmt: skip
    _raises(load_video, tmp_path / "zero.mp4", "no video")
    sf.write(str(tmp_path / "sound.wav"), _tone(0.2, 16000), 16000)
    _raises(load_video, tmp_path / "sound.wav", "contains no video")


# ---- modality detection and writers ------------------------------------------------------------------------
def test_guess_modality_by_content(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "image.mp3", format="PNG")  # misleading names on purpose
    sf.write(str(tmp_path / "sound.png"), _tone(0.2, 16000), 16000, format="WAV")
    save_video(_colour_frames(3, 16, 16), tmp_path / "clip.mp4", fps=4)
    (tmp_path / "clip.bin").write_bytes((tmp_path / "clip.mp4").read_bytes())
    frames = [Image.fromarray(f) for f in _colour_frames(3, 8, 8)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    sf.write(str(tmp_path / "s.wav"), np.stack([_tone(0.3, 22050)] * 2, axis=1), 22050)
    _ffmpeg("-i", str(tmp_path / "s.wav"), "-c:a", "aac", str(tmp_path / "s.m4a"))
    (tmp_path / "notes.png").write_text("plain text")
    (tmp_path / "empty").write_bytes(b"")
    expected = {
        "image.mp3": Modality.IMAGE, "sound.png": Modality.AUDIO, "clip.bin": Modality.VIDEO,
        "anim.gif": Modality.VIDEO, "s.m4a": Modality.AUDIO, "notes.png": None, "empty": None,
        "missing": None,
    }  # fmt: skip
    assert {name: guess_modality(tmp_path / name) for name in expected} == expected


def test_writers_round_trip(tmp_path):
    grey = RNG.random((5, 7))  # float in [0, 1]
    arr = load_image(save_image(grey, tmp_path / "g.png")).array
    assert arr.shape == (5, 7, 3) and np.abs(arr[..., 0] / 255.0 - grey).max() < 0.003
    wave = _tone(0.1, 16000, amp=0.9)
    path = save_audio(wave, tmp_path / "sub" / "w.wav")
    assert sf.info(str(path)).subtype == "PCM_16"
    assert np.abs(load_audio(path).array - wave).max() < 1e-4
    with pytest.raises(ValueError):
        save_video(np.zeros((0, 4, 4, 3), np.uint8), tmp_path / "none.mp4")


@pytest.mark.parametrize("modality", list(Modality))
def test_one_entry_point_per_direction(tmp_path, modality):
    """media.save and media.load dispatch on the modality; `load` returns one result type for every modality."""
    from nextgpt.config import MODALITY_INFO

    item = {Modality.IMAGE: np.full((8, 10, 3), 200, np.uint8), Modality.AUDIO: _tone(0.5, 16000),
            Modality.VIDEO: np.full((4, 8, 10, 3), 90, np.uint8)}[modality]
    path = save(modality, item, tmp_path / f"out{MODALITY_INFO[modality].extension}", fps=4)
    loaded = load(modality.value, path)
    assert loaded.array.shape == item.shape and loaded.notes == []
    assert (loaded.fps == pytest.approx(4.0)) if modality is Modality.VIDEO else loaded.fps is None
    with pytest.raises(MediaError, match="was not found"):
        load(modality, tmp_path / "missing")
