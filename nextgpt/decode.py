"""Generation tier: decoder conditions -> images, videos, sounds through the stock diffusers pipelines.

    decoders = Decoders.from_folder(cfg, checkpoint_dir)           # nothing is loaded yet
    images = decoders.generate("image", cond)                       # (B, H, W, 3) uint8; loads once
    videos = decoders.generate("video", cond, num_frames=8)         # (B, T, H, W, 3) uint8
    sounds = decoders.generate("audio", cond, audio_seconds=2.0)    # (B, N) float32 at 16 kHz, peak -1 dBFS
    target = decoders.encode_captions("image", ["a red circle"])    # stage-2 L2 target, cond-shaped

One code path serves the three modalities; the `DecoderSpec` says which pipeline, which condition shape
and which sizes, and `_KINDS` holds the few things the three stock pipelines do differently. A condition
is passed as `prompt_embeds` ((B, L, D) for Stable Diffusion / TextToVideoSD, (B, D) for AudioLDM); the
negative condition for classifier-free guidance is the decoder's own encoding of the empty string.

Each pipeline is loaded once, on first use, and kept (the official code reloaded it on every call).
`build_nano_pipeline` makes the fresh small decoders of the nano preset, whose text encoder is
all-MiniLM-L6-v2 (384-d); the real architectures of the 7B preset are in decoder_configs.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import BertModel, BertTokenizerFast, PreTrainedModel, PreTrainedTokenizerBase

from nextgpt.config import DecoderSpec, Modality, NextGPTConfig
from nextgpt.decoder_configs import (
    NANO_PREDICTION,
    caption_encoder_path,
    count_parameters,
    instantiate,
    nano_decoder_components,
    reference_decoder_components,
)
from nextgpt.unet3d import UNet3DFramePositions  # noqa: F401 (registers the nano video UNet with diffusers' loader)

__all__ = [
    "Decoders",
    "build_nano_pipeline",
    "normalize_sounds",
    "load_caption_encoder",
    "reference_decoder_components",
    "nano_decoder_components",
    "count_parameters",
]

log = logging.getLogger(__name__)

# generated sound leaves `generate` at this loudness; the vocoder's own output can be 40-60 dB quieter, with a
# one-sample click at the very start
AUDIO_PEAK_DBFS = -1.0  # peak level of every generated sound
AUDIO_FADE_SECONDS = 0.01  # raised-cosine fade at both ends (removes the start click, no click at the end)
AUDIO_SILENCE_PEAK = 1e-4  # a sound whose peak (after the fades) is below this is silence and left as it is
AUDIO_SAMPLE_RATE = 16000  # the rate of every audio decoder (AudioLDM's)
NULL_COND_FILE = "null_cond.safetensors"  # the negative condition, for decoders without a text encoder
NANO_CAPTION_TOKENS = 16  # nano tokenizer length = condition length of the sequence decoders
CAPTION_ENCODER = "all-MiniLM-L6-v2"  # the only value `NextGPTConfig.caption_encoder` may take besides ""


@dataclass(frozen=True)
class _PipelineKind:
    """What the three stock pipelines do differently; everything else is one code path."""

    output: str  # field of the pipeline output holding the samples
    visual: bool  # samples are frames in [0, 1] (-> uint8) rather than a float waveform
    size_args: tuple[str, ...]  # size keywords of the pipeline's __call__
    cond_field: str  # UNet config field that must equal spec.cond_dim
    betas: tuple[float, float]  # scaled_linear beta range of the real model's scheduler
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments for a fresh pipeline


_KINDS: dict[str, _PipelineKind] = {
    "StableDiffusionPipeline": _PipelineKind(
        output="images", visual=True, size_args=("height", "width"), cond_field="cross_attention_dim",
        betas=(0.00085, 0.012),
        init_kwargs={"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    ),
    "TextToVideoSDPipeline": _PipelineKind(
        output="frames", visual=True, size_args=("height", "width", "num_frames"),
        cond_field="cross_attention_dim", betas=(0.00085, 0.012),
    ),
    "AudioLDMPipeline": _PipelineKind(
        output="audios", visual=False, size_args=("audio_length_in_s",),
        cond_field="projection_class_embeddings_input_dim", betas=(0.0015, 0.0195),
    ),
}


def _kind(spec: DecoderSpec) -> _PipelineKind:
    if spec.pipeline not in _KINDS:
        raise ValueError(f"unsupported decoder pipeline {spec.pipeline!r}; choose from {sorted(_KINDS)}")
    return _KINDS[spec.pipeline]


# ---- fresh nano decoders ----------------------------------------------------------------------------
def load_caption_encoder(
    name: str = CAPTION_ENCODER, *, max_length: int = NANO_CAPTION_TOKENS
) -> tuple[BertModel, BertTokenizerFast]:
    """The nano decoders' text encoder from its bundled folder (offline), padding/truncating to `max_length`.

    The encoder's config gets ``use_attention_mask=True``: the stock SD/TextToVideoSD text path passes the
    mask only when the config asks for it, and a BERT-style encoder needs it (encode_captions does the same).
    """
    tokenizer = _caption_tokenizer(name, max_length)
    model = BertModel.from_pretrained(caption_encoder_path(), local_files_only=True).eval()
    model.config.use_attention_mask = True
    return model, tokenizer


def _caption_tokenizer(name: str, max_length: int) -> BertTokenizerFast:
    if name != CAPTION_ENCODER:
        raise ValueError(f"unknown caption encoder {name!r}; the bundled one is {CAPTION_ENCODER!r}")
    return BertTokenizerFast.from_pretrained(caption_encoder_path(), local_files_only=True, model_max_length=max_length)


def _caption_tokens(spec: DecoderSpec) -> int:
    """Tokenizer length of a nano decoder: the condition length, or 16 for a pooled one."""
    return NANO_CAPTION_TOKENS if spec.pooled else spec.cond_len


def build_nano_pipeline(
    spec: DecoderSpec,
    *,
    seed: int = 0,
    unet_channels: tuple[int, ...] | None = None,
    vae_channels: tuple[int, ...] | None = None,
    vocoder_channels: int | None = None,
    text_encoder: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> DiffusionPipeline:
    """A fresh, randomly initialised small pipeline of the class `spec.pipeline`, sized from the spec, with the
    shipped nano widths unless given (`decoder_configs.NANO_SIZES`).

    The text encoder defaults to all-MiniLM-L6-v2 (pretrained, frozen by the caller); `text_encoder` /
    `tokenizer` replace it (tests pass a tiny BertModel; its config gets ``use_attention_mask=True``). Its
    width must equal `spec.cond_dim`. The scheduler is DPM-Solver++ with the real model's scaled_linear
    betas and the shipped decoder's prediction type (`NANO_PREDICTION`).
    """
    kind = _kind(spec)
    if (text_encoder is None) != (tokenizer is None):
        raise ValueError("pass text_encoder and tokenizer together")
    if text_encoder is None:
        text_encoder, tokenizer = load_caption_encoder(max_length=_caption_tokens(spec))
    if text_encoder.config.hidden_size != spec.cond_dim:
        raise ValueError(
            f"{spec.modality.value}: text encoder width {text_encoder.config.hidden_size} != cond_dim {spec.cond_dim}"
        )
    text_encoder.config.use_attention_mask = True  # see load_caption_encoder

    table = nano_decoder_components(
        spec, unet_channels=unet_channels, vae_channels=vae_channels, vocoder_channels=vocoder_channels
    )
    table.pop("text_encoder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = {name: instantiate(cls, config).eval() for name, (cls, config) in table.items()}
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=kind.betas[0],
        beta_end=kind.betas[1],
        beta_schedule="scaled_linear",
        prediction_type=NANO_PREDICTION.get(spec.modality, "epsilon"),
        algorithm_type="dpmsolver++",
        solver_order=2,
        steps_offset=1,
    )
    pipeline_cls = getattr(diffusers, spec.pipeline)
    return pipeline_cls(
        **modules, text_encoder=text_encoder.eval(), tokenizer=tokenizer, scheduler=scheduler, **kind.init_kwargs
    )


# ---- the decoders of one model ----------------------------------------------------------------------
class Decoders:
    """The per-modality diffusion pipelines of one model, each loaded once and kept.

    Build with `from_folder` (lazy: a modality loads on first use), `nano` (fresh small decoders), or
    directly from ready pipelines: ``Decoders(cfg, {Modality.IMAGE: pipe})``.

    When `cfg.caption_encoder` is set (nano), that bundled encoder IS the decoders' text encoder: it is
    loaded once and shared by the pipelines (one copy each with offload), and `save` leaves it out of the
    folders instead of writing three copies of it.
    """

    def __init__(
        self,
        cfg: NextGPTConfig,
        pipelines: dict[Modality | str, DiffusionPipeline] | None = None,
        *,
        root: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        offload: bool = False,
        progress: bool = False,
    ) -> None:
        self.cfg = cfg
        self.root = Path(root) if root is not None else None
        self.dtype = dtype
        self.device = torch.device(device)
        self.offload = offload
        self.progress = progress
        self._pipes: dict[Modality, DiffusionPipeline] = {}
        self._null: dict[Modality, Tensor] = {}
        self._shared_text_encoder: BertModel | None = None
        for modality, pipe in (pipelines or {}).items():
            spec = cfg.decoder(modality)
            self._pipes[spec.modality] = self._prepare(spec, pipe)

    @classmethod
    def from_folder(
        cls,
        cfg: NextGPTConfig,
        root: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        offload: bool = False,
        progress: bool = False,
    ) -> "Decoders":
        """Decoders read from ``root/decoders/<modality>/`` (or `spec.path` when set), on first use.

        offload: model CPU offload (needs CUDA; ignored with a log line otherwise).
        """
        return cls(cfg, root=root, dtype=dtype, device=device, offload=offload, progress=progress)

    @classmethod
    def nano(cls, cfg: NextGPTConfig, *, seed: int = 0, **kwargs: Any) -> "Decoders":
        """Fresh small decoders for every modality of `cfg` (see `build_nano_pipeline`); `kwargs` go to
        the constructor (dtype, device, ...)."""
        decoders = cls(cfg, **kwargs)
        for spec in cfg.decoders:
            text_encoder, tokenizer = decoders._caption_encoder(spec)
            pipe = build_nano_pipeline(spec, seed=seed, text_encoder=text_encoder, tokenizer=tokenizer)
            decoders._pipes[spec.modality] = decoders._prepare(spec, pipe)
        return decoders

    def _caption_encoder(self, spec: DecoderSpec) -> tuple[BertModel, BertTokenizerFast]:
        """The bundled text encoder (shared unless offloading) and a tokenizer for this spec."""
        name = self.cfg.caption_encoder or CAPTION_ENCODER
        if self.offload or self._shared_text_encoder is None:
            model, tokenizer = load_caption_encoder(name, max_length=_caption_tokens(spec))
            if not self.offload:
                self._shared_text_encoder = model
            return model, tokenizer
        return self._shared_text_encoder, _caption_tokenizer(name, _caption_tokens(spec))

    # ---- loading ---------------------------------------------------------------------------------
    def source(self, modality: Modality | str) -> Path:
        """The folder a modality's pipeline is (or would be) loaded from."""
        spec = self.cfg.decoder(modality)
        if spec.path:
            return Path(spec.path).expanduser()
        if self.root is None:
            raise FileNotFoundError(
                f"no folder for the {spec.modality.value} decoder: spec.path is empty and no root was given"
            )
        return self.root / "decoders" / spec.modality.value

    def is_loaded(self, modality: Modality | str) -> bool:
        return self.cfg.decoder(modality).modality in self._pipes

    def pipeline(self, modality: Modality | str) -> DiffusionPipeline:
        """The modality's pipeline; loaded from its folder on first use, then reused."""
        spec = self.cfg.decoder(modality)
        if spec.modality not in self._pipes:
            self._pipes[spec.modality] = self._prepare(spec, self._load(spec))
        return self._pipes[spec.modality]

    def _load(self, spec: DecoderSpec) -> DiffusionPipeline:
        path = self.source(spec.modality)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"no {spec.modality.value} decoder at {path}: expected a diffusers folder with model_index.json "
                f"for {spec.pipeline}"
            )
        _kind(spec)
        supplied = {}
        if self.cfg.caption_encoder:
            supplied = dict(zip(("text_encoder", "tokenizer"), self._caption_encoder(spec)))
        start = time.perf_counter()
        pipe = getattr(diffusers, spec.pipeline).from_pretrained(
            path, torch_dtype=self.dtype, local_files_only=True, **supplied
        )
        log.info("loaded the %s decoder from %s in %.1f s", spec.modality.value, path, time.perf_counter() - start)
        return pipe

    def _prepare(self, spec: DecoderSpec, pipe: DiffusionPipeline) -> DiffusionPipeline:
        _check_pipeline(spec, pipe)
        modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
        if any(getattr(m, "dtype", self.dtype) != self.dtype for m in modules):
            pipe.to(dtype=self.dtype)  # pipelines built in memory; from_folder loads in self.dtype already
        if self.offload and torch.cuda.is_available():
            pipe.enable_model_cpu_offload(device=self.device if self.device.type == "cuda" else "cuda")
        else:
            if self.offload:
                log.info("model CPU offload needs CUDA; the %s decoder stays on %s", spec.modality.value, self.device)
            pipe.to(self.device)
        pipe.vae.enable_slicing()
        pipe.set_progress_bar_config(disable=not self.progress)
        return pipe

    # ---- conditions ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_captions(self, modality: Modality | str, texts: list[str]) -> Tensor:
        """The decoder's own text encoding of captions (the stage-2 L2 target), float32 on the CPU.

        Returns (B, cond_len, cond_dim), or (B, cond_dim) L2-normalised for a pooled (AudioLDM) decoder.
        """
        spec = self.cfg.decoder(modality)
        if isinstance(texts, str) or not texts:
            raise ValueError("texts must be a non-empty list of strings")
        return _encode_text(spec, self.pipeline(spec.modality), list(texts)).float().cpu()

    def null_cond(self, modality: Modality | str) -> Tensor:
        """The negative condition (1, cond_len, cond_dim) or (1, cond_dim): the encoding of ""."""
        spec = self.cfg.decoder(modality)
        if spec.modality not in self._null:
            pipe = self.pipeline(spec.modality)
            if pipe.text_encoder is not None and pipe.tokenizer is not None:
                null = self.encode_captions(spec.modality, [""])
            else:
                path = self.source(spec.modality) / NULL_COND_FILE
                if not path.is_file():
                    raise FileNotFoundError(f"the {spec.modality.value} decoder has no text encoder and no {path}")
                null = load_file(path)["null_cond"]
            self._null[spec.modality] = _check_cond(spec, null)
        return self._null[spec.modality]

    # ---- generation ------------------------------------------------------------------------------
    def generate(
        self,
        modality: Modality | str,
        cond: Tensor,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_frames: int | None = None,
        audio_seconds: float | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Decode conditions into media: images (B, H, W, 3) uint8, videos (B, T, H, W, 3) uint8, or
        sounds (B, N) float32 at 16 kHz, faded in and out and peak-normalised to AUDIO_PEAK_DBFS (see
        `normalize_sounds`). None = the spec's default; sizes a modality lacks are ignored.
        """
        spec = self.cfg.decoder(modality)
        kind = _kind(spec)
        # 1. check the condition against the spec (official issue #97: 77x768 vs 77x1024)
        cond = _check_cond(spec, cond)
        pipe = self.pipeline(spec.modality)
        # 2. negative condition for classifier-free guidance, one per item
        null = self.null_cond(spec.modality).to(cond.dtype)
        negative = null.expand(cond.shape[0], *null.shape[1:]).clone()
        # 3. sizes this pipeline takes
        sizes = {
            "height": spec.height,
            "width": spec.width,
            "num_frames": num_frames or spec.num_frames,
            "audio_length_in_s": audio_seconds or spec.audio_seconds,
        }
        # 4. denoise and decode; a CPU generator gives the same noise on every device
        out = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=negative,
            num_inference_steps=num_inference_steps or spec.num_inference_steps,
            guidance_scale=spec.guidance_scale if guidance_scale is None else guidance_scale,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
            **{name: sizes[name] for name in kind.size_args},
        )
        samples = np.asarray(getattr(out, kind.output))
        if kind.visual:
            return (np.clip(samples, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        # 5. sound: faded in and out, peak at AUDIO_PEAK_DBFS
        return normalize_sounds(samples)

    # ---- saving ----------------------------------------------------------------------------------
    def save(self, root: str | Path, modalities: list[Modality | str] | None = None) -> list[Path]:
        """Write pipelines to ``root/decoders/<modality>/`` (diffusers layout, safetensors) with the negative
        condition beside them. Default: every pipeline loaded so far. With `cfg.caption_encoder` set the
        bundled text encoder and tokenizer are not written (`from_folder` supplies them)."""
        chosen = [self.cfg.decoder(m).modality for m in modalities] if modalities else list(self._pipes)
        written = []
        for modality in chosen:
            folder = Path(root) / "decoders" / modality.value
            pipe = self.pipeline(modality)
            null = self.null_cond(modality).contiguous()
            text = {"text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer}
            if self.cfg.caption_encoder:
                pipe.register_modules(text_encoder=None, tokenizer=None)
            try:
                pipe.save_pretrained(folder, safe_serialization=True)
            finally:
                pipe.register_modules(**text)
            save_file({"null_cond": null}, str(folder / NULL_COND_FILE))
            written.append(folder)
        return written


# ---- audio post-processing ---------------------------------------------------------------------------
def normalize_sounds(sounds: np.ndarray, *, rate: int = AUDIO_SAMPLE_RATE, peak_dbfs: float = AUDIO_PEAK_DBFS,
                     fade_seconds: float = AUDIO_FADE_SECONDS) -> np.ndarray:
    """(B, N) waveforms -> (B, N) float32 without DC, with raised-cosine fades at both ends and each peak at
    `peak_dbfs`. Silence (peak below AUDIO_SILENCE_PEAK after the fades) is returned faded, not amplified."""
    x = np.nan_to_num(np.asarray(sounds, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = x - x.mean(axis=-1, keepdims=True)
    n_fade = min(int(fade_seconds * rate), x.shape[-1] // 2)
    if n_fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_fade) / n_fade)  # 0 -> 1
        x[..., :n_fade] *= ramp
        x[..., x.shape[-1] - n_fade:] *= ramp[::-1]
    peak = np.abs(x).max(axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,))
    gain = np.where(peak >= AUDIO_SILENCE_PEAK, 10.0 ** (peak_dbfs / 20.0) / np.maximum(peak, 1e-12), 1.0)
    return (x * gain).astype(np.float32)


# ---- checks and the text path -----------------------------------------------------------------------
def _check_cond(spec: DecoderSpec, cond: Tensor) -> Tensor:
    """Validate a condition against the spec; (B, 1, D) is accepted for a pooled decoder and squeezed."""
    if not isinstance(cond, Tensor):
        raise TypeError(f"{spec.modality.value} condition must be a torch.Tensor, got {type(cond).__name__}")
    if spec.pooled and cond.ndim == 3 and cond.shape[1] == 1:
        cond = cond[:, 0]
    want = (spec.cond_dim,) if spec.pooled else (spec.cond_len, spec.cond_dim)
    if cond.ndim != len(want) + 1 or tuple(cond.shape[1:]) != want or cond.shape[0] == 0:
        shape = "(B, " + ", ".join(map(str, want)) + ")"
        raise ValueError(
            f"{spec.modality.value} condition has shape {tuple(cond.shape)} but {spec.pipeline} needs {shape}; "
            "the output projector and the decoder must come from the same config"
        )
    if not torch.isfinite(cond).all():
        raise ValueError(f"{spec.modality.value} condition contains NaN or inf")
    return cond


def _check_pipeline(spec: DecoderSpec, pipe: DiffusionPipeline) -> None:
    """A pipeline must be the spec's class and take the spec's condition shape."""
    kind = _kind(spec)
    name = type(pipe).__name__
    if name != spec.pipeline:
        raise ValueError(f"the {spec.modality.value} decoder is a {name}, the config says {spec.pipeline}")
    width = pipe.unet.config.get(kind.cond_field)
    if width != spec.cond_dim:
        raise ValueError(
            f"the {spec.modality.value} decoder's UNet takes {kind.cond_field}={width}, the config says "
            f"cond_dim={spec.cond_dim}"
        )
    encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    if not spec.pooled and encoder is not None and encoder.config.hidden_size != spec.cond_dim:
        raise ValueError(
            f"the {spec.modality.value} decoder's text encoder is {encoder.config.hidden_size} wide, the config "
            f"says cond_dim={spec.cond_dim}"
        )
    if not spec.pooled and tokenizer is not None and tokenizer.model_max_length != spec.cond_len:
        raise ValueError(
            f"the {spec.modality.value} decoder's tokenizer pads to {tokenizer.model_max_length} tokens, the "
            f"config says cond_len={spec.cond_len}"
        )


def _encode_text(spec: DecoderSpec, pipe: DiffusionPipeline, texts: list[str]) -> Tensor:
    """Encode texts exactly as the pipeline's own prompt path does (plus mean-pooling for a BERT-style
    encoder standing in for CLAP)."""
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    if tokenizer is None or encoder is None:
        raise ValueError(f"the {spec.modality.value} decoder has no text encoder to encode captions with")
    batch = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    device = pipe._execution_device
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    # SD / TextToVideoSD pass the mask only when the encoder's config asks; AudioLDM always does
    use_mask = spec.pooled or getattr(encoder.config, "use_attention_mask", False)
    out = encoder(ids, attention_mask=mask if use_mask else None)
    if not spec.pooled:
        return out[0]  # (B, cond_len, cond_dim): last hidden state, what the pipeline feeds the UNet
    pooled = getattr(out, "text_embeds", None)  # CLAP's projected text embedding (AudioLDM)
    if pooled is None:  # a sentence encoder (nano): mean over real tokens, as sentence-transformers does
        weights = mask.unsqueeze(-1).to(out[0].dtype)
        pooled = (out[0] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)  # AudioLDM L2-normalises on its own text path; (B, cond_dim)
