"""The world's training media of one modality as tensors, decoded once and cached (``<run_dir>/<modality>/media.pt``).

A VAE *unit* is an image, a video frame or a log-mel; audio also keeps its waveforms, the vocoder's targets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nextgpt.config import Modality
from nextgpt.decoder_configs import HOP_LENGTH
from nextgpt.files import torch_save
from nextgpt.training.decoders.audio import LogMel
from nextgpt.training.foundation import captioned_items, read_all

log = logging.getLogger(__name__)


@dataclass
class WorldMedia:
    """Training media of one modality as tensors; a VAE *unit* is an image, a video frame or a mel."""

    captions: list[str]  # one per item
    units: Tensor  # image (N, 3, H, W) uint8 | video (N * T, 3, H, W) uint8 | audio (N, 1, T_mel, 64) float32
    frames: int = 1  # units per item (T for video)
    waves: Tensor | None = None  # audio: (N, samples) int16, the vocoder's targets

    @property
    def pixels(self) -> bool:
        """Whether the units are images / frames (uint8 RGB) rather than log-mels."""
        return self.units.dtype == torch.uint8

    def vae_input(self, index: Tensor) -> Tensor:
        """Units `index` as VAE input: pixels in [-1, 1] (B, 3, H, W), or log-mel (B, 1, T, 64)."""
        units = self.units[index]
        return units.float() / 127.5 - 1.0 if self.pixels else units


def load_media(data: Path, modality: Modality, cache: Path, limit: int | None = None) -> WorldMedia:
    """The train split of one modality, decoded once and cached in `cache` (media.pt)."""
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["limit"] == limit and saved["data"] == str(data):
            return WorldMedia(saved["captions"], saved["units"], saved["frames"], saved.get("waves"))
    items = captioned_items(data, "train", modality, limit=limit)
    if not items:
        raise FileNotFoundError(f"no {modality.value} items in {data}/train/comprehension.json")
    arrays = read_all(modality, [it.path for it in items])
    captions = [it.caption for it in items]
    frames, waves = 1, None
    if modality == Modality.AUDIO:
        length = min(len(a) for a in arrays) // HOP_LENGTH * HOP_LENGTH
        wave = torch.from_numpy(np.stack([a[:length] for a in arrays]))  # (N, samples) float32
        mel = LogMel()
        units = torch.cat([mel(chunk) for chunk in wave.split(64)]).unsqueeze(1)  # (N, 1, T, 64)
        waves = (wave * 32768.0).round().clamp(-32768, 32767).to(torch.int16)  # exactly the PCM_16 file
    else:
        stacked = torch.from_numpy(np.stack(arrays))  # (N, H, W, 3) | (N, T, H, W, 3) uint8
        if modality == Modality.VIDEO:
            frames = stacked.shape[1]
            stacked = stacked.flatten(0, 1)
        units = stacked.permute(0, 3, 1, 2).contiguous()  # (units, 3, H, W)
    torch_save({"limit": limit, "data": str(data), "captions": captions, "units": units, "frames": frames,
                "waves": waves}, cache)
    log.info("%s: %d items cached in %s", modality.value, len(captions), cache)
    return WorldMedia(captions, units, frames, waves)
