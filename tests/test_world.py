"""Tests for nextgpt.world: vocabulary, rendering, judges, media round trips and the record files."""

from __future__ import annotations

import colorsys
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter

from nextgpt.world import (ATTRIBUTES, CAPTION_TEMPLATES, JUDGES, KINDS, MEDIA_TOKENS, MODALITIES, SAMPLE_RATE,
                           SPLITS, encode_videos, judge_audio, judge_image, judge_video, load_records, make_split,
                           parse_caption, random_edit, read_media, sample_dialogue, sample_spec, write_media)
from nextgpt.world import prompts as P
from nextgpt.world.records import TASKS
from nextgpt.world.records import main as records_main
from nextgpt.world.vocab import PITCH_RANGES, SHAPES

N_JUDGE = 300  # samples per modality for the accuracy tests
EXTS = {"image": ".png", "audio": ".wav", "video": ".mp4"}


def _specs(modality: str, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [sample_spec(modality, rng) for _ in range(n)]


def _judge(modality: str, media: np.ndarray) -> dict:
    return JUDGES[modality](media)  # judge_audio defaults to the world's 16 kHz


# ---------------------------------------------------------------- corruptions used to stress the judges

def _noise(media: np.ndarray, rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """Gaussian noise with std `sigma` of the value range, clipped back into the range."""
    lo, hi = (0, 255) if media.dtype == np.uint8 else (-1.0, 1.0)
    noisy = media.astype(np.float64) + rng.normal(0.0, sigma * (hi - lo), media.shape)
    return np.clip(noisy, lo, hi).astype(media.dtype)


def _blur(frames: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Gaussian blur of an image (H, W, 3) or of every frame of a clip (T, H, W, 3)."""
    blur = lambda f: np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius)))  # noqa: E731
    return blur(frames) if frames.ndim == 3 else np.stack([blur(f) for f in frames])


CORRUPTIONS = {
    "image": ("clean", "noise", "blur", "blur+noise"),
    "audio": ("clean", "noise"),
    "video": ("clean", "noise", "blur+noise"),
}


def _corrupt(media: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if "blur" in how:
        media = _blur(media)
    if "noise" in how:
        media = _noise(media, rng)
    return media


# ---------------------------------------------------------------- vocabulary and rendering

@pytest.mark.parametrize("modality", MODALITIES)
def test_sampling_covers_the_vocabulary(modality):
    specs = _specs(modality, 400)
    for attribute, words in ATTRIBUTES[modality].items():
        assert {getattr(s, attribute) for s in specs} == set(words), attribute
    for s in specs[:50]:
        assert s.caption == CAPTION_TEMPLATES[modality].format(**s.attributes)
        assert re.fullmatch(r"a( [a-z]+)+", s.caption)


def test_caption_examples():
    from nextgpt.world import AudioSpec, ImageSpec, VideoSpec
    assert ImageSpec("circle", "red", 20, 30.0, 30.0).caption == "a red circle"
    assert AudioSpec("high", "beeping", "buzz", 1000.0, 4.0).caption == "a high beeping buzz"
    assert AudioSpec("low", "steady", "tone", 250.0, 4.0).caption == "a low steady tone"
    assert VideoSpec("square", "blue", "left", 20, 30.0, 0.5, 32.0).caption == "a blue square moving left"


def test_render_formats_and_ranges():
    for s in _specs("image", 100):
        img = s.render()
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        ys, xs = np.nonzero((img != 255).any(-1))
        assert 18 <= s.size <= 40 and ys.min() >= 1 and xs.min() >= 1 and ys.max() <= 62 and xs.max() <= 62
        assert (img[0] == 255).all() and (img[:, 0] == 255).all()  # white background at the border
    for s in _specs("audio", 40):
        wave = s.render()
        assert wave.shape == (2 * SAMPLE_RATE,) and wave.dtype == np.float32
        assert 0.45 <= np.abs(wave).max() <= 0.5 + 1e-6
        assert PITCH_RANGES[s.pitch][0] <= s.f0 <= PITCH_RANGES[s.pitch][1] and 3.0 <= s.rate <= 5.0
        assert abs(wave[0]) < 1e-3 and abs(wave[-1]) < 1e-3  # faded ends: no clicks
    for s in _specs("video", 100):
        clip = s.render()
        assert clip.shape == (8, 64, 64, 3) and clip.dtype == np.uint8
        assert (clip[:, 0] == 255).all() and (clip[:, -1] == 255).all()  # shape stays inside the frame
        centroids = [np.argwhere((f != 255).any(-1)).mean(0) for f in clip]  # (y, x)
        assert np.abs(centroids[-1] - centroids[0]).max() >= 23.0
    rng = np.random.default_rng(0)
    assert sample_spec("video", rng, n_frames=16).render().shape == (16, 64, 64, 3)


def test_same_seed_same_media():
    for modality in MODALITIES:
        a, b = _specs(modality, 5, seed=7), _specs(modality, 5, seed=7)
        assert a == b
        assert all(x.render().tobytes() == y.render().tobytes() for x, y in zip(a, b))
        assert a != _specs(modality, 5, seed=8)


@pytest.mark.parametrize("modality", MODALITIES)
def test_edits_change_exactly_one_attribute(modality):
    rng = np.random.default_rng(3)
    seen = set()
    for spec in _specs(modality, 200):
        attribute, value, new = random_edit(spec, rng)
        seen.add(attribute)
        diff = {k for k in spec.attributes if spec.attributes[k] != new.attributes[k]}
        assert diff == {attribute} and new.attributes[attribute] == value
        assert _judge(modality, new.render()) == new.attributes
        if attribute == "pitch":
            assert PITCH_RANGES[value][0] <= new.f0 <= PITCH_RANGES[value][1]
        else:  # everything but the edited word is kept
            kept = {f.name for f in dataclasses.fields(spec)} - {attribute}
            assert all(getattr(spec, k) == getattr(new, k) for k in kept)
    assert seen == set(ATTRIBUTES[modality])
    with pytest.raises(ValueError):
        spec.edited(next(iter(ATTRIBUTES[modality])), "nonsense")


# ---------------------------------------------------------------- judges

@pytest.mark.parametrize("modality,how", [(m, h) for m in MODALITIES for h in CORRUPTIONS[m]])
def test_judges_recover_attributes(modality, how):
    rng = np.random.default_rng(11)
    specs = _specs(modality, N_JUDGE, seed=5)
    correct = sum(_judge(modality, _corrupt(s.render(), how, rng)) == s.attributes for s in specs)
    assert correct / N_JUDGE >= 0.98, f"{modality}/{how}: {correct}/{N_JUDGE}"


def test_judges_on_degenerate_inputs():
    nothing_image = {"colour": None, "shape": None}
    for value in (255, 0, 128):
        assert judge_image(np.full((64, 64, 3), value, np.uint8)) == nothing_image
        assert judge_video(np.full((8, 64, 64, 3), value, np.uint8)) == {**nothing_image, "direction": None}
    silent = {"pitch": None, "rhythm": None, "sound": None}
    assert judge_audio(np.zeros(32000, np.float32), 16000) == silent
    assert judge_audio(np.full(32000, 0.3, np.float32), 16000) == silent  # DC only
    assert judge_audio(np.zeros(0), 16000) == silent
    assert judge_image(np.zeros((0, 0, 3), np.uint8)) == nothing_image
    # a still shape has colour and shape but no direction
    still = np.stack([sample_spec("image", np.random.default_rng(0)).render()] * 8)
    assert judge_video(still)["direction"] is None and judge_video(still)["shape"] is not None


# ---------------------------------------------------------------- judges refuse what is not one world object

def _not_a_world_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(64, 64, 3) uint8 that no world caption describes; `kind` says how."""
    from nextgpt.world.render import draw_shape
    from nextgpt.world.vocab import COLOURS

    colours = list(COLOURS.values())
    pick = lambda: colours[int(rng.integers(len(colours)))]  # noqa: E731
    if kind == "uniform noise":
        return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if kind == "grey noise":
        return np.clip(rng.normal(128, 60, (64, 64, 3)), 0, 255).astype(np.uint8)
    if kind == "noise on white":  # saturated speckles over a white frame, a third of the pixels
        img = np.full((64, 64, 3), 255, np.uint8)
        spots = rng.random((64, 64)) < 0.33
        img[spots] = rng.integers(0, 256, (int(spots.sum()), 3))
        return img
    if kind == "field":
        return np.broadcast_to(np.array(pick(), np.uint8), (64, 64, 3)).copy()
    if kind == "field with a white shape":
        hole = draw_shape(SHAPES[int(rng.integers(3))], (0, 0, 0), 30, 32, 32) == 0  # (64, 64, 3) bool
        return np.where(hole, 255, np.array(pick(), np.uint8)).astype(np.uint8)
    if kind == "outline":
        img = Image.new("RGB", (64, 64), (255, 255, 255))
        box = (14, 14, 14 + int(rng.integers(24, 36)), 14 + int(rng.integers(24, 36)))
        draw = ImageDraw.Draw(img)
        outline = {"circle": draw.ellipse, "square": draw.rectangle}[("circle", "square")[int(rng.integers(2))]]
        outline(box, outline=pick(), width=2)
        return np.asarray(img)
    if kind == "two objects":  # e.g. a red circle beside a bigger blue square
        first, second = rng.choice(len(colours), 2, replace=False)
        left = draw_shape(SHAPES[int(rng.integers(3))], colours[first], 20, 14, 32)
        right = draw_shape(SHAPES[int(rng.integers(3))], colours[second], 26, 47, 32)
        return np.minimum(left, right)
    if kind == "two colours":  # one square, half of it in a clearly different colour (hues >= 45 degrees apart)
        hues = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLOURS.items()}
        first, second = rng.choice(len(colours), 2, replace=False)
        while min(abs(hues[list(COLOURS)[first]] - hues[list(COLOURS)[second]]),
                  360 - abs(hues[list(COLOURS)[first]] - hues[list(COLOURS)[second]])) < 45:
            first, second = rng.choice(len(colours), 2, replace=False)
        img = draw_shape("square", colours[first], 32, 32, 32).copy()
        img[16:48, 32:48] = colours[second]
        return img
    raise ValueError(kind)


NOT_WORLD_IMAGES = ("uniform noise", "grey noise", "noise on white", "field", "field with a white shape", "outline",
                    "two objects", "two colours")


@pytest.mark.parametrize("kind", NOT_WORLD_IMAGES)
def test_image_judge_sees_nothing_in_what_is_not_one_world_object(kind):
    rng = np.random.default_rng(0)
    for _ in range(25):
        img = _not_a_world_image(kind, rng)
        assert judge_image(img) == {"colour": None, "shape": None}, kind
        clip = np.stack([np.roll(img, 3 * t, axis=1) for t in range(8)])  # the same thing, moving
        assert judge_video(clip) == {"colour": None, "shape": None, "direction": None}, kind


def test_video_judge_needs_one_object_throughout():
    spec = sample_spec("video", np.random.default_rng(4))
    clip = spec.render()
    assert judge_video(clip) == spec.attributes
    blank = clip.copy()
    blank[:4] = 255  # the object missing from half the frames
    assert judge_video(blank)["colour"] is None
    two = clip.copy()
    two[:, 2:12, 2:12] = (30, 170, 60) if spec.colour != "green" else (220, 30, 30)  # a second, still object
    assert judge_video(two) == {"colour": None, "shape": None, "direction": None}


def _not_a_world_sound(kind: str, rng: np.random.Generator) -> np.ndarray:
    from nextgpt.world.render import synth_sound

    n = 2 * SAMPLE_RATE
    if kind == "white noise":
        return (0.3 * rng.standard_normal(n)).astype(np.float32)
    if kind == "beeping noise":  # white noise gated like a world beep
        gate = (np.arange(n) / SAMPLE_RATE * 4.0) % 1.0 < 0.5
        return (0.3 * rng.standard_normal(n) * gate).astype(np.float32)
    if kind == "low-passed noise":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[np.fft.rfftfreq(n, 1 / SAMPLE_RATE) > 2000] = 0
        return (np.fft.irfft(spectrum, n) / 10).astype(np.float32)
    if kind == "two pitches":  # a low and a high tone at once
        return synth_sound(float(rng.uniform(200, 300)), False, None) + synth_sound(float(rng.uniform(800, 1200)), False, None)
    if kind == "click train":
        wave = np.zeros(n, np.float32)
        wave[:: int(rng.integers(400, 4000))] = 0.9
        return wave
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["white noise", "beeping noise", "low-passed noise", "two pitches", "click train"])
def test_audio_judge_hears_nothing_in_sound_that_is_not_a_world_tone(kind):
    rng = np.random.default_rng(1)
    for _ in range(10):
        assert judge_audio(_not_a_world_sound(kind, rng), SAMPLE_RATE) == {"pitch": None, "rhythm": None, "sound": None}


def test_audio_judge_reads_tone_and_buzz_from_the_harmonics():
    from nextgpt.world.render import synth_sound

    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    for f0 in (220.0, 1000.0):
        sine = 0.5 * np.sin(2 * np.pi * f0 * t)
        assert judge_audio(sine, SAMPLE_RATE)["sound"] == "tone"
        assert judge_audio(synth_sound(f0, True, None), SAMPLE_RATE)["sound"] == "buzz"
        # a sine with a 3rd harmonic at -33 dB (what a vocoder that smooths a buzz returns) is still a tone
        faint = sine + 0.5 * 10 ** (-33 / 20) * np.sin(2 * np.pi * 3 * f0 * t)
        assert judge_audio(faint, SAMPLE_RATE)["sound"] == "tone"
        # odd harmonics at a square wave's strengths, however the phases fall, make a buzz
        phases = np.random.default_rng(int(f0)).uniform(0, 2 * np.pi, 4)
        odd = sum(np.sin(2 * np.pi * k * f0 * t + p) / k for k, p in zip((1, 3, 5, 7), phases) if k * f0 < 7900)
        assert judge_audio(0.4 * odd, SAMPLE_RATE)["sound"] == "buzz"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), kind=st.sampled_from(["uniform", "gauss", "int", "float01", "grey", "rgba"]))
def test_image_and_video_judges_never_raise(seed, kind):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 70, size=2)
    arr = {
        "uniform": lambda: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "gauss": lambda: rng.normal(0, 1000, (h, w, 3)),
        "int": lambda: rng.integers(-5, 5, (h, w, 3)),
        "float01": lambda: rng.random((h, w, 3)).astype(np.float32),
        "grey": lambda: rng.integers(0, 256, (h, w), dtype=np.uint8),
        "rgba": lambda: rng.integers(0, 256, (h, w, 4), dtype=np.uint8),
    }[kind]()
    for result in (judge_image(arr), judge_video(np.stack([arr] * int(rng.integers(1, 4))))):
        assert all(v is None or isinstance(v, str) for v in result.values())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 40000), scale=st.sampled_from([0.0, 1e-6, 0.5, 1.0, 1e4]),
       sr=st.sampled_from([8000, 16000, 44100]), stereo=st.booleans())
def test_audio_judge_never_raises(seed, n, scale, sr, stereo):
    rng = np.random.default_rng(seed)
    wave = rng.normal(0.0, scale, (n, 2) if stereo else n)
    result = judge_audio(wave, sr)
    assert set(result) == set(ATTRIBUTES["audio"])
    assert all(v is None or v in ATTRIBUTES["audio"][k] for k, v in result.items())


def test_parse_caption():
    assert parse_caption("I see a red circle.", "image") == {"colour": "red", "shape": "circle"}
    assert parse_caption("It is a HIGH Beeping buzz!", "audio") == {"pitch": "high", "rhythm": "beeping",
                                                                     "sound": "buzz"}
    assert parse_caption("A blue square is moving left.", "video") == {"colour": "blue", "shape": "square",
                                                                        "direction": "left"}
    assert parse_caption("nothing here, only a lower tone", "audio") == {"pitch": None, "rhythm": None, "sound": "tone"}
    assert parse_caption("a green thing, then a red one", "image") == {"colour": "green", "shape": None}
    for modality in MODALITIES:
        for s in _specs(modality, 50):
            assert parse_caption(f"Sure! Here is {s.caption}. {MEDIA_TOKENS[modality]}", modality) == s.attributes


# ---------------------------------------------------------------- media files

def test_file_round_trips_keep_judge_answers(tmp_path):
    for modality in ("image", "audio"):
        for i, s in enumerate(_specs(modality, 30, seed=2)):
            path = tmp_path / f"{modality}{i}{EXTS[modality]}"
            write_media(s, path)
            back = read_media(path)
            assert back.shape == s.render().shape
            assert _judge(modality, back) == s.attributes
    specs = _specs("video", 60, seed=2) + [sample_spec("video", np.random.default_rng(1), n_frames=13)]
    paths = [tmp_path / f"clip{i}.mp4" for i in range(len(specs))]
    encode_videos([s.render() for s in specs], paths)  # one ffmpeg process, cut per clip
    write_media(specs[0], tmp_path / "single.mp4")
    for s, path in zip(specs + specs[:1], paths + [tmp_path / "single.mp4"]):
        clip = read_media(path)
        assert clip.shape == (s.n_frames, 64, 64, 3)
        assert np.abs(clip.astype(int) - s.render()).mean() < 4.0
        assert judge_video(clip) == s.attributes


# ---------------------------------------------------------------- records

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    make_split(out, "train", n=8, seed=0, n_dialogues=30, n_tasks=2)
    return out


def test_make_split_is_deterministic(world, tmp_path):
    make_split(tmp_path, "train", n=8, seed=0, n_dialogues=30, workers=2, n_tasks=2)
    files = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all((world / f).read_bytes() == (tmp_path / f).read_bytes() for f in files)


def _media_path(world: Path, rel: str, modality: str) -> Path:
    assert rel.startswith(f"{ {'image': 'images', 'audio': 'audio', 'video': 'videos'}[modality]}/")
    path = world / "train" / rel
    assert path.is_file() and path.suffix == EXTS[modality]
    return path


def test_comprehension_records(world):
    records = load_records(world, "train", "comprehension")
    assert len(records) == 8 * 3
    for rec in records:
        (key,) = [k for k in rec if k.startswith("input_")]
        modality = key.removeprefix("input_")
        human, gpt = rec["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].startswith(MEDIA_TOKENS[modality] + "\n")
        media = read_media(_media_path(world, rec[key], modality))
        assert parse_caption(gpt["value"], modality) == _judge(modality, media)
        assert "<" not in gpt["value"]


@pytest.mark.parametrize("kind", ["generation", "t2m"])
def test_generation_and_t2m_records(world, kind):
    records = load_records(world, "train", kind)
    assert len(records) == 8 * 3
    for rec in records:
        (key,) = [k for k in rec if k.startswith("output_")]
        modality = key.removeprefix("output_")
        caption = rec[f"{modality}_captions"]
        human, gpt = rec["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert caption in human["value"] and gpt["value"].endswith(MEDIA_TOKENS[modality])
        if kind == "generation":
            assert gpt["value"] == "Sure thing! " + MEDIA_TOKENS[modality]
        else:
            assert caption in gpt["value"]
        assert _judge(modality, read_media(_media_path(world, rec[key], modality))) == parse_caption(caption, modality)


def test_mosit_records(world):
    edit_prompts = {p for by_value in P.EDIT_PROMPTS.values() for ps in by_value.values() for p in ps}
    n_edits = 0
    records = load_records(world, "train", "mosit")
    assert len(records) == 30 + 2 * len(TASKS) and not any("task" in r for r in records[:30])
    for rec in records:
        turns = rec["conversation"]
        if "task" in rec:  # task records: 1-3 turns, see test_task_records
            assert list(rec) == ["image_list", "video_list", "audio_list", "conversation", "task"]
            assert 2 <= len(turns) <= 6
        else:
            assert list(rec) == ["image_list", "video_list", "audio_list", "conversation"]
            assert 4 <= len(turns) <= 10
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        for modality in MODALITIES:
            items = rec[f"{modality}_list"]
            tokens = sum(t["value"].count(MEDIA_TOKENS[modality]) for t in turns)
            assert tokens == len(items)
            for item in items:
                assert set(item) == {f"{modality}_name", "caption"}
                _media_path(world, item[f"{modality}_name"], modality)
        # walk the conversation, consuming list items in token order; check edits against the previous item
        cursor = dict.fromkeys(MODALITIES, 0)
        last = None
        for t in turns:
            for modality in MODALITIES:
                for _ in range(t["value"].count(MEDIA_TOKENS[modality])):
                    item = rec[f"{modality}_list"][cursor[modality]]
                    cursor[modality] += 1
                    if t["from"] == "gpt":
                        assert item["caption"] in t["value"]
                        if prev_human in edit_prompts:
                            n_edits += 1
                            assert last[0] == modality
                            old, new = parse_caption(last[1], modality), parse_caption(item["caption"], modality)
                            assert sum(old[k] != new[k] for k in old) == 1
                    last = (modality, item["caption"])
            prev_human = t["value"]
    assert n_edits > 5


def test_task_records(world):
    """Every task row is there, its last turn is its kind, and each item's file shows its caption to the judges:
    an edited upload differs from it in exactly one word, a conversion keeps the colour and shape, an answer's
    verdict is the one the uploads' attributes give, and the task's items differ from the latest earlier item in
    every word they could share."""
    from types import SimpleNamespace

    from nextgpt.config import Modality
    from nextgpt.eval.evaluate import judge_answer, turn_kind
    from nextgpt.world.messages import record_to_messages

    tasks = [r for r in load_records(world, "train", "mosit") if "task" in r]
    assert [r["task"] for r in tasks] == [t.name for t in TASKS] * 2
    kinds = {t.name: t.kind for t in TASKS}
    for rec in tasks:
        messages = record_to_messages(rec, world / "train")
        user, answer = messages[-2:]
        assert turn_kind(user) == kinds[rec["task"]]
        for part in (p for m in messages for p in m["content"] if p["type"] != "text"):
            assert _judge(part["type"], read_media(part["path"])) == parse_caption(part["caption"], part["type"])
        uploads = [p for p in user["content"] if p["type"] != "text"]
        made = [p for p in answer["content"] if p["type"] != "text"]
        earlier = [p for m in messages[:-2] for p in m["content"] if p["type"] != "text"]
        words = lambda p: parse_caption(p["caption"], p["type"])  # noqa: E731
        if kinds[rec["task"]] in ("upload_check", "upload_pair"):
            assert not made and len(uploads) == (2 if kinds[rec["task"]] == "upload_pair" else 1)
            reply = SimpleNamespace(text=answer["content"][0]["text"], media={m: [] for m in Modality})
            assert judge_answer(user, reply)[0]
        elif kinds[rec["task"]] == "upload_edit":
            (old,), (new,) = uploads, made
            assert old["type"] == new["type"] and sum(words(old)[k] != v for k, v in words(new).items()) == 1
        elif kinds[rec["task"]] in ("upload_animate", "upload_still"):
            (old,), (new,) = uploads, made
            assert {old["type"], new["type"]} == {"image", "video"}
            assert all(words(old)[k] == words(new)[k] for k in ("colour", "shape"))
        else:
            assert not uploads and len(made) == 1 and earlier
        if earlier:
            before, first = words(earlier[-1]), words((uploads or made)[0])
            assert all(before[k] != v for k, v in first.items() if k in before)


def test_dialogues_are_varied_and_consistent():
    rng = np.random.default_rng(0)
    dialogues = [sample_dialogue(rng) for _ in range(300)]
    assert {len(d) for d in dialogues} == {2, 3, 4, 5}
    kinds = {t.kind for d in dialogues for t in d}
    assert kinds == {"upload", "request", "edit", "question", "animate", "still", "chat"}
    switches = 0
    for d in dialogues:
        assert d[0].kind in ("upload", "request")
        items = [s for t in d for s in t.inputs + t.outputs]
        switches += len({s.modality for s in items}) > 1
        last = None
        for t in d:
            if t.kind == "edit":
                (new,) = t.outputs
                assert new.modality == last.modality
                assert sum(a != b for a, b in zip(last.attributes.values(), new.attributes.values())) == 1
            if t.kind in ("animate", "still"):
                (new,) = t.outputs
                assert (new.colour, new.shape) == (last.colour, last.shape) and new.modality != last.modality
            last = (t.inputs + t.outputs or (last,))[-1]
    assert switches > 50


def test_prompt_tables():
    for modality in MODALITIES:
        assert len(set(P.COMPREHENSION_PROMPTS[modality])) >= 10
        assert len(set(P.T2M_REQUESTS[modality])) >= 15
        assert all("{caption}" in t for t in P.T2M_REQUESTS[modality] + P.CAPTION_ANSWERS[modality])
        for attribute, words in ATTRIBUTES[modality].items():
            assert set(P.EDIT_PROMPTS[attribute]) == set(words) and attribute in P.QUESTIONS


def test_ensure_split_writes_the_standard_split_once(tmp_path):
    from nextgpt.world.records import ensure_split

    root = ensure_split(tmp_path / "a", "test", n=3)
    make_split(tmp_path / "b", "test", n=3, seed=0, n_dialogues=3, workers=2, n_tasks=3)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "b" / "test") for p in (tmp_path / "b" / "test").rglob("*")
                                     if p.is_file())
    assert all((root / f).read_bytes() == (tmp_path / "b" / "test" / f).read_bytes() for f in files)
    stamp = (root / "meta.json").stat().st_mtime_ns
    ensure_split(tmp_path / "a", "test", n=3)  # present: left alone
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "version": meta["version"] - 1}))
    ensure_split(tmp_path / "a", "test", n=3)  # of an older world version: written again
    assert json.loads((root / "meta.json").read_text()) == meta
    with pytest.raises(ValueError):
        ensure_split(tmp_path, "dev")


def test_cli_writes_disjoint_splits(tmp_path):
    records_main(["--out", str(tmp_path), "--seed", "1", "--train", "3", "--val", "2", "--test", "2",
                  "--dialogues", "0.5", "--workers", "2", "--train-tasks", "1", "--val-tasks", "0", "--test-tasks", "1"])
    seen = {}
    for split, n, tasks in zip(SPLITS, (3, 2, 2), (1, 0, 1)):
        for kind in KINDS:
            want = round(n * 0.5) + tasks * len(TASKS) if kind == "mosit" else 3 * n
            assert len(load_records(tmp_path, split, kind)) == want
        seen[split] = (tmp_path / split / "images" / "000000.png").read_bytes()
    assert len(set(seen.values())) == 3  # different seeds per split
    with pytest.raises(ValueError):
        load_records(tmp_path, "train", "nonsense")
