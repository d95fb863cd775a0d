"""A modality's pipeline folder (``<out>/decoders/<modality>/``) and the components trained into it.

The folder (model_index.json, scheduler, null condition) is written once by `Decoders.save`; each part then
replaces only its own component, as fp16 safetensors, atomically, and names its class in model_index.json.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, UNet3DConditionModel
from torch import nn

from nextgpt.config import DecoderSpec, Modality, NextGPTConfig
from nextgpt.decode import Decoders, build_nano_pipeline
from nextgpt.decoder_configs import DecoderSizes, instantiate, nano_decoder_components
from nextgpt.files import atomic_folder, write_json
from nextgpt.training.decoders.settings import PartSettings
from nextgpt.unet3d import UNet3DFramePositions

log = logging.getLogger(__name__)


def decoder_folder(out: Path, modality: Modality) -> Path:
    return Path(out) / "decoders" / modality.value


def ensure_folder(cfg: NextGPTConfig, modality: Modality, out: Path, sizes: DecoderSizes, seed: int) -> Path:
    """Write a fresh pipeline of `sizes` to ``out/decoders/<modality>/`` unless one is there already."""
    folder = decoder_folder(out, modality)
    if not (folder / "model_index.json").is_file():
        pipe = build_nano_pipeline(cfg.decoder(modality), seed=seed, unet_channels=sizes.unet_channels,
                                   vae_channels=sizes.vae_channels, vocoder_channels=sizes.vocoder_channels)
        Decoders(cfg, {modality: pipe}).save(out, [modality])
        log.info("%s: fresh pipeline written to %s (%s)", modality.value, folder, sizes)
    return folder


def load_pipeline(cfg: NextGPTConfig, out: Path, modality: Modality) -> tuple[Decoders, DiffusionPipeline]:
    """The modality's pipeline in float32 from the checkpoint folder (with the bundled caption encoder)."""
    decoders = Decoders.from_folder(cfg, out)
    return decoders, decoders.pipeline(modality)


def fresh_component(spec: DecoderSpec, sizes: DecoderSizes, part: str, seed: int) -> nn.Module:
    """A randomly initialised component of the recipe's sizes: every part trains from scratch (a resumed run
    then loads its saved state over it), so the recipe, not the placeholder folder, fixes the sizes."""
    table = nano_decoder_components(spec, unet_channels=sizes.unet_channels, vae_channels=sizes.vae_channels,
                                    vocoder_channels=sizes.vocoder_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(*table[part]).float()


def with_frame_positions(unet: nn.Module, settings: PartSettings) -> nn.Module:
    """The UNet to train, with the frame settings applied (a clear error where they cannot apply).

    frame_positions: a stock UNet3D (a checkpoint from before frame positions) becomes a UNet3DFramePositions.
    frame_init: the frame embeddings start at `frame_init` x sinusoids, whatever the UNet3DFramePositions: a
    converted stock one, a fresh one (the nano recipe builds the video UNet as one, with zero embeddings), or the
    checkpoint's (its learnt embeddings are replaced, with a warning). A resumed run loads its state over them.
    """
    if type(unet) is UNet3DConditionModel:
        if settings.frame_positions:
            log.info("unet: stock UNet3D converted to UNet3DFramePositions (frame_init %s)", settings.frame_init)
            return UNet3DFramePositions.from_stock(unet, scale=settings.frame_init)
        if settings.frame_init:
            raise ValueError("frame_init sets frame embeddings: a stock UNet3D needs frame_positions=true with it")
        return unet
    if settings.frame_init:
        if not isinstance(unet, UNet3DFramePositions):
            raise ValueError(f"frame_init applies to a video UNet; this one is a {type(unet).__name__}")
        learnt = torch.cat([m.frame_embedding.detach().flatten() for m in unet.temporal_transformers()])
        if learnt.any():
            log.warning("unet: frame_init %s replaces frame embeddings of RMS %.4f", settings.frame_init,
                        float(learnt.float().pow(2).mean().sqrt()))
        unet.init_frame_embeddings(settings.frame_init)
        log.info("unet: frame embeddings start at %s x sinusoids", settings.frame_init)
    return unet


def save_component(module: nn.Module, folder: Path) -> None:
    """Write one trained component as fp16 safetensors, replacing the folder atomically."""
    with atomic_folder(folder) as tmp:
        copy.deepcopy(module).to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        config_path = tmp / "config.json"  # a component loaded from a folder remembers it: not for a shipped config
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def register_class(folder: Path, component: str, module: nn.Module) -> None:
    """Point the pipeline's model_index.json at the class a component was trained as (as diffusers writes it:
    the top-level library for diffusers / transformers classes, the defining module for any other)."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    library = type(module).__module__
    if library.split(".")[0] in ("diffusers", "transformers"):
        library = library.split(".")[0]
    if index.get(component) != [library, type(module).__name__]:
        index[component] = [library, type(module).__name__]
        write_json(index_path, index)


def weights_digest(folder: Path) -> str:
    """Content hash of a component's weights (the latent cache is valid for one VAE only)."""
    h = hashlib.sha1()
    for path in sorted(folder.glob("*.safetensors")):
        h.update(path.read_bytes())
    return h.hexdigest()
