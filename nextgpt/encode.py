"""The encoding tier: a frozen ImageBind turns each image, sound or video into ONE pooled embedding.

    from nextgpt.config import Modality, NextGPTConfig
    from nextgpt.encode import MediaEncoder

    cfg = NextGPTConfig.from_name("nano").encoder
    enc = MediaEncoder(cfg)                               # random weights (tests; before training)
    enc = MediaEncoder.load("checkpoints/nano/encoder", cfg)
    emb = enc.encode(Modality.IMAGE, [rgb])               # rgb: (H, W, 3) uint8 -> (1, out_embed_dim)

The architecture is ImageBind's own ``ImageBindModel`` from the ``imagebind-unofficial`` package (its
depth/thermal/IMU towers are dropped). Only its model modules are imported: the package ``__init__``
pulls in torchaudio/torchvision/pytorchvideo, which do not exist here, and timm (needed for
``DropPath``/``trunc_normal_``) needs torchvision, so a two-name stand-in is used while importing
when timm cannot be imported. ImageBind's data pipeline is re-done here with PIL, numpy and
transformers' Kaldi-compatible ``ASTFeatureExtractor``:

    image  (H, W, 3) uint8    -> bicubic resize (short side S) + centre crop + CLIP norm -> (3, S, S)
    video  (T, H, W, 3) uint8 -> `video_clips` evenly spaced 2-frame clips, frames as above
                                                                     -> (clips, 3, 2, S, S)
    audio  (N,) float32 16 kHz -> `audio_clips` clips of `audio_clip_seconds`, Kaldi fbank,
                                  (x + 4.268) / 9.138                        -> (clips, 1, mel, frames)

The returned vectors are exactly ImageBind's outputs, which NExT-GPT's input projection was trained on:
vision is L2-normalised per clip (a video is the mean of its clips' unit vectors), audio is
L2-normalised then scaled by ImageBind's fixed logit scale 20, text by its learned logit scale.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import ASTFeatureExtractor

from nextgpt import files
from nextgpt.config import EncoderConfig, Modality

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageBind's (OpenCLIP's) pixel statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138  # ImageBind's log-mel statistics (AudioSet)
TEXT_CONTEXT = 77
IMAGEBIND_IMAGE_SIZE = 224  # hard-coded in ImageBindModel._create_modality_preprocessors
UNUSED_TOWERS = ("depth", "thermal", "imu")  # ImageBind modalities NExT-GPT does not use
# Per modality: the ImageBind tower that reads it, and how one media array becomes that tower's input (a new
# modality adds a row to each; `PREPROCESS` stands below the converters it names).
TOWER: dict[Modality, str] = {Modality.IMAGE: "vision", Modality.VIDEO: "vision", Modality.AUDIO: "audio"}


class EncoderCheckpointError(ValueError):
    """An encoder weights file does not fit the encoder config (names the file and the first bad key)."""


# ---- importing ImageBind's model code ---------------------------------------------------------------
class _DropPath(nn.Module):
    """Stochastic depth as in ``timm.layers.DropPath``: drop a residual branch per sample in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


@contextlib.contextmanager
def _timm_layers_available() -> Iterator[None]:
    """Make ``from timm.layers import DropPath, trunc_normal_`` work during the import, and only then."""
    try:
        importlib.import_module("timm.layers")
    except Exception as err:  # timm missing, or installed but broken without torchvision
        logger.debug("timm unavailable (%s); using a stand-in for DropPath/trunc_normal_", err)
    else:
        yield  # an error inside the caller's block propagates as it is
        return
    saved = {name: sys.modules.get(name) for name in ("timm", "timm.layers")}
    layers = types.ModuleType("timm.layers")
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    package = types.ModuleType("timm")
    package.__path__ = []  # type: ignore[attr-defined]
    package.layers = layers  # type: ignore[attr-defined]
    sys.modules.update({"timm": package, "timm.layers": layers})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _imagebind_module(name: str) -> types.ModuleType:
    """Import ``imagebind.models.<name>`` without running ``imagebind/__init__.py``."""
    full = f"imagebind.models.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("ImageBind is missing: pip install --no-deps imagebind-unofficial")
        sys.modules["imagebind"] = importlib.util.module_from_spec(spec)  # package shell, __init__ not run
    with _timm_layers_available():
        return importlib.import_module(full)


def _bpe_path() -> Path:
    """The CLIP BPE merges file shipped inside the imagebind package."""
    _imagebind_module("imagebind_model")
    return Path(sys.modules["imagebind"].__path__[0]) / "bpe" / "bpe_simple_vocab_16e6.txt.gz"


# ---- building ---------------------------------------------------------------------------------------
def _imagebind_kwargs(cfg: EncoderConfig) -> dict[str, object]:
    """ImageBindModel constructor arguments for `cfg`; unused towers get zero blocks (dropped after)."""
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    return dict(
        video_frames=2,
        kernel_size=(2, cfg.patch_size, cfg.patch_size),  # (time, h, w): 2-frame clips
        out_embed_dim=cfg.out_embed_dim,
        vision_embed_dim=cfg.vision_embed_dim,
        vision_num_blocks=cfg.vision_num_blocks,
        vision_num_heads=cfg.vision_num_heads,
        audio_kernel_size=cfg.audio_kernel_size,
        audio_stride=cfg.audio_stride,
        audio_embed_dim=cfg.audio_embed_dim,
        audio_num_blocks=cfg.audio_num_blocks,
        audio_num_heads=cfg.audio_num_heads,
        audio_num_mel_bins=cfg.audio_num_mel_bins,
        audio_target_len=cfg.audio_target_len,
        text_embed_dim=cfg.text_embed_dim,
        text_num_blocks=cfg.text_num_blocks,
        text_num_heads=cfg.text_num_heads,
        **{f"{tower}_num_blocks": 0 for tower in UNUSED_TOWERS},
    )


def _construct(cfg: EncoderConfig) -> nn.Module:
    model = _imagebind_module("imagebind_model").ImageBindModel(**_imagebind_kwargs(cfg))
    for tower in UNUSED_TOWERS:
        for table in (model.modality_preprocessors, model.modality_trunks, model.modality_heads,
                      model.modality_postprocessors):
            del table[tower]
    if cfg.image_size != IMAGEBIND_IMAGE_SIZE:
        # The vision input size is hard-coded (224) inside ImageBind; rebuild only the vision
        # preprocessor (cls token + positional table) at cfg.image_size, around the same patch stem.
        mp = _imagebind_module("multimodal_preprocessors")
        stem = model.modality_preprocessors["vision"].rgbt_stem
        model.modality_preprocessors["vision"] = mp.RGBDTPreprocessor(
            rgbt_stem=stem,
            depth_stem=None,
            img_size=[3, 2, cfg.image_size, cfg.image_size],  # (C, T, H, W)
            num_cls_tokens=1,
            pos_embed_fn=partial(mp.SpatioTemporalPosEmbeddingHelper, learnable=True),
        )
    return model


def build_imagebind(cfg: EncoderConfig, device: str | torch.device | None = None) -> nn.Module:
    """ImageBind's ``ImageBindModel`` (vision, audio, text towers) at the sizes in `cfg`.

    device: "cpu", "cuda", ... or "meta" (shapes only, no memory: for memory planning and for loading
    weights with ``assign=True``). None uses the current default device, so ``with torch.device("meta"):
    build_imagebind(cfg)`` works too. Random initialisation as in ImageBind.
    """
    target = torch.device(device) if device is not None else torch.get_default_device()
    if target.type == "meta":
        # ImageBind calls .item() while building (drop-path schedule), which meta tensors refuse; so
        # build with CPU factories and only the parameters created on meta.
        from accelerate import init_empty_weights

        with torch.device("cpu"), init_empty_weights(include_buffers=False):
            model = _construct(cfg)
        return model.to("meta")
    with torch.device("cpu"):
        model = _construct(cfg)
    return model.to(target)


# ---- preprocessing (ImageBind's data pipeline) ---------------------------------------------------------
def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32: bicubic short-side resize, centre crop, CLIP norm."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if w <= h:  # torchvision Resize(int): short side -> size, long side truncated
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    pil = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    crop = np.asarray(pil, dtype=np.float32)[top : top + size, left : left + size] / 255.0  # (S, S, 3)
    crop = (crop - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))  # (3, S, S)


def clip_frame_indices(num_frames: int, num_clips: int) -> np.ndarray:
    """(num_clips, 2) frame indices: the first and last frame of `num_clips` equal segments."""
    bounds = np.arange(num_clips + 1) * num_frames / num_clips
    first = np.floor(bounds[:-1])
    last = np.maximum(np.ceil(bounds[1:]) - 1, first)
    return np.clip(np.stack([first, last], axis=1), 0, num_frames - 1).astype(int)  # (clips, 2)


def video_to_tensor(frames: np.ndarray, size: int, num_clips: int, num_crops: int = 1) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (clips * crops, 3, 2, size, size): evenly spaced 2-frame clips.

    num_crops 1: each frame as an image (bicubic resize, centre crop). num_crops 3: ImageBind's own video
    path: short side scaled to `size` (bilinear), then three crops along the long side (start, centre, end),
    so the embedding averages 5 clips x 3 crops as ImageBind-huge was used in the official release.
    """
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"expected (T, H, W, 3) frames with T >= 1, got {frames.shape}")
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, not {num_crops}")
    idx = clip_frame_indices(frames.shape[0], num_clips)  # (clips, 2)
    if num_crops == 1:
        done = {int(i): image_to_tensor(frames[i], size) for i in np.unique(idx)}
        return torch.stack([torch.stack([done[int(i)] for i in pair], dim=1) for pair in idx])  # (clips, 3, 2, S, S)
    clips = torch.from_numpy(np.ascontiguousarray(frames[idx])).float().div(255.0)  # (clips, 2, H, W, 3)
    clips = clips.permute(0, 4, 1, 2, 3)  # (clips, 3, 2, H, W)
    h, w = clips.shape[-2:]
    new_h, new_w = (int(h * size / w), size) if w < h else (size, int(w * size / h))
    n, c, t = clips.shape[:3]
    scaled = torch.nn.functional.interpolate(clips.reshape(n * c, t, h, w), size=(new_h, new_w), mode="bilinear",
                                             align_corners=False).reshape(n, c, t, new_h, new_w)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1, 1)
    scaled = (scaled - mean) / std
    crops = []
    for clip in scaled:
        for where in (0, 1, 2):  # start, centre, end of the long side
            top, left = (new_h - size + 1) // 2, (new_w - size + 1) // 2
            if new_h > new_w:
                top = (0, top, new_h - size)[where]
            else:
                left = (0, left, new_w - size)[where]
            crops.append(clip[..., top : top + size, left : left + size])
    return torch.stack(crops)  # (clips * 3, 3, 2, S, S)


def audio_clip_bounds(num_samples: int, cfg: EncoderConfig) -> list[tuple[int, int]]:
    """Sample ranges of `cfg.audio_clips` clips as pytorchvideo's ConstantClipsPerVideoSampler picks them."""
    sr, clip_s = cfg.audio_sample_rate, cfg.audio_clip_seconds
    max_start = max(num_samples / sr - clip_s, 0.0)
    starts = [i * max_start / cfg.audio_clips for i in range(cfg.audio_clips)]
    return [(int(s * sr), int((s + clip_s) * sr)) for s in starts]


def audio_to_tensor(wave: np.ndarray, cfg: EncoderConfig, fbank: ASTFeatureExtractor) -> torch.Tensor:
    """(N,) float32 mono at cfg.audio_sample_rate -> (clips, 1, mel_bins, target_len) normalised fbank."""
    if wave.ndim != 1:
        raise ValueError(f"expected mono (N,) audio, got shape {wave.shape}")
    segments = []
    for start, end in audio_clip_bounds(len(wave), cfg):
        seg = np.asarray(wave[start:end], dtype=np.float32)
        seg = np.pad(seg, (0, max(0, 400 - len(seg))))  # at least one 25 ms window
        segments.append(seg - seg.mean())  # ImageBind removes the clip's DC offset first
    feats = fbank(segments, sampling_rate=cfg.audio_sample_rate, return_tensors="np")["input_values"]
    # feats: (clips, target_len, mel_bins), zero-padded in time; ImageBind pads, then normalises.
    mel = (np.asarray(feats, dtype=np.float32).transpose(0, 2, 1) - AUDIO_MEAN) / AUDIO_STD
    return torch.from_numpy(np.ascontiguousarray(mel))[:, None]  # (clips, 1, mel, time)


def make_fbank(cfg: EncoderConfig) -> ASTFeatureExtractor:
    """Kaldi-compatible log-mel filterbank (25 ms Hann window, 10 ms hop), padded/cut to target_len.

    Normalisation is done by the caller: the extractor's own divides by 2 * std (AST's convention).
    """
    with warnings.catch_warnings():
        # 128 bins over a 512-point FFT leave the lowest filter empty, in Kaldi/ImageBind too.
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return ASTFeatureExtractor(
            feature_size=1,
            sampling_rate=cfg.audio_sample_rate,
            num_mel_bins=cfg.audio_num_mel_bins,
            max_length=cfg.audio_target_len,
            do_normalize=False,
        )


# ---- checkpoints --------------------------------------------------------------------------------------
def _check_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise EncoderCheckpointError naming `source` and the first missing/unexpected/mis-shaped key."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    hint = "; was it saved with a different encoder config?"
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EncoderCheckpointError(f"{source}: missing key {missing[0]!r}{more}{hint}")
    if wrong:
        k = wrong[0]
        raise EncoderCheckpointError(
            f"{source}: key {k!r} has shape {tuple(state[k].shape)}, the encoder config needs "
            f"{tuple(expected[k].shape)}{hint}"
        )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise EncoderCheckpointError(f"{source}: unexpected key {unexpected[0]!r}{more}{hint}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise EncoderCheckpointError(f"{path} is not a readable safetensors file ({err})") from err


# ---- the encoder --------------------------------------------------------------------------------------
PREPROCESS: dict[Modality, Callable[[MediaEncoder, np.ndarray], torch.Tensor]] = {  # (encoder, item) -> input
    Modality.IMAGE: lambda enc, x: image_to_tensor(x, enc.cfg.image_size),
    Modality.VIDEO: lambda enc, x: video_to_tensor(x, enc.cfg.image_size, enc.cfg.video_clips, enc.cfg.video_crops),
    Modality.AUDIO: lambda enc, x: audio_to_tensor(x, enc.cfg, enc.fbank),
}


class MediaEncoder(nn.Module):
    """Frozen ImageBind plus its preprocessing: media arrays -> (N, out_embed_dim) embeddings."""

    def __init__(self, cfg: EncoderConfig, model: nn.Module | None = None, device: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else build_imagebind(cfg, device)
        self.model.requires_grad_(False)  # NExT-GPT never trains the encoder
        self.fbank = make_fbank(cfg)
        self._tokenizer = None
        self.exec_device: torch.device | None = None  # set by enable_offload: weights wait on the CPU
        self.eval()

    def enable_offload(self, device: str | torch.device) -> "MediaEncoder":
        """Keep the weights on the CPU and move them to `device` only while encoding (as the decoders do)."""
        self.exec_device = torch.device(device)
        self.model.to("cpu")
        return self

    def train(self, mode: bool = True) -> "MediaEncoder":
        """The frozen ImageBind always runs in eval mode (no drop-path), even inside a model in training."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def embed_dim(self) -> int:
        return self.cfg.out_embed_dim

    @property
    def device(self) -> torch.device:
        return self.exec_device or next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- inputs ----------------------------------------------------------------------------------------
    def preprocess(self, modality: Modality | str, item: np.ndarray) -> torch.Tensor:
        """One media array (from nextgpt.media) -> ImageBind's input tensor for that item.

        image (H, W, 3) uint8 -> (3, S, S); video (T, H, W, 3) uint8 -> (clips, 3, 2, S, S);
        audio (N,) float32 at cfg.audio_sample_rate -> (clips, 1, mel, frames).
        """
        return PREPROCESS[Modality(modality)](self, item)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """ImageBind's CLIP BPE tokenizer: (N, 77) int64, <start> text <end> then zeros."""
        if self._tokenizer is None:
            mp = _imagebind_module("multimodal_preprocessors")
            self._tokenizer = mp.SimpleTokenizer(bpe_path=str(_bpe_path()), context_length=TEXT_CONTEXT)
        tokens = self._tokenizer(list(texts))
        return tokens.unsqueeze(0) if tokens.ndim == 1 else tokens  # it squeezes a batch of one

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, modality: Modality | str, inputs: torch.Tensor) -> torch.Tensor:
        """A batch of preprocessed inputs (B, *preprocess shape) -> (B, out_embed_dim); clips averaged."""
        key = "text" if modality == "text" else TOWER[Modality(modality)]
        inputs = inputs.to(self.device, self.dtype if inputs.is_floating_point() else inputs.dtype)
        return self.model({key: inputs})[key]

    def _batched(self, modality: Modality | str, batches: Iterator[torch.Tensor]) -> torch.Tensor:
        grad = torch.enable_grad() if self.training else torch.no_grad()
        if self.exec_device is not None:
            self.model.to(self.exec_device)
        try:
            with grad:
                out = [self(modality, batch) for batch in batches]
        finally:
            if self.exec_device is not None:
                self.model.to("cpu")
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device, dtype=self.dtype)

    def encode(
        self, modality: Modality | str, items: Sequence[np.ndarray], batch_size: int = 8
    ) -> torch.Tensor:
        """Media arrays -> (N, out_embed_dim), preprocessed and run `batch_size` items at a time."""
        modality = Modality(modality)
        batches = (
            torch.stack([self.preprocess(modality, x) for x in items[i : i + batch_size]])
            for i in range(0, len(items), batch_size)
        )
        return self._batched(modality, batches)

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Strings -> (N, out_embed_dim) with ImageBind's text tower."""
        tokens = self.tokenize(texts) if texts else torch.empty(0, TEXT_CONTEXT, dtype=torch.long)
        return self._batched("text", iter(tokens.split(batch_size)) if len(tokens) else iter(()))

    # -- weights ---------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the ImageBind weights to <folder>/encoder.safetensors (ImageBind's own key names)."""
        path = Path(folder) / ENCODER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        files.save_tensors(state, path, metadata={"format": "pt", "architecture": "ImageBindModel"})
        return path

    @classmethod
    def load(cls, folder: str | Path, cfg: EncoderConfig, *, device: str = "cpu",
             dtype: torch.dtype | None = None) -> "MediaEncoder":
        """Read <folder>/encoder.safetensors into an encoder built (on meta, then assigned) for `cfg`.

        Weights are cast to `dtype` (default: float32, whatever precision the file stores)."""
        path = Path(folder) / ENCODER_FILE
        state = _read_safetensors(path)
        model = build_imagebind(cfg, device="meta")
        _check_state(model.state_dict(), state, path)
        model.load_state_dict(state, strict=True, assign=True)
        return cls(cfg, model=model.to(device, dtype or torch.float32))


def imagebind_cache_folder(pth: Path) -> Path:
    """Where a converted ``imagebind_huge.pth`` lives: the user's cache, keyed by the file (model folders may be
    read-only)."""
    from nextgpt.llm import cache_dir

    stat = pth.stat()
    key = hashlib.sha256(f"{pth.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "imagebind" / f"{pth.stem}-{key}"


def load_official_imagebind(
    pth: str | Path, cfg: EncoderConfig, out_folder: str | Path | None = None, *, device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> MediaEncoder:
    """Load Meta's ``imagebind_huge.pth``: converted once to <out_folder>/encoder.safetensors, then loaded.

    The pickle is read with ``torch.load(weights_only=True)`` (tensors only, no code); the depth,
    thermal and IMU towers are dropped. `out_folder` defaults to a folder in the cache
    (`$NEXTGPT_CACHE/imagebind/`). A folder that already holds encoder.safetensors is loaded as it is.
    """
    pth = Path(pth)
    if pth.is_dir() and (pth / ENCODER_FILE).is_file():
        return MediaEncoder.load(pth, cfg, device=device, dtype=dtype)
    if out_folder is None and not pth.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {pth}")
    folder = Path(out_folder) if out_folder is not None else imagebind_cache_folder(pth)
    target = folder / ENCODER_FILE
    if not target.is_file():
        if not pth.is_file():
            raise FileNotFoundError(f"ImageBind checkpoint not found: {pth}")
        try:
            state = torch.load(pth, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            state = torch.load(pth, map_location="cpu", weights_only=True)
        unused = tuple(f"modality_{part}.{tower}." for part in ("preprocessors", "trunks", "heads",
                       "postprocessors") for tower in UNUSED_TOWERS)
        state = {k: v for k, v in state.items() if not k.startswith(unused)}
        _check_state(build_imagebind(cfg, device="meta").state_dict(), state, pth)
        folder.mkdir(parents=True, exist_ok=True)
        files.save_tensors(state, target, metadata={"format": "pt"})
        logger.info("converted %s to %s", pth, target)
    return MediaEncoder.load(folder, cfg, device=device, dtype=dtype)
