"""The one custom diffusers model of the nano decoders: a UNet3D whose temporal layers know which frame is which.

    import nextgpt.unet3d  # noqa: F401  (registers the class with diffusers' loader, see below)
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("checkpoints/nano/decoders/video")  # unet: UNet3DFramePositions

A pipeline folder's model_index.json names a custom component by the module that defines it:
``"unet": ["nextgpt.unet3d", "UNet3DFramePositions"]``. diffusers never imports a module because a folder names
it; it takes the module from ``sys.modules``, so importing this one is the registration. The loader then looks the
component's base class up in the module (``ModelMixin``) to choose its ``from_pretrained``. The module imports
nothing but torch and diffusers, so the stock loader needs nothing else of this package.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers import ModelMixin, UNet3DConditionModel  # noqa: F401 (ModelMixin: read by diffusers' loader, see above)
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

__all__ = ["MAX_FRAMES", "UNet3DFramePositions"]

MAX_FRAMES = 32  # frame embeddings of UNet3DFramePositions (the world's clips have 8-16 frames)


class UNet3DFramePositions(UNet3DConditionModel):
    """UNet3DConditionModel whose temporal transformers know which frame is which.

    The stock UNet3D has no frame positions: its spatial layers see frames as a batch, its temporal attentions
    are equivariant to reordering them, and only the zero padding of its temporal convolutions marks the ends of
    a clip. At pure noise it then cannot put the shape at the left in the first frame and at the right in the
    last, so "moving left" and "moving right" give the same prediction (the nano video UNet's measured flaw).
    Here each temporal transformer (and `transformer_in`) adds a learnt per-frame vector to its input; the
    vectors start at zero, so a converted stock UNet (`from_stock`) computes exactly what it did. Same config
    keys as UNet3DConditionModel; diffusers loads it from model_index.json ["nextgpt.unet3d", name].
    """

    @functools.wraps(UNet3DConditionModel.__init__)  # the signature diffusers reads the config keys from
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for module in self.temporal_transformers():
            module.frame_embedding = torch.nn.Parameter(torch.zeros(MAX_FRAMES, module.in_channels))
            module.register_forward_pre_hook(_add_frame_embedding, with_kwargs=True)

    def temporal_transformers(self) -> list[TransformerTemporalModel]:
        """The modules that carry a frame embedding: `transformer_in` and every block's temporal transformer."""
        return [m for m in self.modules() if isinstance(m, TransformerTemporalModel)]

    @torch.no_grad()
    def init_frame_embeddings(self, scale: float) -> None:
        """Every frame embedding set to `scale` x a sinusoidal table of the frames (0: zeros, the stock outputs)."""
        for module in self.temporal_transformers():
            length, dim = module.frame_embedding.shape
            table = SinusoidalPositionalEmbedding(dim, length).pe[0] if scale else torch.zeros(length, dim)
            module.frame_embedding.copy_(scale * table.to(module.frame_embedding.dtype))

    @classmethod
    def from_stock(cls, unet: UNet3DConditionModel, scale: float = 0.0) -> "UNet3DFramePositions":
        """The same weights with frame embeddings of `scale` x a sinusoidal table (0: outputs equal the stock
        UNet's; a zero start learns slowly, the embeddings' gradients average out over the batch)."""
        out = cls(**{k: v for k, v in unet.config.items() if not k.startswith("_")})
        missing, unexpected = out.load_state_dict(unet.state_dict(), strict=False)
        if unexpected or any(not key.endswith("frame_embedding") for key in missing):
            raise ValueError(f"not a stock UNet3D of this config: missing {missing}, unexpected {unexpected}")
        out.init_frame_embeddings(scale)
        out = out if unet.dtype == out.dtype else out.to(unet.dtype)
        return out.train(unet.training)  # train mode differs: TemporalConvLayer has dropout


def _add_frame_embedding(module: TransformerTemporalModel, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pre-hook: (B * F, C, H, W) hidden states + the module's embedding of each frame's place."""
    hidden, frames = args[0], kwargs.get("num_frames", 1)
    if frames > MAX_FRAMES:
        raise ValueError(f"{frames} frames: UNet3DFramePositions has embeddings for at most {MAX_FRAMES}")
    place = module.frame_embedding[:frames].to(hidden.dtype)[None, :, :, None, None]  # (1, F, C, 1, 1)
    return ((hidden.unflatten(0, (-1, frames)) + place).flatten(0, 1), *args[1:]), kwargs
