"""Typed, frozen configuration for every tier of NExT-GPT, with its named presets.

    cfg = NextGPTConfig.from_name("nano")        # bundled, CPU
    cfg = NextGPTConfig.from_name("nextgpt-7b")  # official sizes, user-supplied weights
    cfg = NextGPTConfig.from_name("tiny")        # nano's layout at toy widths, random weights (nextgpt/tiny.py)

`Modality` is an extensible string type: the three built-in modalities, plus any that `register_modality` adds at
run time with its row of `MODALITY_INFO`. The names a user may pick are defined here: `MODEL_PRESETS` (what `--preset` loads) and `QUANTIZATIONS`.

A config is saved as ``config.json`` beside every checkpoint and read back with ``NextGPTConfig.load``.
Dimensions that two tiers must agree on (the projector's output and the decoder's condition) are derived
from one place, the decoder spec, so they cannot disagree (official issue #97: 77x768 vs 77x1024).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator


class _ModalityTable(type):
    """Lets the class itself be iterated like an Enum: `for m in Modality`, `len(Modality)`, `"image" in Modality`."""

    def __iter__(cls) -> Iterator["Modality"]:
        return iter(tuple(cls._members.values()))

    def __len__(cls) -> int:
        return len(cls._members)

    def __contains__(cls, value: object) -> bool:
        return value in cls._members


class Modality(str, metaclass=_ModalityTable):
    """A non-text modality: a string ("image") that only takes registered values, iterated in registration order,
    which is the canonical order used everywhere. `Modality("image") is Modality.IMAGE`; it equals and hashes as
    its string. The three of NExT-GPT are built in; `register_modality` adds another at run time."""

    __slots__ = ()
    _members: ClassVar[dict[str, "Modality"]] = {}
    IMAGE: ClassVar["Modality"]
    AUDIO: ClassVar["Modality"]
    VIDEO: ClassVar["Modality"]

    def __new__(cls, value: str) -> "Modality":
        try:
            return cls._members[value]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a modality; registered: {list(cls._members)}") from None

    @classmethod
    def _add(cls, value: str) -> "Modality":
        if not value.isidentifier() or value != value.lower():
            raise ValueError(f"a modality is a lower-case identifier, not {value!r}")
        member = cls._members[value] = str.__new__(cls, value)
        return member

    @property
    def value(self) -> str:
        """The plain string: the message part type, the CLI flag (--image), the tables' key."""
        return str.__str__(self)

    @property
    def name(self) -> str:
        """IMAGE: the attribute name, as an Enum member's (environment variables: IMAGE_DECODER)."""
        return self.value.upper()

    def __repr__(self) -> str:
        return f"Modality.{self.name}"

    def __reduce__(self) -> tuple[Any, ...]:
        return Modality, (self.value,)


Modality.IMAGE = Modality._add("image")
Modality.AUDIO = Modality._add("audio")
Modality.VIDEO = Modality._add("video")


@dataclass(frozen=True)
class ModalitySpec:
    """What a modality is called and where its files go: the words and names every tier outside the tensors
    uses (CLI flags, Reply's lists, the app's labels, the world's folders). The tensor side is `DecoderSpec`."""

    modality: Modality
    noun: str  # one generated item in the app and the study: "Generating sound…"
    plural: str  # the app's capability list: "reads text, images, audio, video"
    spoken: str  # how the model names one item in its own words: "This picture looks like ..."
    spoken_plural: str  # and several: "I read text, pictures, sounds and videos"
    request: str  # how the model's examples ask for one: "Draw {caption}."
    reply_key: str  # Reply's list of generated items (reply.images) and the CLI's JSON key
    extensions: tuple[str, ...]  # file suffixes an upload may have; the first is the one files are written with
    world_dir: str  # the world's folder of files of this modality (nextgpt/world/records.py)
    signal_prefix: str  # "IMG" -> signal tokens [IMG0] .. [IMG{n-1}] in every preset

    @property
    def name(self) -> str:
        """The modality's value: the message part type, the CLI flag (--image) and the eval tables' key."""
        return self.modality.value

    @property
    def extension(self) -> str:
        """The suffix of generated and world files: .png | .wav | .mp4."""
        return self.extensions[0]

    @property
    def media_token(self) -> str:
        """The placeholder of an item in conversation text: <image>."""
        return f"<{self.modality.value}>"


# The one table of modalities, in the canonical order (Modality's); a new modality is a new row here, added by
# `register_modality`, plus its encoder tower and its decoder spec.
MODALITY_INFO: dict[Modality, ModalitySpec] = {
    Modality.IMAGE: ModalitySpec(
        Modality.IMAGE, noun="image", plural="images", spoken="picture", spoken_plural="pictures",
        request="Draw {caption}.", reply_key="images", extensions=(".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"),
        world_dir="images", signal_prefix="IMG"),
    Modality.AUDIO: ModalitySpec(
        Modality.AUDIO, noun="sound", plural="audio", spoken="sound", spoken_plural="sounds",
        request="Play {caption}.", reply_key="audios",
        extensions=(".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".webm", ".opus"),
        world_dir="audio", signal_prefix="AUD"),
    Modality.VIDEO: ModalitySpec(
        Modality.VIDEO, noun="video", plural="video", spoken="video", spoken_plural="videos",
        request="Make a video of {caption}.", reply_key="videos",
        extensions=(".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"), world_dir="videos", signal_prefix="VID"),
}


def register_modality(value: str, **info: Any) -> Modality:
    """Add a modality at run time: a new `Modality` member (its value, e.g. "depth", becomes `Modality.DEPTH`) and
    its row of `MODALITY_INFO` (the `ModalitySpec` fields other than `modality`). What it needs besides is a row in
    each tier's table, keyed by the new member: its encoder tower and preprocessing (`encode.TOWER`,
    `encode.PREPROCESS`), its file reader and writer (`media.LOADERS`, `media.WRITERS`), and a `DecoderSpec` in the
    preset (its `pipeline` one of `decode._KINDS`; a fresh decoder's widths in `decoder_configs.NANO_SIZES`).
    `unregister_modality` takes it away again; tests/test_fifth_modality.py adds "depth" this way."""
    if value in Modality:
        raise ValueError(f"modality {value!r} is already registered")
    modality = Modality._add(value)
    setattr(Modality, modality.name, modality)
    MODALITY_INFO[modality] = ModalitySpec(modality, **info)
    return modality


def unregister_modality(modality: Modality | str) -> None:
    """Remove a modality added by `register_modality` (the built-in three stay)."""
    modality = Modality(modality)
    if modality in (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO):
        raise ValueError(f"{modality.value} is built in")
    del MODALITY_INFO[modality], Modality._members[modality.value]
    delattr(Modality, modality.name)


@dataclass(frozen=True)
class LLMConfig:
    """The causal language model and its LoRA."""

    source: str  # "gguf": a GGUF file (nano) | "hf": a transformers folder (Vicuna-7B v0)
    path: str = ""  # folder or file; "" = the preset's bundled default (nano) or required from the user (7b)
    gguf_file: str = ""  # file name inside `path` when source == "gguf"
    hidden_size: int = 576  # d_model of the LLM, the width of input/output projections
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    intermediate_size: int = 1536
    base_vocab_size: int = 49152  # before the added tokens
    max_context: int = 2048  # tokens the conversation may use (prompt + reply)
    template: str = "chatml"  # prompt template name in conversation.py
    max_new_tokens: int = 128  # default reply length limit (GenerationSettings.max_new_tokens=None)
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class EncoderConfig:
    """ImageBind (the `ImageBindModel` architecture) at a given width; one pooled embedding per item."""

    out_embed_dim: int = 1024  # width of the pooled, normalised embedding (input projection's input)
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    text_embed_dim: int = 1024
    text_num_blocks: int = 24
    text_num_heads: int = 16
    image_size: int = 224  # ImageBind's fixed vision input (images are resized to it)
    patch_size: int = 14  # spatial patch; temporal patch is 2 frames
    video_clips: int = 5  # clips of 2 frames averaged per video, as ImageBind does
    video_crops: int = 1  # 1: centre crop of each frame; 3: ImageBind's 3 spatial crops per clip (official)
    audio_clips: int = 3  # 2 s clips averaged per sound
    audio_clip_seconds: float = 2.0
    audio_sample_rate: int = 16000
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    audio_kernel_size: int = 16
    audio_stride: int = 10
    path: str = ""  # folder of weights; "" = <checkpoint>/encoder


@dataclass(frozen=True)
class ProjectorConfig:
    """The output projector's transformer (shared shape for all modalities)."""

    d_model: int = 512
    nhead: int = 4
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dim_feedforward: int = 2048
    dropout: float = 0.0


@dataclass(frozen=True)
class DecoderSpec:
    """One modality's generation side: signal tokens, projector queries and the diffusers pipeline."""

    modality: Modality
    signal_prefix: str  # "IMG" -> signal tokens [IMG0] .. [IMG{n-1}]
    num_signal_tokens: int
    pipeline: str  # diffusers class name: StableDiffusionPipeline | TextToVideoSDPipeline | AudioLDMPipeline
    cond_len: int  # projector queries = condition sequence length (77 for SD/Zeroscope, 1 for AudioLDM)
    cond_dim: int  # condition width (cross-attention dim, or AudioLDM's CLAP dim)
    path: str = ""  # diffusers folder; "" = <checkpoint>/decoders/<modality>
    height: int = 512
    width: int = 512
    num_frames: int = 0  # video only
    audio_seconds: float = 0.0  # audio only
    num_inference_steps: int = 50
    guidance_scale: float = 7.5

    @property
    def signal_tokens(self) -> tuple[str, ...]:
        return tuple(f"[{self.signal_prefix}{i}]" for i in range(self.num_signal_tokens))

    @property
    def pooled(self) -> bool:
        """AudioLDM takes one (B, dim) vector rather than a (B, L, dim) sequence."""
        return self.cond_len == 1 and self.pipeline == "AudioLDMPipeline"


@dataclass(frozen=True)
class NextGPTConfig:
    """The whole system. `decoders` is the per-modality table every tier loops over."""

    name: str
    llm: LLMConfig
    encoder: EncoderConfig
    projector: ProjectorConfig
    decoders: tuple[DecoderSpec, ...]  # their order fixes the order of the added token ids
    media_start: str = "<Img>"  # wraps an encoded item in the prompt, as the official release does
    media_end: str = "</Img>"
    caption_encoder: str = ""  # nano only: the text encoder the decoders were trained on ("" = pipeline's own)
    default_system: str = ""  # system prompt; "" = none

    def decoder(self, modality: Modality | str) -> DecoderSpec:
        modality = Modality(modality)
        for spec in self.decoders:
            if spec.modality == modality:
                return spec
        raise KeyError(f"preset {self.name!r} has no decoder for {modality.value}")

    @property
    def added_tokens(self) -> tuple[str, ...]:
        """Tokens added to the LLM vocabulary, in the order their ids are assigned."""
        toks = [self.media_start, self.media_end]
        for spec in self.decoders:
            toks.extend(spec.signal_tokens)
        return tuple(toks)

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # a Modality is written as its string

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NextGPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        llm = d["llm"] | {"lora_targets": tuple(d["llm"].get("lora_targets", LLMConfig.lora_targets))}
        decoders = tuple(
            DecoderSpec(**(s | {"modality": Modality(s["modality"])})) for s in d["decoders"]
        )
        rest = {k: v for k, v in d.items() if k not in ("llm", "encoder", "projector", "decoders")}
        return cls(
            llm=LLMConfig(**llm),
            encoder=EncoderConfig(**d["encoder"]),
            projector=ProjectorConfig(**d["projector"]),
            decoders=decoders,
            **rest,
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "NextGPTConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json in {folder}")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_name(cls, name: str) -> "NextGPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return PRESETS[name]()

    def replace(self, **changes: Any) -> "NextGPTConfig":
        return dataclasses.replace(self, **changes)


def _nano() -> NextGPTConfig:
    """SmolLM2-135M-Instruct + a small ImageBind + small latent diffusion decoders, all on 2 CPU cores."""
    cond = 384  # the decoders' text encoder (all-MiniLM-L6-v2) width
    return NextGPTConfig(
        name="nano",
        llm=LLMConfig(
            source="gguf",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            hidden_size=576,
            num_layers=30,
            num_heads=9,
            num_kv_heads=3,
            intermediate_size=1536,
            base_vocab_size=49152,
            max_context=2048,
            template="chatml",
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.05,
        ),
        encoder=EncoderConfig(
            out_embed_dim=256,
            vision_embed_dim=128,
            vision_num_blocks=4,
            vision_num_heads=4,
            audio_embed_dim=128,
            audio_num_blocks=4,
            audio_num_heads=4,
            text_embed_dim=128,
            text_num_blocks=4,
            text_num_heads=4,
            image_size=224,
            patch_size=28,
            video_clips=4,
            audio_clips=1,
        ),
        projector=ProjectorConfig(
            d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512
        ),
        decoders=(
            DecoderSpec(Modality.IMAGE, "IMG", 4, "StableDiffusionPipeline", cond_len=16, cond_dim=cond,
                        height=64, width=64, num_inference_steps=20, guidance_scale=3.0),
            DecoderSpec(Modality.AUDIO, "AUD", 4, "AudioLDMPipeline", cond_len=1, cond_dim=cond,
                        audio_seconds=2.0, num_inference_steps=20, guidance_scale=3.0),
            DecoderSpec(Modality.VIDEO, "VID", 4, "TextToVideoSDPipeline", cond_len=16, cond_dim=cond,
                        height=64, width=64, num_frames=8, num_inference_steps=20, guidance_scale=3.0),
        ),
        caption_encoder="all-MiniLM-L6-v2",
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    )


def _nextgpt_7b() -> NextGPTConfig:
    """The official release: Vicuna-7B v0 + ImageBind-huge + SD v1.5 + Zeroscope v2 576w + AudioLDM-l-full."""
    return NextGPTConfig(
        name="nextgpt-7b",
        llm=LLMConfig(
            source="hf",
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            num_kv_heads=32,
            intermediate_size=11008,
            base_vocab_size=32000,
            max_context=2048,
            template="vicuna_v0",
            max_new_tokens=246,  # the official demo's limit
            lora_r=32,
            lora_alpha=32,
            lora_dropout=0.1,
        ),
        encoder=EncoderConfig(video_crops=3),
        projector=ProjectorConfig(),
        decoders=(
            # order = the official vocabulary order: <Img> </Img> [IMG0-3] [VID0-23] [AUD0-7]
            DecoderSpec(Modality.IMAGE, "IMG", 4, "StableDiffusionPipeline", cond_len=77, cond_dim=768,
                        height=512, width=512),
            # the official demo's settings (inference.py, demo_app.py): 50 steps, guidance 7.5 everywhere
            DecoderSpec(Modality.VIDEO, "VID", 24, "TextToVideoSDPipeline", cond_len=77, cond_dim=1024,
                        height=320, width=576, num_frames=24, num_inference_steps=50, guidance_scale=7.5),
            DecoderSpec(Modality.AUDIO, "AUD", 8, "AudioLDMPipeline", cond_len=1, cond_dim=512,
                        audio_seconds=9.0, num_inference_steps=50, guidance_scale=7.5),
        ),
        default_system="",  # the official checkpoint was trained without a system text
    )


def _tiny() -> NextGPTConfig:
    """nano's layout (SmolLM2's tokenizer, the template, the signal tokens) at toy widths, for random-weight models
    on the CPU: the tests and the app's stand-in (app/standin.py) build it with nextgpt/tiny.py, and the 7B
    benchmark's toy scale (nextgpt/synthetic.py) takes its widths. No weights exist for it."""
    nano = _nano()
    sizes: dict[Modality, dict[str, Any]] = {
        Modality.IMAGE: dict(height=32, width=32),
        Modality.AUDIO: dict(audio_seconds=0.5),
        Modality.VIDEO: dict(height=32, width=32, num_frames=3),
    }
    return NextGPTConfig(
        name="tiny",
        llm=dataclasses.replace(nano.llm, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                intermediate_size=128, max_context=512),
        # 56 px images (2x2 patches of 28) and 1 s of 64-bin audio keep every tower to one small block
        encoder=EncoderConfig(
            out_embed_dim=16, vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
            audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
            text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
            image_size=56, patch_size=28, video_clips=2, audio_clips=1, audio_clip_seconds=1.0,
            audio_num_mel_bins=64, audio_target_len=100,
        ),
        projector=ProjectorConfig(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64),
        decoders=tuple(dataclasses.replace(spec, cond_len=1 if spec.pooled else 16, cond_dim=32, num_inference_steps=2,
                                           **sizes[spec.modality]) for spec in nano.decoders),
        caption_encoder=nano.caption_encoder,
        default_system="",  # short prompts: a toy context of 512 tokens
    )


PRESETS = {"nano": _nano, "nextgpt-7b": _nextgpt_7b, "tiny": _tiny}
MODEL_PRESETS = ("nano", "nextgpt-7b")  # the presets a model is loaded for (`--preset`); tiny has no weights
QUANTIZATIONS = ("none", "8bit", "4bit")  # of the LLM only, chosen at load time (nextgpt/llm.py)


@dataclass(frozen=True)
class GenerationSettings:
    """What a caller may change per turn (the app's settings panel)."""

    max_new_tokens: int | None = None  # None = the preset's default (LLMConfig.max_new_tokens)
    temperature: float = 0.0  # 0 = greedy (the official demo's top_p 0.01 is greedy in effect)
    top_p: float = 1.0
    num_inference_steps: int | None = None  # None = the decoder spec's default
    guidance_scale: float | None = None
    num_frames: int | None = None
    audio_seconds: float | None = None
    seed: int = 0
    modalities: tuple[Modality, ...] = field(default_factory=lambda: tuple(Modality))  # every registered one

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= 4096:
            raise ValueError("max_new_tokens must be in 1..4096")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be in 0..5")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.num_inference_steps is not None and not 1 <= self.num_inference_steps <= 1000:
            raise ValueError("num_inference_steps must be in 1..1000")
        if self.num_frames is not None and not 2 <= self.num_frames <= 64:
            raise ValueError("num_frames must be in 2..64")
        if self.audio_seconds is not None and not 0.5 <= self.audio_seconds <= 30:
            raise ValueError("audio_seconds must be in 0.5..30")
