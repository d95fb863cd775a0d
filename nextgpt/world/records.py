"""Write the world as train/val/test splits of official NExT-GPT records plus media files.

    python -m nextgpt.world.records --out data/world --seed 0 --train 2000 --val 200 --test 200 \
        --train-tasks 500 --val-tasks 50 --test-tasks 100

Layout of DIR/<split>/ (media paths inside records are relative to this folder):
    images/000000.png  audio/000000.wav (16 kHz)  videos/000000.mp4 (8 fps, h264)
    comprehension.json  X -> caption pairs (stage 1): {input_image, conversations}
    generation.json     caption-only generation (stage 2): {output_image, image_captions, conversations}
    t2m.json            text -> text + X instructions: same keys, answer "Here is <caption>. <image>"
    mosit.json          2-5 turn dialogues: {image_list, video_list, audio_list, conversation}, then task records
                        (1-3 turns, "task": row of TASKS): context turns, then a request about uploaded media
                        (edit it, image <-> video, a question about one or two uploads) or a new request
    meta.json           seed and vocabulary
In MosIT dialogues the k-th "<image>" of the conversation (human turn = upload, gpt turn = generated)
is the k-th entry of image_list; likewise for <audio> and <video>. Splits use disjoint seeds
(seed * 1000 + split index). What the test split holds out (`SplitRules`): its user turns use test-only
phrasings (prompts.TEST_BOOK, including an upload with an edit in the same turn); the attribute combinations
of vocab.HELD_OUT_PAIRS are in no train or val caption or target; none of its media is a train medium.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import subprocess
import tempfile
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import imageio_ffmpeg
import numpy as np
import soundfile as sf
from PIL import Image
from tqdm import tqdm

from nextgpt.config import MODALITY_INFO
from nextgpt.world import prompts as P
from nextgpt.world.vocab import (ATTRIBUTES, CAPTION_TEMPLATES, DIRECTIONS, HELD_OUT_PAIRS, MEDIA_TOKENS, MODALITIES,
                                 SAMPLE_RATE, VIDEO_FPS, Spec, held_out_pairs, random_edit, sample_image_spec,
                                 sample_spec, sample_video_spec, without_held_out)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 2000, "val": 200, "test": 200}  # items per modality (and dialogues) of the standard world
# 2: held-out phrasings and combinations, test media distinct from train; 3: task records (requests about uploaded
# media, a new request after another item) after the random dialogues in mosit.json (meta.json records it)
WORLD_VERSION = 3
KINDS = ("comprehension", "generation", "t2m", "mosit")
MEDIA_DIRS = {s.name: s.world_dir for s in MODALITY_INFO.values()}  # "image" -> "images"
MEDIA_EXTS = {s.name: s.extension for s in MODALITY_INFO.values()}  # "image" -> ".png"

T = TypeVar("T")


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- media files

def encode_videos(clips: Sequence[np.ndarray], paths: Sequence[str | Path], fps: int = VIDEO_FPS) -> None:
    """Encode (T, H, W, 3) uint8 clips of one frame size to h264 MP4 files with ONE ffmpeg process.

    The clips are piped as one stream with a key frame at each clip start and cut by ffmpeg's segment
    muxer, which is ~7x faster than one process per file (process start-up dominates at 64x64).
    """
    if not clips:
        return
    h, w = clips[0].shape[1:3]
    starts = np.cumsum([len(c) for c in clips])[:-1]  # first frame of every clip but the first
    with tempfile.TemporaryDirectory(dir=Path(paths[0]).parent) as tmp:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-threads", "1",
               "-force_key_frames", ",".join(f"{(b - 0.5) / fps:.6f}" for b in starts) or "0",
               "-f", "segment", "-segment_format", "mp4", "-reset_timestamps", "1"]
        if len(starts):
            cmd += ["-segment_frames", ",".join(map(str, starts))]
        stream = np.concatenate([np.ascontiguousarray(c, dtype=np.uint8) for c in clips])  # (sum T, H, W, 3)
        done = subprocess.run([*cmd, str(Path(tmp) / "%06d.mp4")], input=stream.tobytes(), capture_output=True)
        if done.returncode:
            raise RuntimeError(f"ffmpeg failed: {done.stderr.decode(errors='replace')}")
        for i, path in enumerate(paths):
            os.replace(Path(tmp) / f"{i:06d}.mp4", path)


def decode_video(path: str | Path) -> np.ndarray:
    """Decode a video file to (T, H, W, 3) uint8 with one ffmpeg call (pipes closed, unlike imageio's reader)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    done = subprocess.run(cmd, capture_output=True)
    sizes = re.findall(rb"Video:.*?, (\d+)x(\d+)", done.stderr)  # input stream, then the decoded output stream
    if done.returncode or not sizes:
        raise RuntimeError(f"ffmpeg could not decode {path}: {done.stderr[-500:].decode(errors='replace')}")
    w, h = map(int, sizes[-1])
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, h, w, 3)


_WRITERS: dict[str, Callable[[Path, np.ndarray], None]] = {
    "image": lambda path, arr: Image.fromarray(arr).save(path),
    "audio": lambda path, wave: sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16"),
    "video": lambda path, frames: encode_videos([frames], [path]),
}
_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".png": lambda path: np.asarray(Image.open(path).convert("RGB")),          # (H, W, 3) uint8
    ".wav": lambda path: sf.read(path, dtype="float32")[0],                    # (N,) float32
    ".mp4": decode_video,                                                      # (T, H, W, 3) uint8
}


def write_media(spec: Spec, path: str | Path) -> None:
    """Render `spec` and write it to `path` (PNG / 16 kHz WAV / MP4 by modality)."""
    _WRITERS[spec.modality](Path(path), spec.render())


def read_media(path: str | Path) -> np.ndarray:
    """Image (H, W, 3) uint8 | audio (N,) float32 | video (T, H, W, 3) uint8, chosen by file extension."""
    return _READERS[Path(path).suffix.lower()](Path(path))


def _render_videos(specs: Sequence[Spec], paths: Sequence[Path]) -> None:
    encode_videos([spec.render() for spec in specs], paths)


class MediaWriter:
    """Numbers items per modality under `root` and writes them on a thread pool.

    Images and audio are written as they come; videos are queued and encoded in batches of
    `video_batch` clips per ffmpeg process (see `encode_videos`) by `finish()`.
    """

    def __init__(self, root: Path, pool: Executor, video_batch: int = 250):
        self.root, self.pool, self.video_batch = root, pool, video_batch
        self.counts = dict.fromkeys(MODALITIES, 0)
        self.futures: list[Future] = []
        self.videos: list[tuple[Spec, Path]] = []
        for folder in MEDIA_DIRS.values():
            (root / folder).mkdir(parents=True, exist_ok=True)

    def save(self, spec: Spec) -> str:
        """Queue `spec` for writing; returns its path relative to `root`."""
        m = spec.modality
        rel = f"{MEDIA_DIRS[m]}/{self.counts[m]:06d}{MEDIA_EXTS[m]}"
        self.counts[m] += 1
        if m == "video":
            self.videos.append((spec, self.root / rel))
        else:
            self.futures.append(self.pool.submit(write_media, spec, self.root / rel))
        return rel

    def finish(self, desc: str = "media") -> None:
        """Encode the queued videos and wait for every write (re-raising the first error)."""
        for i in range(0, len(self.videos), self.video_batch):
            batch = self.videos[i:i + self.video_batch]
            specs, paths = zip(*batch)
            self.futures.append(self.pool.submit(_render_videos, specs, paths))
        self.videos = []
        for future in tqdm(as_completed(self.futures), total=len(self.futures), desc=desc, leave=False):
            future.result()
        self.futures = []


# ---------------------------------------------------------------- what each split holds

@dataclass(frozen=True)
class SplitRules:
    """How a split draws its items and phrases its user turns.

    train / val: the train phrasings, and every item moved off the held-out attribute combinations
    (`without_held_out`: one word changed, no random draw, so every other record is as before).
    test: the test-only phrasings, the held-out combinations as they fall, and no medium that is also a
    train medium (`avoid`: keys of the train split's items, and of version 1's train split, which kept the
    held-out combinations; a clash is drawn again).
    """

    book: P.Phrasebook = P.TRAIN_BOOK
    hold_out: bool = True                 # keep items off HELD_OUT_PAIRS
    avoid: frozenset = frozenset()        # media keys (`media_key`) that must not recur

    def item(self, spec: Spec, rng: np.random.Generator, redraw: Callable[[], Spec]) -> Spec:
        """`spec` made to follow the rules (`redraw()` gives a fresh candidate for a clash with `avoid`)."""
        if self.hold_out:
            spec = without_held_out(spec)
        while self.avoid and media_key(spec) in self.avoid:
            spec = redraw()
        return spec


TRAIN_RULES = SplitRules()


def media_key(spec: Spec) -> object:
    """What decides an item's media: equal keys, identical files. Images: shape, colour, size and the integer
    corner the renderer draws at; sound and video: the whole spec."""
    if spec.modality == "image":
        return ("image", spec.shape, spec.colour, spec.size, round(spec.cx - spec.size / 2),
                round(spec.cy - spec.size / 2))
    return spec


# ---------------------------------------------------------------- single-item records

def _turns(human: str, gpt: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def _describe(spec: Spec, rng: np.random.Generator, book: P.Phrasebook = P.TRAIN_BOOK) -> tuple[str, str]:
    """(human: "<image>\nDescribe this image.", gpt: "It is a red circle.")"""
    m = spec.modality
    human = f"{MEDIA_TOKENS[m]}\n{_pick(rng, book.comprehension[m])}"
    return human, _pick(rng, P.CAPTION_ANSWERS[m]).format(caption=spec.caption)


def _answer(spec: Spec, rng: np.random.Generator, answers: Sequence[str]) -> str:
    """A gpt reply that produces `spec`: "Here is a red circle. <image>"."""
    return _pick(rng, answers).format(caption=spec.caption, token=MEDIA_TOKENS[spec.modality])


def _request(spec: Spec, rng: np.random.Generator, book: P.Phrasebook = P.TRAIN_BOOK) -> str:
    """A human request for `spec`: "show me a red circle"."""
    return _pick(rng, book.t2m[spec.modality]).format(caption=spec.caption)


def comprehension_record(spec: Spec, path: str, rng: np.random.Generator, book: P.Phrasebook = P.TRAIN_BOOK) -> dict:
    """Stage 1: uploaded item -> its caption."""
    return {f"input_{spec.modality}": path, "conversations": _turns(*_describe(spec, rng, book))}


def generation_record(spec: Spec, path: str, rng: np.random.Generator,
                      answers: Sequence[str] = (P.GENERATION_ANSWER,), book: P.Phrasebook = P.TRAIN_BOOK) -> dict:
    """Stage 2 (caption-only): request -> "Sure thing! <image>"; with T2M answers it is a T2M record."""
    m = spec.modality
    conversation = _turns(_request(spec, rng, book), _answer(spec, rng, answers))
    return {f"output_{m}": path, f"{m}_captions": spec.caption, "conversations": conversation}


def t2m_record(spec: Spec, path: str, rng: np.random.Generator, book: P.Phrasebook = P.TRAIN_BOOK) -> dict:
    """Text -> text + X: request -> "Here is <caption>. <image>"."""
    return generation_record(spec, path, rng, P.T2M_ANSWERS, book)


# ---------------------------------------------------------------- MosIT dialogues

@dataclass(frozen=True)
class Turn:
    """One human -> gpt exchange of a MosIT dialogue."""
    kind: str                        # upload | upload_edit | request | edit | question | animate | still | chat
                                     # | upload_animate | upload_still | upload_check | upload_pair
    human: str
    gpt: str
    inputs: tuple[Spec, ...] = ()    # items the user uploads (their tokens are in `human`)
    outputs: tuple[Spec, ...] = ()   # items the model produces (their tokens are in `gpt`)


class _Dialogues:
    """Draws MosIT turns under one split's rules; each method makes one turn kind from the latest item."""

    def __init__(self, rng: np.random.Generator, rules: SplitRules, n_frames: int):
        self.rng, self.rules, self.n_frames, self.book = rng, rules, n_frames, rules.book

    def _new(self, modality: str) -> Spec:
        draw = lambda: sample_spec(modality, self.rng, self.n_frames)  # noqa: E731
        return self.rules.item(draw(), self.rng, draw)

    def _edit(self, last: Spec, attribute: str | None = None) -> tuple[str, str, Spec]:
        """random_edit of `last` under the rules: off a held-out pair by the next word of the edited attribute."""
        while True:
            if attribute is None:
                edited, value, spec = random_edit(last, self.rng)
            else:
                choices = [w for w in ATTRIBUTES[last.modality][attribute] if w != getattr(last, attribute)]
                edited, value = attribute, _pick(self.rng, choices)
                spec = last.edited(edited, value)
            if self.rules.hold_out:
                words = [w for w in ATTRIBUTES[last.modality][edited] if w != getattr(last, edited)]
                k = words.index(value)
                while held_out_pairs(spec.modality, spec.attributes):
                    k = (k + 1) % len(words)
                    value, spec = words[k], last.edited(edited, words[k])
            if not (self.rules.avoid and media_key(spec) in self.rules.avoid):
                return edited, value, spec

    def upload(self, last: Spec | None) -> Turn:
        spec = self._new(_pick(self.rng, MODALITIES))
        return Turn("upload", *_describe(spec, self.rng, self.book), inputs=(spec,))

    def upload_edit(self, last: Spec | None) -> Turn:
        """An upload and a colour edit of it in one turn: "<image>\nMake it purple."."""
        spec = self._new(_pick(self.rng, ("image", "video")))
        _, value, new = self._edit(spec, "colour")
        human = f"{MEDIA_TOKENS[spec.modality]}\n{_pick(self.rng, self.book.upload_edits).format(value=value)}"
        return Turn("upload_edit", human, _answer(new, self.rng, P.EDIT_ANSWERS), inputs=(spec,), outputs=(new,))

    def request(self, last: Spec | None) -> Turn:
        spec = self._new(_pick(self.rng, MODALITIES))
        return Turn("request", _request(spec, self.rng, self.book), _answer(spec, self.rng, P.T2M_ANSWERS),
                    outputs=(spec,))

    def edit(self, last: Spec) -> Turn:
        attribute, value, spec = self._edit(last)
        return Turn("edit", _pick(self.rng, self.book.edits[attribute][value]), _answer(spec, self.rng, P.EDIT_ANSWERS),
                    outputs=(spec,))

    def question(self, last: Spec) -> Turn:
        attribute = _pick(self.rng, list(ATTRIBUTES[last.modality]))
        _, answer = P.QUESTIONS[attribute]
        return Turn("question", _pick(self.rng, self.book.questions[attribute]),
                    answer.format(value=getattr(last, attribute)))

    def animate(self, last: Spec) -> Turn:
        """Image -> video of the same coloured shape."""
        direction = _pick(self.rng, DIRECTIONS)

        def draw() -> Spec:
            return dataclasses.replace(sample_video_spec(self.rng, self.n_frames), colour=last.colour,
                                       shape=last.shape, direction=direction)

        spec = draw()
        if self.rules.hold_out:  # off a held-out colour x direction pair by the next direction
            k = DIRECTIONS.index(direction)
            while held_out_pairs("video", spec.attributes):
                k = (k + 1) % len(DIRECTIONS)
                spec = dataclasses.replace(spec, direction=DIRECTIONS[k])
            direction = spec.direction
        while self.rules.avoid and media_key(spec) in self.rules.avoid:
            spec = draw()
        prompt = _pick(self.rng, self.book.animate).format(value=direction)
        return Turn("animate", prompt, _answer(spec, self.rng, P.T2M_ANSWERS), outputs=(spec,))

    def still(self, last: Spec) -> Turn:
        """Video -> still image of the same coloured shape."""
        def draw() -> Spec:
            return dataclasses.replace(sample_image_spec(self.rng), colour=last.colour, shape=last.shape)

        spec = self.rules.item(draw(), self.rng, draw)
        return Turn("still", _pick(self.rng, self.book.still), _answer(spec, self.rng, P.T2M_ANSWERS), outputs=(spec,))

    def chat(self, last: Spec | None) -> Turn:
        return Turn("chat", *_pick(self.rng, self.book.chat))

    def dialogue(self) -> list[Turn]:
        """A 2-5 turn dialogue; edits/questions/switches always refer to the most recent item."""
        return self._turns(int(self.rng.integers(2, 6)))[0]

    def _turns(self, n: int) -> tuple[list[Turn], Spec | None]:
        """`n` turns of a random dialogue -> (turns, the most recent item or None)."""
        extra = ("upload_edit",) if self.book.upload_edits else ()
        turns: list[Turn] = []
        last: Spec | None = None
        for _ in range(n):
            kind = _pick(self.rng, _OPENERS + extra if last is None else _FOLLOW_UPS[last.modality] + extra)
            turn = getattr(self, kind)(last)
            turns.append(turn)
            last = (turn.inputs + turn.outputs or (last,))[-1]
        return turns, last

    # ---- task records: 0-2 turns of a random dialogue, then one request about uploaded media (or a new request)
    def task(self, task: "Task") -> list[Turn]:
        """A task record's turns: context from a random dialogue (at least one turn when the task needs an
        earlier item), then the task's turn, whose items differ from the latest earlier item in every word they
        could share (so that a model carrying an earlier word over is judged wrong)."""
        turns, last = self._turns(int(self.rng.integers(1 if task.kind == "request" else 0, 3)))
        if task.kind == "request":  # a new item of a modality that shares words with the earlier one
            modality = _pick(self.rng, [m for m in MODALITIES if set(ATTRIBUTES[m]) & set(ATTRIBUTES[last.modality])])
        else:
            modality = task.modality or _pick(self.rng, MODALITIES)
        return turns + [_TASK_TURNS[task.kind](self, modality, last)]

    def _like(self, modality: str, words: dict[str, str] | None = None, unlike: Spec | None = None) -> Spec:
        """A new item of `modality` with `words` fixed and every other word it shares with `unlike` changed,
        under the rules (a held-out combination or an avoided medium is drawn again)."""
        words = words or {}
        for _ in range(1000):
            spec = sample_spec(modality, self.rng, self.n_frames)
            for attribute, choices in ATTRIBUTES[modality].items():
                if attribute in words:
                    spec = spec.edited(attribute, words[attribute])
                elif unlike is not None and getattr(unlike, attribute, None) == getattr(spec, attribute):
                    spec = spec.edited(attribute, _pick(self.rng, [w for w in choices if w != getattr(spec, attribute)]))
            if self._allowed(spec):
                return spec
        raise ValueError(f"no {modality} item with {words} under these rules")

    def _allowed(self, spec: Spec) -> bool:
        """Whether the rules let `spec` into the split (no held-out combination where held out, no avoided medium)."""
        return not (self.rules.hold_out and held_out_pairs(spec.modality, spec.attributes)) and not (
            self.rules.avoid and media_key(spec) in self.rules.avoid)

    def _upload_turn(self, kind: str, inputs: tuple[Spec, ...], prompt: str, gpt: str,
                     outputs: tuple[Spec, ...] = ()) -> Turn:
        tokens = "\n".join(MEDIA_TOKENS[s.modality] for s in inputs)
        return Turn(kind, f"{tokens}\n{prompt}", gpt, inputs=inputs, outputs=outputs)

    def upload_change(self, modality: str, last: Spec | None) -> Turn:
        """An upload and an edit of any of its words in the same turn: "<audio>\nSame but higher." (kind
        upload_edit, as `upload_edit`, which the random dialogues of a split with `book.upload_edits` draw)."""
        uploads = self.book.uploads
        while True:
            spec = self._like(modality, unlike=last)
            attribute = _pick(self.rng, list(ATTRIBUTES[modality]))
            choices = [(w, spec.edited(attribute, w)) for w in ATTRIBUTES[modality][attribute]
                       if w != getattr(spec, attribute)]
            choices = [(w, new) for w, new in choices if self._allowed(new)]
            if choices:
                break
        value, new = _pick(self.rng, choices)
        prompts = uploads.edits[attribute][value]
        if attribute == "direction" and value == P.OPPOSITE_DIRECTIONS[spec.direction]:
            prompts = prompts + uploads.reverse
        return self._upload_turn("upload_edit", (spec,), _pick(self.rng, prompts),
                                 _answer(new, self.rng, P.EDIT_ANSWERS), (new,))

    def upload_animate(self, modality: str, last: Spec | None) -> Turn:
        """An uploaded image -> a video of the same coloured shape moving the asked way."""
        image = self._like("image", unlike=last)
        shape = {"colour": image.colour, "shape": image.shape}
        directions = [d for d in DIRECTIONS
                      if not (self.rules.hold_out and held_out_pairs("video", {**shape, "direction": d}))]
        direction = _pick(self.rng, directions)
        video = self._like("video", {**shape, "direction": direction})
        prompt = _pick(self.rng, self.book.uploads.animate).format(value=direction)
        return self._upload_turn("upload_animate", (image,), prompt, _answer(video, self.rng, P.T2M_ANSWERS), (video,))

    def upload_still(self, modality: str, last: Spec | None) -> Turn:
        """An uploaded video -> a still image of its coloured shape."""
        video = self._like("video", unlike=last)
        image = self._like("image", {"colour": video.colour, "shape": video.shape})
        return self._upload_turn("upload_still", (video,), _pick(self.rng, self.book.uploads.still),
                                 _answer(image, self.rng, P.T2M_ANSWERS), (image,))

    def upload_check(self, modality: str, last: Spec | None) -> Turn:
        """A yes/no question about one word of an upload: "<audio>\nIs this higher than a middle tone?"."""
        spec = self._like(modality, unlike=last)
        attribute = _pick(self.rng, list(ATTRIBUTES[modality]))
        truth = getattr(spec, attribute)
        asked = truth if self.rng.random() < 0.5 else _pick(self.rng, [w for w in ATTRIBUTES[modality][attribute]
                                                                        if w != truth])
        verdict = "yes" if asked == truth else "no"
        prompt = _pick(self.rng, self.book.uploads.checks[attribute][asked])
        gpt = _pick(self.rng, P.CHECK_ANSWERS[verdict]).format(caption=spec.caption)
        return self._upload_turn("upload_check", (spec,), prompt, gpt)

    def upload_pair(self, modality: str, last: Spec | None) -> Turn:
        """Two uploads of one modality and a question about both: "<image>\n<image>\nWhich one is red?"."""
        first = self._like(modality, unlike=last)
        attribute = _pick(self.rng, list(ATTRIBUTES[modality]))
        word = getattr(first, attribute)
        others = [w for w in ATTRIBUTES[modality][attribute] if w != word]
        one, many = P.MEDIA_NOUNS[modality]
        if self.rng.random() < 0.5:  # which of the two has the word (they differ in it)
            second = self._like(modality, {attribute: _pick(self.rng, others)})
            asked = _pick(self.rng, (word, getattr(second, attribute)))
            verdict = "first" if asked == word else "second"
            prompt = _pick(self.rng, self.book.uploads.which[attribute][asked])
        else:  # do the two share the word
            second = self._like(modality, {attribute: word if self.rng.random() < 0.5 else _pick(self.rng, others)})
            verdict = "yes" if getattr(second, attribute) == word else "no"
            prompt = _pick(self.rng, self.book.uploads.same[attribute])
        gpt = P.PAIR_ANSWER.format(verdict=P.PAIR_VERDICTS[verdict], first=first.caption, second=second.caption)
        return self._upload_turn("upload_pair", (first, second), prompt.format(one=one, noun=many), gpt)

    def fresh_request(self, modality: str, last: Spec | None) -> Turn:
        """A request for a new item that differs from the latest earlier one in every word they share."""
        spec = self._like(modality, unlike=last)
        return Turn("request", _request(spec, self.rng, self.book), _answer(spec, self.rng, P.T2M_ANSWERS),
                    outputs=(spec,))


# what may follow an item of each modality (repeats weight the draw); a dialogue opens with upload/request
# (and, in a split whose phrasebook has upload edits, upload_edit at either place)
_OPENERS = ("upload", "request")
_FOLLOW_UPS: dict[str, tuple[str, ...]] = {
    "image": ("upload", "request", "edit", "edit", "edit", "question", "animate", "chat"),
    "audio": ("upload", "request", "edit", "edit", "edit", "question", "chat"),
    "video": ("upload", "request", "edit", "edit", "edit", "question", "still", "chat"),
}


@dataclass(frozen=True)
class Task:
    """A row of task records: what the last turn of each record of the row is."""
    name: str              # the row's name: the record's "task" key and the eval's row
    kind: str              # the last turn's kind (`Turn.kind`)
    modality: str | None   # the modality of the upload(s); None: drawn per record


# The task rows, in the order records cycle through them (record i is of row i % len(TASKS)), so the first k records
# of each row are among the first k * len(TASKS) task records.
TASKS: tuple[Task, ...] = (
    Task("edit image", "upload_edit", "image"),
    Task("edit audio", "upload_edit", "audio"),
    Task("edit video", "upload_edit", "video"),
    Task("image -> video", "upload_animate", "image"),
    Task("video -> image", "upload_still", "video"),
    Task("ask about an upload", "upload_check", None),
    Task("two uploads", "upload_pair", None),
    Task("request after another item", "request", None),
)
TASK_SIZES = {"train": 500, "val": 50, "test": 100}  # records per task row of the standard world
_TASK_TURNS: dict[str, Callable[..., Turn]] = {
    "upload_edit": _Dialogues.upload_change, "upload_animate": _Dialogues.upload_animate,
    "upload_still": _Dialogues.upload_still, "upload_check": _Dialogues.upload_check,
    "upload_pair": _Dialogues.upload_pair, "request": _Dialogues.fresh_request,
}


def sample_task(rng: np.random.Generator, task: Task, n_frames: int = 8, rules: SplitRules = TRAIN_RULES) -> list[Turn]:
    """The turns of one record of task row `task` under `rules` (the task's turn last)."""
    return _Dialogues(rng, rules, n_frames).task(task)


def sample_dialogue(rng: np.random.Generator, n_frames: int = 8, rules: SplitRules = TRAIN_RULES) -> list[Turn]:
    """A 2-5 turn dialogue under `rules`; edits/questions/switches always refer to the most recent item."""
    return _Dialogues(rng, rules, n_frames).dialogue()


def mosit_record(turns: Sequence[Turn], save: Callable[[Spec], str], task: str | None = None) -> dict:
    """Official MosIT layout; `save(spec)` writes an item and returns its path. A task record also names its
    row (`"task": "edit image"`), a key the official format does not have and readers of it ignore."""
    lists: dict[str, list[dict[str, str]]] = {m: [] for m in ("image", "video", "audio")}  # official key order
    conversation: list[dict[str, str]] = []
    for turn in turns:
        for spec in turn.inputs + turn.outputs:  # token order: human turn first, then gpt
            lists[spec.modality].append({f"{spec.modality}_name": save(spec), "caption": spec.caption})
        conversation += _turns(turn.human, turn.gpt)
    record = {**{f"{m}_list": items for m, items in lists.items()}, "conversation": conversation}
    return record if task is None else {**record, "task": task}


# ---------------------------------------------------------------- splits

def split_seed(seed: int, split: str) -> int:
    return seed * 1000 + SPLITS.index(split)


class _Numberer:
    """Stands in for MediaWriter when only the records and specs are wanted (nothing written)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(MODALITIES, 0)
        self.specs: list[Spec] = []

    def save(self, spec: Spec) -> str:
        m = spec.modality
        self.specs.append(spec)
        self.counts[m] += 1
        return f"{MEDIA_DIRS[m]}/{self.counts[m] - 1:06d}{MEDIA_EXTS[m]}"


def _sample(split: str, n: int, seed: int, n_dialogues: int, n_frames: int, rules: SplitRules,
            save: Callable[[Spec], str], n_tasks: int = 0) -> dict[str, list[dict]]:
    """The records of one split; `save(spec)` numbers (and maybe writes) each item and returns its path.
    mosit holds the `n_dialogues` random dialogues, then `n_tasks` records per task row (`TASKS`, cycled)."""
    base = split_seed(seed, split)
    rngs = {stream: np.random.default_rng([base, k]) for k, stream in enumerate((*MODALITIES, "mosit", "tasks"))}
    records: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for m in MODALITIES:
        rng = rngs[m]
        draw = lambda: sample_spec(m, rng, n_frames)  # noqa: E731
        for _ in range(n):
            spec = rules.item(draw(), rng, draw)
            path = save(spec)
            records["comprehension"].append(comprehension_record(spec, path, rng, rules.book))
            records["generation"].append(generation_record(spec, path, rng, book=rules.book))
            records["t2m"].append(t2m_record(spec, path, rng, rules.book))
    dialogues = _Dialogues(rngs["mosit"], rules, n_frames)
    for _ in range(n_dialogues):
        records["mosit"].append(mosit_record(dialogues.dialogue(), save))
    tasks = _Dialogues(rngs["tasks"], rules, n_frames)
    for i in range(n_tasks * len(TASKS)):
        task = TASKS[i % len(TASKS)]
        records["mosit"].append(mosit_record(tasks.task(task), save, task.name))
    return records


def split_rules(split: str, seed: int, n_train: int | None = None, n_frames: int = 8,
                train_dialogues: int | None = None, train_tasks: int | None = None) -> SplitRules:
    """The rules of `split`; test's avoid every medium of the train split of the same seed (`n_train` items per
    modality, default the standard size, `train_dialogues` dialogues, default as many, and `train_tasks` task
    records per row, default the standard number)."""
    if split != "test":
        return TRAIN_RULES
    n_train = SPLIT_SIZES["train"] if n_train is None else n_train
    train_tasks = TASK_SIZES["train"] if train_tasks is None else train_tasks
    train = _Numberer()
    # this world's train split, and version 1's (its items and random dialogues, drawn as now without holding
    # combinations out)
    for rules in (TRAIN_RULES, SplitRules(hold_out=False)):
        _sample("train", n_train, seed, n_train if train_dialogues is None else train_dialogues, n_frames, rules,
                train.save, train_tasks)
    return SplitRules(book=P.TEST_BOOK, hold_out=False, avoid=frozenset(map(media_key, train.specs)))


def make_split(out_dir: str | Path, split: str, n: int, seed: int, n_dialogues: int | None = None,
               n_frames: int = 8, workers: int = 4, n_train: int | None = None,
               train_dialogues: int | None = None, n_tasks: int = 0, train_tasks: int | None = None) -> dict[str, int]:
    """Write `n` items per modality (+ `n_dialogues`, default n, MosIT dialogues, + `n_tasks` MosIT task records
    per row of `TASKS`) to out_dir/split.

    Each item yields one comprehension, one generation and one T2M record sharing its media file. The split's
    `split_rules` decide its phrasings and held-out combinations; the test split avoids the media of a train
    split of `n_train` items, `train_dialogues` dialogues and `train_tasks` task records per row (default the
    standard size). Returns the number of records per kind.
    """
    root = Path(out_dir) / split
    n_train = SPLIT_SIZES["train"] if n_train is None else n_train
    rules = split_rules(split, seed, n_train, n_frames, train_dialogues, train_tasks)
    with ThreadPoolExecutor(workers) as pool:
        writer = MediaWriter(root, pool)
        records = _sample(split, n, seed, n if n_dialogues is None else n_dialogues, n_frames, rules, writer.save,
                          n_tasks)
        writer.finish(desc=f"{split} media")
    for kind, recs in records.items():
        (root / f"{kind}.json").write_text(json.dumps(recs, indent=1))
    meta = {"split": split, "seed": seed, "split_seed": split_seed(seed, split), "n": n, "n_frames": n_frames,
            "version": WORLD_VERSION, "phrasings": "test-only" if rules.book is P.TEST_BOOK else "train",
            "held_out_pairs": {"x".join(k): [" ".join(p) for p in v] for k, v in HELD_OUT_PAIRS.items()},
            "held_out_in_split": not rules.hold_out, "avoids_train_media": n_train if split == "test" else None,
            "tasks": {task.name: n_tasks for task in TASKS},
            "attributes": ATTRIBUTES, "captions": CAPTION_TEMPLATES, "media_files": writer.counts}
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    counts = {kind: len(recs) for kind, recs in records.items()}
    logger.info("%s: %s records, %s media files in %s", split, counts, writer.counts, root)
    return counts


def split_ready(out_dir: str | Path, split: str) -> bool:
    """Whether out_dir/split holds every record file (and so was written to the end) of this world version."""
    root = Path(out_dir) / split
    if not (root / "meta.json").is_file() or not all((root / f"{kind}.json").is_file() for kind in KINDS):
        return False
    return json.loads((root / "meta.json").read_text()).get("version") == WORLD_VERSION


def ensure_split(out_dir: str | Path, split: str, seed: int = 0, n: int | None = None,
                 workers: int = 2) -> Path:
    """out_dir/split, written first if missing or of another world version: the standard world (`SPLIT_SIZES`,
    one dialogue per item, `TASK_SIZES` task records per row), or with `n`: n items, n dialogues and n task records
    per row.

    Deterministic from `seed`, so a split made here is byte for byte the one `main` writes; the val or
    test split takes seconds. Returns the split's folder.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not split_ready(out_dir, split):
        size = SPLIT_SIZES[split] if n is None else n
        logger.info("no %s split of world version %d in %s: writing it (%d items per modality)", split, WORLD_VERSION,
                    out_dir, size)
        tasks = TASK_SIZES[split] if n is None else n
        make_split(out_dir, split, size, seed, n_dialogues=size, workers=workers, n_tasks=tasks)
    return Path(out_dir) / split


def load_records(out_dir: str | Path, split: str, kind: str) -> list[dict]:
    """The records of one kind ('comprehension' | 'generation' | 't2m' | 'mosit') of one split."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return json.loads((Path(out_dir) / split / f"{kind}.json").read_text())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per split)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; splits use seed*1000 + split index")
    for split, default in SPLIT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=default, help=f"{split} items per modality")
    parser.add_argument("--dialogues", type=float, default=1.0, help="MosIT dialogues per item (ratio)")
    for split, default in TASK_SIZES.items():
        parser.add_argument(f"--{split}-tasks", type=int, default=default,
                            help=f"{split} MosIT task records per task row ({len(TASKS)} rows)")
    parser.add_argument("--frames", type=int, default=8, help="video frames per clip (8-16)")
    parser.add_argument("--workers", type=int, default=4, help="threads writing media files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for split in SPLITS:
        n = getattr(args, split)
        make_split(args.out, split, n, args.seed, n_dialogues=round(n * args.dialogues), n_train=args.train,
                   train_dialogues=round(args.train * args.dialogues), n_tasks=getattr(args, f"{split}_tasks"),
                   train_tasks=args.train_tasks, n_frames=args.frames, workers=args.workers)


if __name__ == "__main__":
    main()
