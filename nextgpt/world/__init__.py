"""A deterministic procedural multimodal world: coloured shapes, beeps and buzzes, moving shapes.

vocab   - attribute words per modality, spec dataclasses, sampling, edits
render  - drawing and sound synthesis from plain numbers
judge   - rule-based read-back of attributes from raw media and from free-text captions
prompts - every phrasing used in records
messages - a record's turns as chat messages (the format `NextGPT.chat` and training take)
records - train/val/test splits in the official NExT-GPT record formats (CLI: python -m nextgpt.world.records)
"""

from typing import Callable

from nextgpt.world.judge import judge_audio, judge_image, judge_video, parse_caption
from nextgpt.world.messages import record_to_messages
from nextgpt.world.vocab import (ATTRIBUTES, CAPTION_TEMPLATES, COLOURS, MEDIA_TOKENS, MODALITIES, SAMPLE_RATE,
                                 VIDEO_FPS, WORLD_GISTS, WORLD_PHRASES, AudioSpec, ImageSpec, Spec, VideoSpec,
                                 random_edit, sample_audio_spec, sample_image_spec, sample_spec, sample_video_spec)

# modality -> judge(arr, sample_rate=SAMPLE_RATE) -> attribute words read back from one produced item (None when
# unreadable); one signature for every modality, the sample rate read by audio's only
JUDGES: dict[str, Callable[..., dict[str, str | None]]] = {
    "image": lambda arr, sample_rate=SAMPLE_RATE: judge_image(arr),
    "audio": judge_audio,
    "video": lambda arr, sample_rate=SAMPLE_RATE: judge_video(arr),
}

# records.py doubles as a CLI (python -m nextgpt.world.records); importing it lazily keeps runpy from
# warning that the module was already imported by its package.
_RECORDS_API = ("KINDS", "SPLITS", "SPLIT_SIZES", "TASKS", "TASK_SIZES", "Task", "Turn", "decode_video", "encode_videos", "ensure_split", "load_records",
                "make_split", "read_media", "sample_dialogue", "write_media")


def __getattr__(name: str):
    if name in _RECORDS_API:
        from nextgpt.world import records
        return getattr(records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTRIBUTES", "CAPTION_TEMPLATES", "COLOURS", "JUDGES", "MEDIA_TOKENS", "MODALITIES", "SAMPLE_RATE", "VIDEO_FPS",
    "WORLD_GISTS", "WORLD_PHRASES", "AudioSpec", "ImageSpec", "Spec", "VideoSpec", "judge_audio", "judge_image",
    "judge_video", "parse_caption", "random_edit", "record_to_messages", "sample_audio_spec", "sample_image_spec",
    "sample_spec", "sample_video_spec", *_RECORDS_API,
]
