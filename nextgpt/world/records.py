"""Write the world as train/val/test splits of official NExT-GPT records plus media files.

    python -m nextgpt.world.records --out data/world --seed 0 --train 2000 --val 200 --test 200

Layout of DIR/<split>/ (media paths inside records are relative to this folder):
    images/000000.png  audio/000000.wav (16 kHz)  videos/000000.mp4 (8 fps, h264)
    comprehension.json  X -> caption pairs (stage 1): {input_image, conversations}
    generation.json     caption-only generation (stage 2): {output_image, image_captions, conversations}
    t2m.json            text -> text + X instructions: same keys, answer "Here is <caption>. <image>"
    mosit.json          2-5 turn dialogues: {image_list, video_list, audio_list, conversation}
    meta.json           seed and vocabulary
In MosIT dialogues the k-th "<image>" of the conversation (human turn = upload, gpt turn = generated)
is the k-th entry of image_list; likewise for <audio> and <video>. Splits use disjoint seeds
(seed * 1000 + split index), so the test split is held out.
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

from nextgpt.world import prompts as P
from nextgpt.world.vocab import (ATTRIBUTES, CAPTION_TEMPLATES, DIRECTIONS, MEDIA_TOKENS, MODALITIES, SAMPLE_RATE,
                                 VIDEO_FPS, Spec, random_edit, sample_image_spec, sample_spec, sample_video_spec)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 2000, "val": 200, "test": 200}  # items per modality (and dialogues) of the standard world
KINDS = ("comprehension", "generation", "t2m", "mosit")
MEDIA_DIRS = {"image": "images", "audio": "audio", "video": "videos"}
MEDIA_EXTS = {"image": ".png", "audio": ".wav", "video": ".mp4"}

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


# ---------------------------------------------------------------- single-item records

def _turns(human: str, gpt: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def _describe(spec: Spec, rng: np.random.Generator) -> tuple[str, str]:
    """(human: "<image>\nDescribe this image.", gpt: "It is a red circle.")"""
    m = spec.modality
    human = f"{MEDIA_TOKENS[m]}\n{_pick(rng, P.COMPREHENSION_PROMPTS[m])}"
    return human, _pick(rng, P.CAPTION_ANSWERS[m]).format(caption=spec.caption)


def _answer(spec: Spec, rng: np.random.Generator, answers: Sequence[str]) -> str:
    """A gpt reply that produces `spec`: "Here is a red circle. <image>"."""
    return _pick(rng, answers).format(caption=spec.caption, token=MEDIA_TOKENS[spec.modality])


def _request(spec: Spec, rng: np.random.Generator) -> str:
    """A human request for `spec`: "show me a red circle"."""
    return _pick(rng, P.T2M_REQUESTS[spec.modality]).format(caption=spec.caption)


def comprehension_record(spec: Spec, path: str, rng: np.random.Generator) -> dict:
    """Stage 1: uploaded item -> its caption."""
    return {f"input_{spec.modality}": path, "conversations": _turns(*_describe(spec, rng))}


def generation_record(spec: Spec, path: str, rng: np.random.Generator,
                      answers: Sequence[str] = (P.GENERATION_ANSWER,)) -> dict:
    """Stage 2 (caption-only): request -> "Sure thing! <image>"; with T2M answers it is a T2M record."""
    m = spec.modality
    conversation = _turns(_request(spec, rng), _answer(spec, rng, answers))
    return {f"output_{m}": path, f"{m}_captions": spec.caption, "conversations": conversation}


def t2m_record(spec: Spec, path: str, rng: np.random.Generator) -> dict:
    """Text -> text + X: request -> "Here is <caption>. <image>"."""
    return generation_record(spec, path, rng, P.T2M_ANSWERS)


# ---------------------------------------------------------------- MosIT dialogues

@dataclass(frozen=True)
class Turn:
    """One human -> gpt exchange of a MosIT dialogue."""
    kind: str                        # upload | request | edit | question | animate | still | chat
    human: str
    gpt: str
    inputs: tuple[Spec, ...] = ()    # items the user uploads (their tokens are in `human`)
    outputs: tuple[Spec, ...] = ()   # items the model produces (their tokens are in `gpt`)


def _produce(kind: str, human: str, spec: Spec, answers: Sequence[str], rng: np.random.Generator) -> Turn:
    return Turn(kind, human, _answer(spec, rng, answers), outputs=(spec,))


def _upload_turn(last: Spec | None, rng: np.random.Generator, n_frames: int) -> Turn:
    spec = sample_spec(_pick(rng, MODALITIES), rng, n_frames)
    return Turn("upload", *_describe(spec, rng), inputs=(spec,))


def _request_turn(last: Spec | None, rng: np.random.Generator, n_frames: int) -> Turn:
    spec = sample_spec(_pick(rng, MODALITIES), rng, n_frames)
    return _produce("request", _request(spec, rng), spec, P.T2M_ANSWERS, rng)


def _edit_turn(last: Spec, rng: np.random.Generator, n_frames: int) -> Turn:
    attribute, value, spec = random_edit(last, rng)
    return _produce("edit", _pick(rng, P.EDIT_PROMPTS[attribute][value]), spec, P.EDIT_ANSWERS, rng)


def _question_turn(last: Spec, rng: np.random.Generator, n_frames: int) -> Turn:
    attribute = _pick(rng, list(ATTRIBUTES[last.modality]))
    questions, answer = P.QUESTIONS[attribute]
    return Turn("question", _pick(rng, questions), answer.format(value=getattr(last, attribute)))


def _animate_turn(last: Spec, rng: np.random.Generator, n_frames: int) -> Turn:
    """Image -> video of the same coloured shape."""
    direction = _pick(rng, DIRECTIONS)
    spec = dataclasses.replace(sample_video_spec(rng, n_frames), colour=last.colour, shape=last.shape,
                               direction=direction)
    return _produce("animate", _pick(rng, P.ANIMATE_PROMPTS).format(value=direction), spec, P.T2M_ANSWERS, rng)


def _still_turn(last: Spec, rng: np.random.Generator, n_frames: int) -> Turn:
    """Video -> still image of the same coloured shape."""
    spec = dataclasses.replace(sample_image_spec(rng), colour=last.colour, shape=last.shape)
    return _produce("still", _pick(rng, P.STILL_PROMPTS), spec, P.T2M_ANSWERS, rng)


def _chat_turn(last: Spec | None, rng: np.random.Generator, n_frames: int) -> Turn:
    return Turn("chat", *_pick(rng, P.CHAT))


_TURN_MAKERS: dict[str, Callable[[Spec | None, np.random.Generator, int], Turn]] = {
    "upload": _upload_turn, "request": _request_turn, "edit": _edit_turn, "question": _question_turn,
    "animate": _animate_turn, "still": _still_turn, "chat": _chat_turn,
}
# what may follow an item of each modality (repeats weight the draw); a dialogue opens with upload/request
_OPENERS = ("upload", "request")
_FOLLOW_UPS: dict[str, tuple[str, ...]] = {
    "image": ("upload", "request", "edit", "edit", "edit", "question", "animate", "chat"),
    "audio": ("upload", "request", "edit", "edit", "edit", "question", "chat"),
    "video": ("upload", "request", "edit", "edit", "edit", "question", "still", "chat"),
}


def sample_dialogue(rng: np.random.Generator, n_frames: int = 8) -> list[Turn]:
    """A 2-5 turn dialogue; edits/questions/switches always refer to the most recent item."""
    turns: list[Turn] = []
    last: Spec | None = None
    for _ in range(int(rng.integers(2, 6))):
        kind = _pick(rng, _OPENERS if last is None else _FOLLOW_UPS[last.modality])
        turn = _TURN_MAKERS[kind](last, rng, n_frames)
        turns.append(turn)
        last = (turn.inputs + turn.outputs or (last,))[-1]
    return turns


def mosit_record(turns: Sequence[Turn], save: Callable[[Spec], str]) -> dict:
    """Official MosIT layout; `save(spec)` writes an item and returns its path."""
    lists: dict[str, list[dict[str, str]]] = {m: [] for m in ("image", "video", "audio")}  # official key order
    conversation: list[dict[str, str]] = []
    for turn in turns:
        for spec in turn.inputs + turn.outputs:  # token order: human turn first, then gpt
            lists[spec.modality].append({f"{spec.modality}_name": save(spec), "caption": spec.caption})
        conversation += _turns(turn.human, turn.gpt)
    return {**{f"{m}_list": items for m, items in lists.items()}, "conversation": conversation}


# ---------------------------------------------------------------- splits

def split_seed(seed: int, split: str) -> int:
    return seed * 1000 + SPLITS.index(split)


def make_split(out_dir: str | Path, split: str, n: int, seed: int, n_dialogues: int | None = None,
               n_frames: int = 8, workers: int = 4) -> dict[str, int]:
    """Write `n` items per modality (+ `n_dialogues`, default n, MosIT dialogues) to out_dir/split.

    Each item yields one comprehension, one generation and one T2M record sharing its media file.
    Returns the number of records per kind.
    """
    root = Path(out_dir) / split
    base = split_seed(seed, split)
    rngs = {stream: np.random.default_rng([base, k]) for k, stream in enumerate((*MODALITIES, "mosit"))}
    records: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with ThreadPoolExecutor(workers) as pool:
        writer = MediaWriter(root, pool)
        for m in MODALITIES:
            rng = rngs[m]
            for _ in range(n):
                spec = sample_spec(m, rng, n_frames)
                path = writer.save(spec)
                records["comprehension"].append(comprehension_record(spec, path, rng))
                records["generation"].append(generation_record(spec, path, rng))
                records["t2m"].append(t2m_record(spec, path, rng))
        for _ in range(n if n_dialogues is None else n_dialogues):
            records["mosit"].append(mosit_record(sample_dialogue(rngs["mosit"], n_frames), writer.save))
        writer.finish(desc=f"{split} media")
    for kind, recs in records.items():
        (root / f"{kind}.json").write_text(json.dumps(recs, indent=1))
    meta = {"split": split, "seed": seed, "split_seed": base, "n": n, "n_frames": n_frames,
            "attributes": ATTRIBUTES, "captions": CAPTION_TEMPLATES, "media_files": writer.counts}
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    counts = {kind: len(recs) for kind, recs in records.items()}
    logger.info("%s: %s records, %s media files in %s", split, counts, writer.counts, root)
    return counts


def split_ready(out_dir: str | Path, split: str) -> bool:
    """Whether out_dir/split holds every record file (and so was written to the end)."""
    root = Path(out_dir) / split
    return (root / "meta.json").is_file() and all((root / f"{kind}.json").is_file() for kind in KINDS)


def ensure_split(out_dir: str | Path, split: str, seed: int = 0, n: int | None = None,
                 workers: int = 2) -> Path:
    """out_dir/split, written first if missing: the standard world (`SPLIT_SIZES`, one dialogue per item).

    Deterministic from `seed`, so a split made here is byte for byte the one `main` writes; the val or
    test split takes seconds. Returns the split's folder.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not split_ready(out_dir, split):
        size = SPLIT_SIZES[split] if n is None else n
        logger.info("no %s split in %s: writing it (%d items per modality)", split, out_dir, size)
        make_split(out_dir, split, size, seed, n_dialogues=size, workers=workers)
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
    parser.add_argument("--frames", type=int, default=8, help="video frames per clip (8-16)")
    parser.add_argument("--workers", type=int, default=4, help="threads writing media files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for split in SPLITS:
        n = getattr(args, split)
        make_split(args.out, split, n, args.seed, n_dialogues=round(n * args.dialogues),
                   n_frames=args.frames, workers=args.workers)


if __name__ == "__main__":
    main()
