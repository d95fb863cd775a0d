"""Step 0: train the nano ImageBind from random weights, the way ImageBind is trained, on the world's captions.

    python scripts/train_encoder.py --data data/world --out checkpoints/nano   # -> checkpoints/nano/encoder/

Image, audio and video embeddings are bound to the text embedding of their captions with a symmetric InfoNCE
loss; every tower trains, the text tower included. The temperatures are ImageBind's own postprocessor logit
scales: vision pairs use the text tower's learnable scale (ImageBind's vision output is a unit vector, its text
output is ``scale * unit``, so ``vision @ text.T = scale * cos``), audio pairs use the audio tower's fixed 20.
The world has few distinct captions (18 image, 8 audio, 72 video), so a batch holds many items per caption:
targets are caption-level. The text side of each modality's loss is ALL its captions: an item's one positive
is its caption and every other caption is a negative (item -> text); a caption's positives are all the batch
items that show it (text -> item, a uniform multi-positive soft target). Each step sums the three modalities'
losses over `batch_size` images and videos and `audio_batch_size` sounds; videos are trained on one random
2-frame clip each, as ImageBind does.

Media are decoded and preprocessed ONCE with ``MediaEncoder.preprocess`` (exactly ImageBind's pipeline) into a
cache under the run folder: vision inputs are stored as the uint8 pixels they were normalised from (lossless,
checked), audio as float32 filterbanks; training batches are sliced from memory-mapped arrays.

Evaluation on a split (val during training, test at the end), per attribute of each modality:
    zero-shot  the nearest caption, by text embedding, among ALL possible captions of the modality
    probe      a logistic regression per attribute on the pooled embedding (the vector the LLM's input
               projection reads), fitted on train-split embeddings
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nextgpt.config import EncoderConfig, Modality
from nextgpt.encode import CLIP_MEAN, CLIP_STD, ENCODER_FILE, TOWER, MediaEncoder
from nextgpt.files import atomic_path, write_json
from nextgpt.training.foundation import caption_text, caption_vocabulary, captioned_items, read_one
from nextgpt.training.loop import Batch, LoopSettings, Stream, fit, main_first, on_main
from nextgpt.world import ATTRIBUTES

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class EncoderTraining:
    """How the encoder is trained (the nano defaults: at most 14 minutes of training on 2 CPU threads)."""

    steps: int = 1000  # at most; on a busy machine the time budget ends the run first
    batch_size: int = 32  # images and videos per step (the modalities' losses are summed)
    audio_batch_size: int = 8  # sounds per step: audio is learnt in <100 steps, and its tower costs ~3x vision's
    single_clip: bool = True  # train on one random clip per video / sound (evaluation averages all, as encode)
    lr: float = 1e-3  # AdamW peak, after `warmup` steps of linear warm-up, then cosine decay to 0
    weight_decay: float = 0.05
    warmup: int = 40
    max_minutes: float | None = 14.0  # training time budget: the cosine ends at `steps` or here (None = off)
    seed: int = 0  # initial weights and data order
    limit: int | None = None  # use at most this many items per modality and split (smoke runs)
    save_every: int = 50  # resumable state every N steps
    log_every: int = 10  # JSON-lines log row every N steps
    eval_every: int = 150  # zero-shot on the val split every N steps (0 = never)

    @classmethod
    def smoke(cls, **changes: Any) -> "EncoderTraining":
        """A few steps on a few items: what the tests run."""
        base = cls(steps=3, batch_size=4, audio_batch_size=4, warmup=1, limit=8, save_every=1, log_every=1,
                   eval_every=0, max_minutes=None)
        return dataclasses.replace(base, **changes)


# ---- the preprocessed media, once -------------------------------------------------------------------------
_CHANNEL_AXIS = {Modality.IMAGE: -3, Modality.VIDEO: -4}  # (3, S, S) and (clips, 3, 2, S, S)


def _clip_stats(modality: Modality) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (3,) + (1,) * (-_CHANNEL_AXIS[modality] - 1)
    return torch.tensor(CLIP_MEAN).view(shape), torch.tensor(CLIP_STD).view(shape)


def to_pixels(modality: Modality, x: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised vision input -> the uint8 pixels it was made from (exact: see `from_pixels`)."""
    mean, std = _clip_stats(modality)
    return ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def from_pixels(modality: Modality, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> CLIP-normalised float32, as ``nextgpt.encode.image_to_tensor`` computes it."""
    mean, std = _clip_stats(modality)
    return (pixels.float() / 255.0 - mean) / std


@dataclass
class MediaBank:
    """One modality of one split, preprocessed: model inputs by index, plus each item's caption."""

    modality: Modality
    inputs: np.ndarray  # (N, *preprocess shape): uint8 pixels (image, video) | float32 fbank (audio); memmap
    caption_ids: torch.Tensor  # (N,) index into caption_vocabulary(modality)

    def __len__(self) -> int:
        return len(self.caption_ids)

    def batch(self, idx: Sequence[int] | np.ndarray, clips: np.ndarray | None = None) -> torch.Tensor:
        """(B, *preprocess shape) float32 inputs of items `idx`; with `clips` (B,), only that clip of each
        video or sound: (B, 1, *clip shape)."""
        rows = self.inputs[np.asarray(idx)] if clips is None else self.inputs[np.asarray(idx), clips][:, None]
        x = torch.from_numpy(np.ascontiguousarray(rows))
        return x if self.modality == Modality.AUDIO else from_pixels(self.modality, x)

    def labels(self, attribute: str) -> torch.Tensor:
        """(N,) index of each item's `attribute` word in ATTRIBUTES."""
        words = ATTRIBUTES[self.modality.value][attribute]
        vocab = [words.index(c[attribute]) for c in caption_vocabulary(self.modality)]
        return torch.tensor(vocab)[self.caption_ids]


def _cache_key(cfg: EncoderConfig, paths: Sequence[Path]) -> str:
    """Changes when the preprocessing settings or any file (path, size, mtime) change."""
    h = hashlib.sha1(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def build_bank(
    enc: MediaEncoder, data: Path, split: str, modality: Modality, cache: Path, limit: int | None = None,
    workers: int = 2, chunk: int = 64,
) -> MediaBank:
    """Decode and preprocess `split`'s items of `modality` into cache/<split>-<modality>-<key>.npy (once)."""
    items = captioned_items(data, split, modality, limit)
    if not items:
        raise ValueError(f"{data}/{split}/comprehension.json has no {modality.value} records")
    vocab = [caption_text(modality, a) for a in caption_vocabulary(modality)]
    caption_ids = torch.tensor([vocab.index(it.caption) for it in items])
    path = cache / f"{split}-{modality.value}-{_cache_key(enc.cfg, [it.path for it in items])}.npy"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()

        def prepare(item: Any) -> torch.Tensor:  # decode + ImageBind preprocessing (+ lossless uint8)
            x = enc.preprocess(modality, read_one(modality, item.path))
            if modality == Modality.AUDIO:
                return x
            pixels = to_pixels(modality, x)
            err = float((from_pixels(modality, pixels) - x).abs().max())
            if err > 1e-4:
                raise RuntimeError(f"{item.path}: vision input is not uint8-representable (error {err:.2g})")
            return pixels

        first = prepare(items[0])
        dtype = np.float32 if modality == Modality.AUDIO else np.uint8
        with atomic_path(path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(items), *first.shape))
            with ThreadPoolExecutor(workers) as pool:
                for i in tqdm(range(0, len(items), chunk), desc=f"preprocess {split} {modality.value}", disable=None):
                    for j, x in enumerate(pool.map(prepare, items[i : i + chunk])):
                        arr[i + j] = x.numpy()
            arr.flush()
            del arr
        log.info("cached %d %s %s inputs in %s (%.0f s)", len(items), split, modality.value, path,
                 time.perf_counter() - t0)
    return MediaBank(modality, np.load(path, mmap_mode="r"), caption_ids)


def build_banks(
    enc: MediaEncoder, data: Path, split: str, cache: Path, limit: int | None = None,
) -> dict[Modality, MediaBank]:
    return {m: build_bank(enc, data, split, m, cache, limit) for m in Modality}


# ---- the loss ---------------------------------------------------------------------------------------------
def logit_scale(model: torch.nn.Module, modality: Modality) -> torch.Tensor:
    """ImageBind's temperature for `modality`-text pairs: the text tower's learnable scale (vision), the audio
    tower's fixed scale (audio). Both are ``LearnableLogitScaling``: exp(log scale), clipped at its max."""
    scaling = model.modality_postprocessors["text" if TOWER[modality] == "vision" else TOWER[modality]][1]
    return scaling.log_logit_scale.exp().clamp(max=scaling.max_logit_scale)


def embed_captions(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """ImageBind's text tower on (N, 77) tokens -> (N, out_embed_dim), run on the first L positions only.

    L is the longest caption (through its <end> token). Exact, not an approximation: the text tower is causal
    and pools the <end> position, so the padding after it never reaches the output; it is ~7x cheaper.
    """
    pre = model.modality_preprocessors["text"]
    eos = tokens.argmax(-1)  # (N,) <end> has the highest token id
    n = int(eos.max()) + 1
    x = pre.token_embedding(tokens[:, :n]) + pre.pos_embed[:, :n]  # (N, L, C)
    x = model.modality_trunks["text"](tokens=x, attn_mask=pre.mask[:n, :n])
    return model.modality_postprocessors["text"](model.modality_heads["text"](x, seq_len=eos))


def binding_loss(media: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with caption-level targets.

    media (B, D): item embeddings; text (V, D): embeddings of V DISTINCT captions (here: all captions of the
    modality); targets (B,): each item's caption as a row of `text`. Item -> text has one positive per item
    and every other caption as a negative; text -> item treats all the batch items of a caption as its
    positives (uniform soft target); captions with no item in the batch have no positive and are skipped.
    """
    logits = scale * F.normalize(media, dim=-1) @ F.normalize(text, dim=-1).T  # (B, V)
    item_to_text = F.cross_entropy(logits, targets)
    positives = F.one_hot(targets, text.shape[0]).T.float()  # (U, B)
    count = positives.sum(1)
    keep = count > 0
    soft = positives[keep] / count[keep, None]
    text_to_item = -(soft * logits.T[keep].log_softmax(-1)).sum(-1).mean()
    return (item_to_text + text_to_item) / 2


def train_captions(
    enc: MediaEncoder, train: dict[Modality, MediaBank],
) -> tuple[dict[Modality, torch.Tensor], dict[Modality, torch.Tensor]]:
    """The text side of training: per modality, the tokens of the captions train items show (in vocabulary
    order), and each vocabulary caption's row among them (-1 for a caption no train item shows)."""
    tokens, rows = {}, {}
    for m in Modality:
        vocab = caption_vocabulary(m)
        seen = torch.unique(train[m].caption_ids)  # sorted: vocabulary order
        tokens[m] = enc.tokenize([caption_text(m, vocab[i]) for i in seen.tolist()])
        rows[m] = torch.full((len(vocab),), -1, dtype=torch.long)
        rows[m][seen] = torch.arange(len(seen))
        if len(seen) < len(vocab):
            log.info("%s: trains on the %d of %d captions the train split shows", m.value, len(seen), len(vocab))
    return tokens, rows


def _step_losses(
    enc: MediaEncoder, banks: dict[Modality, MediaBank], tokens: dict[Modality, torch.Tensor],
    idx: dict[Modality, np.ndarray], rng: np.random.Generator, single_clip: bool,
    rows: dict[Modality, torch.Tensor],
) -> dict[Modality, torch.Tensor]:
    """One forward pass: every modality's batch against all the captions it trains on (one text-tower pass).

    With `single_clip`, a video or sound of several clips is trained on one random clip of them (ImageBind
    trains on 2-frame clips and averages clips only at inference); this also cuts the video cost by `clips`x.
    Using every caption as the text side gives each item the captions that differ from its own in one word as
    negatives, which a batch rarely holds (in a 200-step video-only trial, direction stayed at chance with the
    batch's captions and began to learn with all captions); `embed_captions` makes it cheap. "Every" is every
    caption of the train split (`tokens`; `rows` maps a caption of the vocabulary to its row there): a caption
    no train item shows (a held-out combination) would only ever be a negative, and the towers would learn to
    match nothing to it.
    """
    idx = {m: np.sort(i) for m, i in idx.items()}  # file order: faster reads
    text = embed_captions(enc.model, torch.cat([tokens[m] for m in Modality]))  # (sum V, D)
    columns = dict(zip(Modality, text.split([len(tokens[m]) for m in Modality])))
    losses = {}
    for m in Modality:
        n_clips = banks[m].inputs.shape[1] if m != Modality.IMAGE else 1
        clips = rng.integers(n_clips, size=len(idx[m])) if single_clip and n_clips > 1 else None
        media = enc(m, banks[m].batch(idx[m], clips))  # (B, D)
        losses[m] = binding_loss(media, columns[m], rows[m][banks[m].caption_ids[idx[m]]], logit_scale(enc.model, m))
    return losses


# ---- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def embed(enc: MediaEncoder, bank: MediaBank, batch_size: int = 64) -> torch.Tensor:
    """(N, D) pooled embeddings exactly as ``MediaEncoder.encode`` returns them (float32)."""
    out = [enc(bank.modality, bank.batch(range(i, min(i + batch_size, len(bank))))).float()
           for i in range(0, len(bank), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def zero_shot(enc: MediaEncoder, bank: MediaBank, feats: torch.Tensor | None = None) -> dict[str, float]:
    """Nearest caption among all possible captions -> accuracy of the whole caption and of each attribute."""
    vocab = caption_vocabulary(bank.modality)
    text = enc.encode_text([caption_text(bank.modality, a) for a in vocab]).float()  # (V, D)
    feats = embed(enc, bank) if feats is None else feats
    pred = (F.normalize(feats, dim=-1) @ F.normalize(text, dim=-1).T).argmax(-1)  # (N,)
    scores = {"caption": float((pred == bank.caption_ids).float().mean())}
    for attribute in ATTRIBUTES[bank.modality.value]:
        scores[attribute] = float(np.mean([vocab[p][attribute] == vocab[t][attribute]
                                           for p, t in zip(pred.tolist(), bank.caption_ids.tolist())]))
    return scores


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    weight_decay: float = 1e-3, iters: int = 200,
) -> float:
    """Multinomial logistic regression (L-BFGS, standardised features) -> test accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    layer = torch.nn.Linear(xtr.shape[1], classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(layer(xtr), train_y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((layer(xte).argmax(-1) == test_y).float().mean())


def evaluate(
    enc: MediaEncoder, test: dict[Modality, MediaBank], train: dict[Modality, MediaBank] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{"zero_shot": {modality: {caption, attribute...}}, "probe": {modality: {attribute...}}} on `test`."""
    enc.eval()
    result: dict[str, dict[str, dict[str, float]]] = {"zero_shot": {}, "probe": {}}
    for m, bank in test.items():
        feats = embed(enc, bank)
        result["zero_shot"][m.value] = zero_shot(enc, bank, feats)
        if train is not None:
            train_feats = embed(enc, train[m])
            result["probe"][m.value] = {
                a: linear_probe(train_feats, train[m].labels(a), feats, bank.labels(a)) for a in ATTRIBUTES[m.value]
            }
    return result


# ---- saving -----------------------------------------------------------------------------------------------
def save_encoder(enc: MediaEncoder, folder: Path, test: dict[Modality, MediaBank], reference: dict[str, Any]) -> str:
    """Save in fp16 if fp16 weights (loaded and run as ``MediaEncoder.load`` gives them) score exactly the
    `reference` zero-shot accuracies (fp32's) on `test`; else in fp32. Returns the dtype saved."""
    half = copy.deepcopy(enc).half()
    with tempfile.TemporaryDirectory() as tmp:
        half.save(tmp)
        loaded = MediaEncoder.load(tmp, enc.cfg)
        scores = {m.value: zero_shot(loaded, bank) for m, bank in test.items()}
    same = scores == reference
    log.info("fp16 weights: zero-shot %s fp32", "==" if same else "!=")
    (half if same else enc).save(folder)
    return "float16" if same else "float32"


# ---- the run ----------------------------------------------------------------------------------------------
def train_encoder(
    cfg: EncoderConfig, data: Path, out: Path, run_dir: Path, settings: EncoderTraining, *,
    cache: Path | None = None, stop_after: int | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the test split, save <out>/encoder/{encoder.safetensors, metrics.json}.

    `cache` holds the preprocessed media (default <run_dir>/cache; reused by any run with the same settings).
    Resumable: state is saved atomically to <run_dir>/state every `save_every` steps; a rerun continues from
    there with the same data order and schedule. `stop_after` ends early after saving state (simulates an
    interruption).
    """
    s = settings
    on_main(lambda: write_json(run_dir / "run.json", {"encoder": dataclasses.asdict(cfg), "out": str(out),
                                                      "training": dataclasses.asdict(s), "data": str(data)}))
    # 1. model: ImageBind at random init, every tower trainable
    torch.manual_seed(s.seed)
    enc = MediaEncoder(cfg)
    enc.model.requires_grad_(True)
    log.info("ImageBind: %.2fM parameters", sum(p.numel() for p in enc.model.parameters()) / 1e6)
    # 2. media, preprocessed once; the captions' tokens
    cache = cache or run_dir / "cache"
    train = main_first(lambda: build_banks(enc, data, "train", cache, s.limit))
    val = main_first(lambda: build_banks(enc, data, "val", cache, s.limit)) if s.eval_every else None
    tokens, rows = train_captions(enc, train)
    # 3. train on the one loop: a stream of examples per modality, the cosine ending with the time budget
    streams = {m.value: Stream(len(train[m]), s.audio_batch_size if m == Modality.AUDIO else s.batch_size)
               for m in Modality}
    loop = LoopSettings(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup=min(s.warmup, s.steps // 5),
                        schedule="cosine_from_start", max_minutes=s.max_minutes, betas=(0.9, 0.95),
                        weight_decay=s.weight_decay, save_every=s.save_every, log_every=s.log_every, seed=s.seed)

    def loss_fn(batch: Batch) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([s.seed, batch.step, *([batch.process] if batch.processes > 1 else [])])
        idx = {m: batch.streams[m.value].numpy() for m in Modality}  # clip choice above: fixed by seed and step
        losses = _step_losses(enc, train, tokens, idx, rng, s.single_clip, rows)
        return {"loss": sum(losses.values()), **{m.value: v for m, v in losses.items()},
                "scale": logit_scale(enc.model, Modality.IMAGE).detach()}

    def evaluate_val(step: int, row: dict[str, Any]) -> bool:
        if val is None or step % s.eval_every:
            return False
        row["val"] = evaluate(enc, val)["zero_shot"]
        enc.model.train()  # ImageBind's drop-path is on while training (MediaEncoder.train would keep it off)
        log.info("step %d val zero-shot %s", step, json.dumps(row["val"]))
        return True

    fitted = fit("encoder", enc.model, loss_fn, streams, loop, run_dir, after_step=evaluate_val,
                 stop_after=stop_after)
    if "stopped_at" in fitted.summary:
        return {"stopped_at": fitted.summary["stopped_at"], "loss": fitted.summary["final"]["loss"]}
    step = fitted.summary["steps"]
    # 5. evaluate on the held-out test split, save the weights (fp16 if lossless) and the figures (main process)
    folder = out / "encoder"

    def finish() -> None:
        t0 = time.perf_counter()
        test = build_banks(enc, data, "test", cache, s.limit)
        scores = evaluate(enc, test, train)
        dtype = save_encoder(enc, folder, test, scores["zero_shot"])
        rows = (run_dir / "log.jsonl").read_text().splitlines()
        metrics = {"steps": step, "seconds": fitted.summary["seconds"],
                   "final_loss": json.loads(rows[-1])["loss"] if rows else None,
                   "ended_by": fitted.summary["ended_by"],
                   "eval_seconds": round(time.perf_counter() - t0, 1),
                   "dtype": dtype, "split": "test", "items": {m.value: len(b) for m, b in test.items()}, **scores,
                   "training": dataclasses.asdict(s), "encoder": dataclasses.asdict(cfg)}
        write_json(folder / METRICS_FILE, metrics)
        log.info("saved %s (%s) and %s", folder / ENCODER_FILE, dtype, METRICS_FILE)

    on_main(finish)
    return json.loads((folder / METRICS_FILE).read_text())
