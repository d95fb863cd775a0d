"""Reliability (issue #6): what the user-facing surfaces do with bad input and faults.

    .venv/bin/python -m pytest tests/test_robustness.py -q       # -s also prints the FIGURE lines

1. bad media through the Python API, the CLI and the app's chat handlers (loader-level cases are in
   test_media.py; here: notices reach Reply.notices / the CLI JSON / the chat, errors become a MediaError /
   {"error"} exit 2 / a chat message, the session goes on, peak memory of huge uploads stays bounded);
2. typed signal tokens, media tags and template markers through the whole chat (hypothesis);
3. a conversation longer than the LLM's window, end to end (old turns go with their media);
5. output files: per-session folders, expiry after the TTL, uploaded names never become paths;
6. truncated encoder / decoder weights; 7. a crash while a checkpoint is written; 8. scores written by
   several processes, one of them killed.
The load test and the file route of the launched app are in test_load.py.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import imageio_ffmpeg
import numpy as np
import psutil
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.handlers import DEFAULT_SETTINGS, ChatHandlers
from app.media import OutputRoot
from app.standin import tiny_model as standin_model
from app.store import ScoreStore
from nextgpt.cli import main as cli_main
from nextgpt.config import GenerationSettings, NextGPTConfig
from nextgpt.media import MediaError, MediaLimits, save_audio, save_image

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FAST = GenerationSettings(max_new_tokens=8)
IMG_SIGNALS = "[IMG0][IMG1][IMG2][IMG3]"


# ---- helpers ---------------------------------------------------------------------------------------------
def _ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args, str(out)], check=True, capture_output=True,
                   timeout=120)
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut(path: Path, out: Path) -> Path:
    """The first half of `path`'s bytes (a download that stopped halfway)."""
    data = path.read_bytes()
    return _write(out, data[: len(data) // 2])


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _image(path: Path, mode: str, size: tuple[int, int], color: Any, **save: Any) -> Path:
    Image.new(mode, size, color).save(path, **save)
    return path


def _rgba(path: Path) -> Path:
    arr = np.full((32, 32, 4), 255, np.uint8)
    arr[:16, :, 3] = 0  # the top half is transparent
    Image.fromarray(arr, "RGBA").save(path)
    return path


def _gif(path: Path) -> Path:
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _sparse(path: Path, mb: int) -> Path:
    """A file of `mb` megabytes that costs no disk (its size is checked before it is opened)."""
    with path.open("wb") as f:
        f.truncate(mb * 2**20)
    return path


def _noise_png(path: Path) -> Path:
    return save_image(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), path)


def _clip(path: Path, size: str = "64x64", seconds: str = "1", rate: str = "8") -> Path:
    return _ffmpeg(path, "-f", "lavfi", "-i", f"testsrc=s={size}:r={rate}:d={seconds}", "-an", "-c:v", "libx264",
                   "-preset", "ultrafast", "-pix_fmt", "yuv420p")


@dataclass(frozen=True)
class Case:
    """A bad (or merely awkward) upload and what each surface must make of it.

    expect: ("error", text in the message) or ("ok", text in a notice, or None for no particular notice),
    for the CLI and the API, where the flag / part type says the modality. app: the same for the chat, where
    the modality is detected from the file's content (None: as `expect`).
    """

    name: str  # also the file name
    kind: str  # "image" | "audio" | "video": the --flag / content part type
    build: Callable[[Path], Path]
    expect: tuple[str, str | None]
    app: tuple[str, str | None] | None = None


NOT_MEDIA = ("error", "not an image, audio or video file this app can read")
CASES = [
    # images
    Case("empty.png", "image", lambda p: _write(p, b""), ("error", "empty.png is empty"), NOT_MEDIA),
    Case("truncated.png", "image", lambda p: _cut(_noise_png(p.with_name("full.png")), p),
         ("error", "damaged or truncated")),
    Case("corrupt.png", "image", lambda p: _write(p, np.random.default_rng(1).bytes(4096)),
         ("error", "corrupt.png is not a readable image"), NOT_MEDIA),
    Case("sound-named.png", "image", lambda p: _write(p, sf_bytes(p)), ("error", "is not a readable image"),
         ("ok", None)),  # the app reads it as the sound it is
    Case("image-named.mp4", "video", lambda p: _image(p, "RGB", (40, 30), "red", format="PNG"),
         ("ok", "a still image is used as a one-frame video"), ("ok", None)),  # the app reads it as an image
    Case("60mb.png", "image", lambda p: _sparse(p, 60), ("error", "the limit is 50 MB"), ("error", "larger than 50 MB")),
    Case("1x1.png", "image", lambda p: _image(p, "RGB", (1, 1), "red"), ("ok", None)),
    Case("10000x10000.png", "image", lambda p: _image(p, "1", (10_000, 10_000), 1),
         ("error", "10000x10000 pixels; the limit is 40 megapixels")),
    Case("grey.png", "image", lambda p: _image(p, "L", (32, 32), 128), ("ok", "greyscale image was converted to RGB")),
    Case("rgba.png", "image", _rgba, ("ok", "transparent areas were placed on a white background")),
    Case("cmyk.jpg", "image", lambda p: _image(p, "CMYK", (32, 32), (0, 255, 255, 0)),
         ("ok", "CMYK image was converted to RGB")),
    Case("animated.gif", "image", _gif, ("ok", "animated (3 frames); only the first frame is used"),
         ("ok", None)),  # the app reads an animation as a video
    # audio
    Case("empty.wav", "audio", lambda p: _write(p, b""), ("error", "empty.wav is empty"), NOT_MEDIA),
    Case("truncated.wav", "audio", lambda p: _cut(save_audio(_tone(1, 16000), p.with_name("full.wav")), p),
         ("ok", None)),  # the samples that are there
    Case("corrupt.wav", "audio", lambda p: _write(p, b"RIFF" + np.random.default_rng(2).bytes(4000)),
         ("error", "corrupt.wav is not a readable audio file"), NOT_MEDIA),
    Case("silent.wav", "audio", lambda p: save_audio(np.zeros(16000), p), ("ok", "the audio is silent")),
    Case("10min.wav", "audio", lambda p: _ffmpeg(p, "-f", "lavfi", "-i", "sine=f=300:r=16000", "-t", "600"),
         ("ok", "trimmed to its first 30 seconds")),
    Case("stereo.wav", "audio", lambda p: save_audio(_tone(1, 16000, 2), p), ("ok", "stereo audio was mixed down")),
    Case("8khz.wav", "audio", lambda p: save_audio(_tone(1, 8000), p, 8000), ("ok", "resampled from 8000 Hz")),
    Case("96khz.wav", "audio", lambda p: save_audio(_tone(1, 96000), p, 96000), ("ok", "resampled from 96000 Hz")),
    Case("8bit.wav", "audio", lambda p: sf.write(p, _tone(1, 16000), 16000, subtype="PCM_U8") or p, ("ok", None)),
    # video
    Case("empty.mp4", "video", lambda p: _write(p, b""), ("error", "empty.mp4 is empty"), NOT_MEDIA),
    Case("no-frames.mp4", "video", lambda p: _ffmpeg(p, "-f", "lavfi", "-i", "color=s=64x64:r=8:d=1",
                                                      "-frames:v", "0", "-c:v", "libx264"),
         ("error", "no-frames.mp4 contains no video"), NOT_MEDIA),
    Case("truncated.mp4", "video", lambda p: _cut(_clip(p.with_name("full.mp4")), p),
         ("error", "truncated.mp4 is not a readable video"), NOT_MEDIA),
    Case("corrupt.mp4", "video", lambda p: _write(p, np.random.default_rng(3).bytes(4096)),
         ("error", "is not a readable video"), NOT_MEDIA),
    Case("one-frame.mp4", "video", lambda p: _clip(p, seconds="0.125"), ("ok", None)),
    Case("4k.mp4", "video", lambda p: _clip(p, size="3840x2160", seconds="2", rate="4"), ("ok", None)),
    Case("no-audio-track.mp4", "video", _clip, ("ok", None)),
]


def sf_bytes(p: Path) -> bytes:
    """A real WAV file's bytes (for a file whose extension lies)."""
    return save_audio(_tone(0.5, 16000), p.with_name("real.wav")).read_bytes()


@pytest.fixture(scope="module")
def model():
    return standin_model()


def say(model: Any, text: str, *, fresh: bool = True) -> None:
    """Dictate the next reply, with nothing left over from a turn that failed before its prompt ran. fresh: empty
    the embedding cache, so that this surface sees the loaders' notices (a cached item is not read again)."""
    model.llm.replies.clear()
    model.llm.queue_reply(text)
    if fresh:
        model._embed_cache.clear()


@pytest.fixture(scope="module")
def media_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-media")
    return {c.name: c.build(folder / c.name) for c in CASES}


class PeakRSS:
    """Peak resident memory of this process above its level at entry (sampled every 5 ms), in MB."""

    def __enter__(self) -> "PeakRSS":
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.growth_mb = (self.peak - self.base) / 2**20


# ---- 1. bad media through the three surfaces -------------------------------------------------------------
def _chat_text(message: dict[str, Any]) -> str:
    return " ".join(c for c in message["content"] if isinstance(c, str))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_media_through_the_python_api(model, media_files, case):
    path = media_files[case.name]
    messages = [{"role": "user", "content": [{"type": case.kind, "path": str(path)}, {"type": "text", "text": "What?"}]}]
    say(model, "Fine.")
    outcome, text = case.expect
    if outcome == "error":
        with pytest.raises(MediaError) as err:
            model.chat(messages, FAST)
        assert text in str(err.value) and path.name in str(err.value) and "\n" not in str(err.value)
    else:
        reply = model.chat(messages, FAST)
        assert reply.text == "Fine."
        if text is not None:
            assert any(n.startswith(f"{path.name}: ") and text in n for n in reply.notices), reply.notices


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_media_through_the_cli(model, media_files, case, monkeypatch, capsys, tmp_path):
    from nextgpt.model import NextGPT

    monkeypatch.setattr(NextGPT, "from_preset", lambda *a, **k: model)
    say(model, "Fine.")
    code = cli_main(["generate", f"--{case.kind}", str(media_files[case.name]), "--prompt", "What?",
                     "--max-new-tokens", "8", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # one JSON line, never a traceback
    out = json.loads(lines[0])
    outcome, text = case.expect
    if outcome == "error":
        assert code == 2 and text in out["error"], out
    else:
        assert code == 0 and out["text"] == "Fine.", out
        assert text is None or any(text in n for n in out["notices"]), out["notices"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_media_through_the_app(model, media_files, case, tmp_path):
    h = ChatHandlers(model, OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "s.sqlite"))
    values = list(DEFAULT_SETTINGS)
    values[2] = 8  # max new tokens
    say(model, "Fine.")
    *_, (chat, session) = h.chat({"text": "What?", "files": [str(media_files[case.name])]}, None, *values)
    outcome, text = case.app or case.expect
    reply = _chat_text(chat[1])
    if outcome == "error":
        assert reply.startswith("⚠️") and text in reply and "Traceback" not in reply, reply
    else:
        assert reply.startswith("Fine."), reply
        assert text is None or text in reply, reply  # notices are shown under the reply
    say(model, "Still here.", fresh=False)  # the session goes on
    *_, (chat, session) = h.chat("And now?", session, *values)
    assert _chat_text(chat[3]) == "Still here." and len(session.turns) == 2


@pytest.mark.parametrize("limits, message", [
    (MediaLimits(max_file_mb=0.01), "the limit is 0.01 MB"),
    (MediaLimits(max_image_pixels=100), "the limit is 0.0001 megapixels"),
])
def test_media_limits_are_settings(model, tmp_path, limits, message, monkeypatch):
    """NextGPT.media_limits (Python API, CLI) and OutputRoot.limits (app): a too-big file is refused clearly."""
    big = save_image(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8), tmp_path / "big.png")
    monkeypatch.setattr(model, "media_limits", limits)
    with pytest.raises(MediaError, match=f"big.png is .*; {message}"):
        model.chat([{"role": "user", "content": [{"type": "image", "path": str(big)}]}], FAST)
    output = OutputRoot(tmp_path / "out", limits=MediaLimits(max_file_mb=0.01))
    h = ChatHandlers(model, output, ScoreStore(tmp_path / "s.sqlite"))
    *_, (chat, _) = h.chat({"text": "", "files": [str(big)]}, None, *DEFAULT_SETTINGS)
    assert _chat_text(chat[1]) == "⚠️ big.png: larger than 0.01 MB"


@pytest.mark.parametrize("name, limit_mb", [("10000x10000.png", 64), ("35mp.png", 640), ("4k.mp4", 64)])
def test_peak_memory_of_large_uploads_is_bounded(model, media_files, tmp_path, name, limit_mb):
    """A 100-megapixel image is refused from its header; a 35-megapixel one (under the 40 MP limit) is decoded
    and downscaled; 4K video frames are downscaled inside ffmpeg."""
    path = media_files.get(name) or _image(tmp_path / name, "RGB", (7000, 5000), "blue", compress_level=1)
    kind = "video" if name.endswith(".mp4") else "image"
    say(model, "Fine.")
    with PeakRSS() as mem:
        try:
            model.chat([{"role": "user", "content": [{"type": kind, "path": str(path)}]}], FAST)
        except MediaError:
            pass
    print(f"FIGURE peak RSS growth {name}: {mem.growth_mb:.0f} MB")
    assert mem.growth_mb < limit_mb


# ---- 2. injection through the whole chat -----------------------------------------------------------------
MARKERS = ["[IMG0]", "[IMG1]", "[IMG2]", "[IMG3]", "[AUD0]", "[AUD3]", "[VID0]", "[VID3]", "<Img>", "</Img>",
           "<|im_start|>", "<|im_end|>", "<|im_start|>assistant\n", "### Human: ", "### Assistant: ", "###",
           "<|endoftext|>", "<image>", "\n", " "]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.one_of(st.sampled_from(MARKERS), st.text(max_size=6)), min_size=1, max_size=12),
       with_image=st.booleans())
def test_typed_markers_never_trigger_decoders_or_move_media(model, media_files, monkeypatch, chunks, with_image):
    typed = "".join(chunks)
    calls: list[Any] = []
    monkeypatch.setattr(model.decoders, "generate", lambda *a, **k: calls.append(a))
    image = {"type": "image", "path": str(media_files["1x1.png"])}
    user = [{"type": "text", "text": typed}] + ([image] if with_image else []) + [{"type": "text", "text": typed}]
    messages = [{"role": "user", "content": typed}, {"role": "assistant", "content": typed},
                {"role": "user", "content": user}]
    # a budget no example reaches (12 chunks of 4-byte characters, typed four times): trimming is tested elsewhere
    prompt = model.builder.build(messages, max_prompt_tokens=4000)
    assert not prompt.notices
    b = model.builder
    # media: exactly the one real image, in its own <Img> [slot] </Img> group
    assert len(prompt.media) == int(with_image)
    assert prompt.ids.count(b.media_start) == 2 * len(prompt.media) and prompt.ids.count(b.media_end) == len(prompt.media)
    for pos, _ in prompt.media:
        assert prompt.ids[pos - 1: pos + 2] == [b.media_start, b.media_start, b.media_end]
    # turns: one end marker per message (the template's own), no typed signal tokens
    assert sum(prompt.ids.count(i) for i in b.stop_ids) == 3
    assert not set(prompt.ids) & (model.vocab.all_ids - {b.media_start, b.media_end})
    say(model, "Sure.")
    reply = model.chat(messages, FAST)
    assert calls == [] and reply.images == reply.audios == reply.videos == []
    assert reply.text == "Sure."


# ---- 3. context overflow, end to end ---------------------------------------------------------------------
def test_long_conversation_drops_oldest_turns_and_their_media(tiny_model, tmp_path, monkeypatch):
    """max_context 512, turns of ~300 tokens: old turns (with their images) are left out and never encoded; the
    chat goes on."""
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    files = {c: save_image(np.full((40, 40, 3), rgb, np.uint8), tmp_path / f"{c}.png") for c, rgb in colours.items()}
    encoded: list[tuple[int, ...]] = []
    real = tiny_model.encoder.encode
    monkeypatch.setattr(tiny_model.encoder, "encode", lambda m, items, **k: encoded.extend(
        tuple(int(v) for v in np.asarray(a).reshape(-1, 3)[0]) for a in items) or real(m, items, **k))
    settings = GenerationSettings(max_new_tokens=8, modalities=())  # prompt budget 504 tokens
    messages: list[dict[str, Any]] = []
    for colour in colours:
        messages += [{"role": "user", "content": [{"type": "image", "path": str(files[colour])},
                                                  {"type": "text", "text": f"What colour is this {colour} one?"}]},
                     {"role": "assistant", "content": f"It is {colour}. " + "More words about it. " * 60}]
    messages.append({"role": "user", "content": "And the last one again?"})
    reply = tiny_model.chat(messages, settings)
    assert any("were left out" in n for n in reply.notices), reply.notices
    assert encoded == [colours["blue"]]  # red and green went with their turns
    # it keeps going: the next turn fits the same way
    messages += [{"role": "assistant", "content": reply.text or "ok"}, {"role": "user", "content": "Thanks."}]
    assert any("left out" in n for n in tiny_model.chat(messages, settings).notices)


def test_over_long_message_is_cut_keeping_its_media(tiny_model, tmp_path, monkeypatch):
    img = save_image(np.full((40, 40, 3), 90, np.uint8), tmp_path / "x.png")
    encoded = []
    real = tiny_model.encoder.encode
    monkeypatch.setattr(tiny_model.encoder, "encode", lambda m, items, **k: encoded.append(len(items)) or real(m, items, **k))
    long = [{"type": "image", "path": str(img)}, {"type": "text", "text": "word " * 3000}]
    reply = tiny_model.chat([{"role": "user", "content": long}], GenerationSettings(max_new_tokens=8, modalities=()))
    assert any(n.startswith("Your message was too long and was cut to") for n in reply.notices), reply.notices
    assert encoded == [1]


def test_overflow_in_the_app_shows_a_notice_and_goes_on(model, tmp_path):
    h = ChatHandlers(model, OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "s.sqlite"))
    values = list(DEFAULT_SETTINGS)
    values[2] = 8
    session, chat = None, []  # max_context 512: the fourth message of ~150 tokens overflows
    for i in range(4):
        say(model, f"Reply {i}.")
        *_, (chat, session) = h.chat(f"Message {i}: " + "many words here " * 45, session, *values)
    assert _chat_text(chat[-1]).startswith("Reply 3.")
    assert "were left out" in _chat_text(chat[-1])  # the notice is shown under the reply


# ---- 5. output files -------------------------------------------------------------------------------------
def test_generated_media_expire_after_the_ttl(model, tmp_path, media_files):
    output = OutputRoot(tmp_path / "out", ttl_seconds=0.5)
    h = ChatHandlers(model, output, ScoreStore(tmp_path / "s.sqlite"))
    say(model, f"Here. {IMG_SIGNALS}")
    *_, (chat, old) = h.chat({"text": "Draw.", "files": [str(media_files["grey.png"])]}, None, *DEFAULT_SETTINGS)
    folder = output.root / old.id
    assert sorted(p.name[:3] for p in folder.iterdir()) == ["in-", "out"]
    assert all(Path(p["path"]).parent == folder for t in old.turns for p in t.user + t.media if "path" in p)
    time.sleep(0.7)
    say(model, "Hi.")
    *_, (_, new) = h.chat("Hello", None, *DEFAULT_SETTINGS)  # a new session sweeps expired folders
    assert not folder.exists() and new.id != old.id
    # the expired session itself goes on: its files are gone, its text history is not
    say(model, "Back.")
    *_, (chat, old) = h.chat("Are you still there?", old, *DEFAULT_SETTINGS)
    assert _chat_text(chat[3]).startswith("Back.") and "1 earlier upload(s) had expired" in _chat_text(chat[3])


@pytest.mark.parametrize("shown", ["../../etc/passwd.png", "/etc/passwd.png", "a/b\\c.png", "nul\x00.png",
                                   "..", "con.png\n", "x" * 5000 + ".png"])
def test_uploaded_names_never_become_paths(tmp_path, media_files, shown):
    output = OutputRoot(tmp_path / "out")
    session = "0123456789abcdef0123456789abcdef"
    part = output.import_upload(session, media_files["grey.png"], shown_name=shown)
    dest = Path(part["path"])
    assert dest.parent == output.root / session and dest.name.startswith("in-") and dest.suffix == ".png"
    assert dest.is_file() and output.owns(dest) and sorted(os.listdir(output.root)) == [session]


def test_uploaded_file_with_a_hostile_name_on_disk(tmp_path, media_files):
    """The gradio cache keeps the client's (sanitised) name; whatever it is, only an allowed suffix survives."""
    weird = tmp_path / "up" / "..\\..\\etc\\passwd .PNG"
    weird.parent.mkdir()
    weird.write_bytes(media_files["grey.png"].read_bytes())
    sound = tmp_path / "up" / "evil.sh"
    sound.write_bytes(media_files["8bit.wav"].read_bytes())
    output = OutputRoot(tmp_path / "out")
    session = "f" * 32
    names = [Path(output.import_upload(session, f)["path"]).name for f in (weird, sound)]
    assert names[0].endswith(".png") and names[1].endswith(".wav")  # from the content, not the name
    assert all(n.startswith("in-") and "passwd" not in n and "evil" not in n for n in names)


# ---- 6. weights ------------------------------------------------------------------------------------------
def test_truncated_encoder_weights_name_the_file(tmp_path):
    from nextgpt.encode import ENCODER_FILE, EncoderCheckpointError, MediaEncoder
    cfg = NextGPTConfig.from_name("tiny").encoder
    MediaEncoder(cfg).save(tmp_path)
    path = tmp_path / ENCODER_FILE
    _cut(path, path)
    with pytest.raises(EncoderCheckpointError, match=f"{ENCODER_FILE} is not a readable safetensors file"):
        MediaEncoder.load(tmp_path, cfg)


def test_truncated_decoder_weights_name_the_file(model, tmp_path):
    from nextgpt.decode import Decoders

    model.decoders.save(tmp_path, ["image"])
    unet = next((tmp_path / "decoders" / "image" / "unet").glob("*.safetensors"))
    _cut(unet, unet)
    with pytest.raises(OSError) as err:  # diffusers' own message, with the path
        Decoders.from_folder(model.cfg, tmp_path).pipeline("image")
    assert "unet" in str(err.value) and unet.name in str(err.value), str(err.value)
    print(f"FIGURE truncated decoder error: {type(err.value).__name__}: {err.value}")


def test_token_rows_without_their_key_name_the_file_and_key(model, tmp_path):
    from safetensors.torch import save_file

    from nextgpt.loading import TOKEN_ROWS, CheckpointError, load_token_rows_file

    path = tmp_path / TOKEN_ROWS
    save_file({"lm_head": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=f"{TOKEN_ROWS}: missing key 'embed_tokens'"):
        load_token_rows_file(model, path)
    save_file({"embed_tokens": torch.zeros(3, 5)}, path)
    with pytest.raises(CheckpointError, match=rf"{TOKEN_ROWS}: .*embed_tokens.*\(3, 5\)"):
        load_token_rows_file(model, path)


# ---- 7. a crash while a checkpoint is written ------------------------------------------------------------
def _half_written(real_save: Callable[..., None]) -> Callable[..., None]:
    """safetensors' save_file that dies halfway through: half the bytes land on disk, then an exception."""
    def save_file(tensors: dict[str, torch.Tensor], filename: Any, *args: Any, **kwargs: Any) -> None:
        real_save(tensors, filename, *args, **kwargs)
        _cut(Path(filename), Path(filename))
        raise OSError("No space left on device (simulated)")
    return save_file


def test_crash_during_a_checkpoint_write_keeps_the_previous_state(tiny_model, tmp_path, monkeypatch):
    import safetensors.torch
    from nextgpt.loading import OUTPUT_PROJECTORS, read_safetensors, save_checkpoint
    from nextgpt.training.loop import RunConfig, load_state, train
    from nextgpt.training.plans import PLANS
    from tests.test_training import examples

    prepared, collate = examples(tiny_model)
    run = RunConfig(out=tmp_path / "ckpt", run_dir=tmp_path / "run", steps=6, batch_size=4, lr=1e-3, save_every=2)
    real_save = safetensors.torch.save_file  # what nextgpt.files.save_tensors calls for every weight file
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 state: dies halfway
            return _half_written(real_save)(*args, **kwargs)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_model, PLANS["stage2"], prepared, collate, run)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    # the step-2 state is still there and loads; a restart continues from it to the end
    assert load_state(run.run_dir, tiny_model, _Opt())[0] == 2
    resumed = train(tiny_model, PLANS["stage2"], prepared, collate, run)
    assert resumed["history"][0]["step"] == 3 and resumed["steps"] == 6
    # a crash while the final checkpoint is rewritten leaves the earlier file readable, with the earlier values
    before = read_safetensors(run.out / OUTPUT_PROJECTORS)
    with torch.no_grad():
        for p in tiny_model.output_projectors.parameters():
            p.add_(1.0)
    monkeypatch.setattr(safetensors.torch, "save_file", _half_written(real_save))
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tiny_model, run.out, parts=("output",))
    after = read_safetensors(run.out / OUTPUT_PROJECTORS)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_crash_between_the_two_renames_resumes_from_the_old_state(tiny_model, tmp_path):
    from nextgpt.training.loop import RunConfig, load_state, train
    from nextgpt.training.plans import PLANS
    from tests.test_training import examples

    prepared, collate = examples(tiny_model)
    run = RunConfig(out=tmp_path / "ckpt", run_dir=tmp_path / "run", steps=4, batch_size=4, lr=1e-3, save_every=2)
    train(tiny_model, PLANS["stage1"], prepared, collate, run, stop_after=2)
    (run.run_dir / "state").rename(run.run_dir / "state.old")  # state -> state.old done, tmp -> state not yet
    assert load_state(run.run_dir, tiny_model, _Opt())[0] == 2


class _Opt:
    """Stands in for the optimizer when only the saved step is wanted."""

    def load_state_dict(self, state: Any) -> None:
        pass


# ---- 8. scores from several processes --------------------------------------------------------------------
_WRITER = """
import sys
from app.store import Score, ScoreStore
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ScoreStore(path)
i = 0
while count < 0 or i < count:
    i += 1
    row = store.add(Score(evaluator=name, category="T->I", conversion="T->I", turn=i, score=1 + i % 10,
                          preset="nano", model_version="v1", comment="x" * 200))
    print(row, flush=True)  # printed only after the commit returned
"""


def test_scores_from_several_processes_and_a_killed_one(tmp_path):
    path = tmp_path / "scores.sqlite"
    store = ScoreStore(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(name: str, count: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(count)], stdout=subprocess.PIPE,
                                text=True, env=env)

    writers = {f"w{k}": start(f"w{k}", 40) for k in range(4)}
    victim = start("victim", -1)  # writes until killed
    committed: dict[str, list[int]] = {"victim": []}
    assert victim.stdout is not None
    for line in victim.stdout:
        committed["victim"].append(int(line))
        if len(committed["victim"]) == 30:
            os.kill(victim.pid, signal.SIGKILL)  # mid-loop, most likely inside or between transactions
            break
    victim.wait(timeout=30)
    committed["victim"] += [int(x) for x in victim.stdout.read().split()]  # printed before the kill, unread
    exports = [store.export_csv(tmp_path / f"during-{i}.csv") for i in range(3)]  # while the others still write
    for name, proc in writers.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        committed[name] = [int(x) for x in out.split()]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {r["id"]: r for r in store.rows()}
    for name, ids in committed.items():
        assert set(ids) <= set(rows), name  # no committed score is lost
        mine = sorted(r["turn"] for r in rows.values() if r["evaluator"] == name)
        assert mine == list(range(1, len(mine) + 1))  # each writer's rows in order, none half-written
    assert len(rows) - sum(len(ids) for ids in committed.values()) <= 1  # at most the victim's last, unprinted
    final = store.export_csv(tmp_path / "final.csv")
    assert _csv(final) == [{k: str(v) for k, v in r.items()} for r in store.rows()]
    for early in exports:  # an export taken mid-write is a consistent prefix-free snapshot of committed rows
        for row in _csv(early):
            assert row == {k: str(v) for k, v in rows[int(row["id"])].items()}
    print(f"FIGURE scores: 4 writer processes x 40 + 1 killed after {len(committed['victim'])} commits -> "
          f"{len(rows)} rows, integrity ok")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
