"""The bundled default study: 60 items over every conversion of the nano world plus general questions, two
systems (nano with 20 and with 50 diffusion steps), rated in pairs.

    python -m nextgpt.study.default          # (re)writes assets/studies/default/ (study.json, questions.jsonl, media/)

Deterministic: the items are drawn from the world with a fixed seed, and the user turns use the world's
test-split phrasings (nextgpt/world/prompts.py), which no training turn uses. The two systems differ only
in the decoders' sampler steps, with the same seed, so text-only answers (describing media, general
questions) come out the same for both and the media-producing conversions carry the comparison.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from nextgpt.config import MODALITY_INFO, Modality
from nextgpt.eval.questions import GENERAL_QUESTIONS
from nextgpt.media import save_image, save_video
from nextgpt.study.spec import STUDIES_DIR
from nextgpt.world import SAMPLE_RATE, VIDEO_FPS, ImageSpec, random_edit, sample_spec
from nextgpt.world.prompts import TEST_COMPREHENSION_PROMPTS, TEST_EDIT_PROMPTS, TEST_T2M_REQUESTS

SEED = 2024
LETTER = {"image": "I", "audio": "A", "video": "V"}
# items per conversion: describe, generate and edit each modality; general questions; gold items
COUNTS = {"describe": 6, "generate": 7, "edit": {"image": 4, "audio": 3, "video": 3}, "general": 9}
# general questions with one short right answer (their keywords become the reference) and open ones
GENERAL = ("What is the capital of Australia?", "Which planet is known as the Red Planet?",
           "Who wrote Romeo and Juliet?", "How many minutes are in an hour?", "What do bees make from nectar?",
           "What is the largest ocean on Earth?", "Why is the sky blue?", "Who are you?",
           "Write a sentence about a red bicycle.")
ATTRIBUTE_WORDS = {"image": "colour and shape", "audio": "pitch (high / low), rhythm (steady / beeping) and sound "
                   "(tone / buzz)", "video": "colour, shape and direction of motion"}

SYSTEMS = [
    {"id": "nano-20-steps", "preset": "nano", "settings": {"num_inference_steps": 20, "seed": 0},
     "label": "nano, 20 diffusion steps (the preset's default)"},
    {"id": "nano-50-steps", "preset": "nano", "settings": {"num_inference_steps": 50, "seed": 0},
     "label": "nano, 50 diffusion steps"},
]
INSTRUCTIONS = (
    "You will see a question (with any picture, sound or video it comes with) and two answers, **A** and **B**, "
    "from two anonymous assistants, in a random order. Score **each** answer from 1 to 10 with the rubric "
    "under the answers; the reference says what a right answer holds. Equal answers get equal scores. "
    "Play sounds and videos before scoring. Skip an item you cannot judge. The assistant knows one small "
    "world: coloured circles, squares and triangles; high or low, steady or beeping tones and buzzes; "
    "shapes moving left, right, up or down.")


def rubrics() -> dict[str, dict[str, str]]:
    """What 1, 5 and 10 mean per conversion type."""
    out: dict[str, dict[str, str]] = {}
    for modality, letter in LETTER.items():
        words, noun = ATTRIBUTE_WORDS[modality], MODALITY_INFO[Modality(modality)].noun
        out[f"{letter}->T"] = {
            "1": f"Wrong about the {noun} (every attribute wrong or none named), off topic, or it makes media instead.",
            "5": f"Part of it right: some of {words} right, or right but with wrong extra claims.",
            "10": f"A clear sentence with every attribute right: {words}.",
        }
        out[f"T->{letter}"] = {
            "1": f"No {noun}, or a {noun} unlike the request in every attribute (or unrecognisable).",
            "5": f"A {noun} with about half of the requested {words} right, or right but very noisy.",
            "10": f"A clean {noun} with every requested attribute right ({words}), and a short fitting text.",
        }
        out[f"T+{letter}->{letter}"] = {
            "1": f"No {noun}, or a {noun} that neither shows the change nor keeps the rest of the upload.",
            "5": f"The change is made but another attribute is lost, or the {noun} is barely recognisable.",
            "10": f"The uploaded {noun} with exactly the requested change and everything else kept ({words}).",
        }
    out["T->T"] = {
        "1": "Wrong, off topic, nonsense, or it makes an image / sound / video that nobody asked for.",
        "5": "Partly right or vague; right but with wrong or confusing extra claims.",
        "10": "Right, clear and to the point; text only.",
    }
    out["default"] = {"1": "Useless or wrong.", "5": "Half right.", "10": "Exactly what was asked, nothing wrong."}
    return out


def _save(spec: Any, path: Path) -> None:
    media = spec.render()
    if spec.modality == "image":
        save_image(media, path)
    elif spec.modality == "audio":  # FLAC: the same 16-bit samples as WAV in a quarter of the bytes
        sf.write(str(path), media, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    else:
        save_video(media, path, fps=VIDEO_FPS)


def _distinct(modality: str, rng: np.random.Generator, n: int) -> list[Any]:
    """n items of `modality` with different captions."""
    out: list[Any] = []
    while len(out) < n:
        spec = sample_spec(modality, rng)
        if spec.caption not in {s.caption for s in out}:
            out.append(spec)
    return out


def items(folder: Path) -> list[dict[str, Any]]:
    """The question set; the input media are written to folder/media."""
    rng = np.random.default_rng(SEED)
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    out: list[dict[str, Any]] = []
    for modality, letter in LETTER.items():
        ext = {"image": "png", "audio": "flac", "video": "mp4"}[modality]
        code = letter.lower()
        for n, spec in enumerate(_distinct(modality, rng, COUNTS["describe"]), 1):
            item_id = f"{code}2t-{n:02d}"
            _save(spec, media / f"{item_id}.{ext}")
            prompts = TEST_COMPREHENSION_PROMPTS[modality]
            out.append({"id": item_id, "conversion": f"{letter}->T", "prompt": prompts[n % len(prompts)],
                        "media": [{"type": modality, "path": f"media/{item_id}.{ext}"}], "reference": spec.caption})
        for n, spec in enumerate(_distinct(modality, rng, COUNTS["generate"]), 1):
            requests = TEST_T2M_REQUESTS[modality]
            out.append({"id": f"t2{code}-{n:02d}", "conversion": f"T->{letter}",
                        "prompt": requests[(3 * n) % len(requests)].format(caption=spec.caption),
                        "reference": spec.caption})
        for n, spec in enumerate(_distinct(modality, rng, COUNTS["edit"][modality]), 1):
            attribute, value, edited = random_edit(spec, rng)
            item_id = f"edit-{code}-{n:02d}"
            _save(spec, media / f"{item_id}.{ext}")
            phrasings = TEST_EDIT_PROMPTS[attribute][value]
            out.append({"id": item_id, "conversion": f"T+{letter}->{letter}", "prompt": phrasings[n % len(phrasings)],
                        "media": [{"type": modality, "path": f"media/{item_id}.{ext}"}],
                        "reference": f"{edited.caption} (the upload was {spec.caption})"})
    keywords = dict(GENERAL_QUESTIONS)
    for n, question in enumerate(GENERAL, 1):
        names = keywords[question]
        out.append({"id": f"t2t-{n:02d}", "conversion": "T->T", "prompt": question,
                    "reference": f"names {' / '.join(k.rstrip('*') for k in names)}" if names else ""})
    # gold items: one answer plainly right, one plainly wrong
    save_image(ImageSpec("circle", "red", 36, 32.0, 32.0).render(), media / "answer-10.png")
    save_image(ImageSpec("square", "blue", 36, 32.0, 32.0).render(), media / "answer-11.png")
    out.append({"id": "t2t-10", "conversion": "T->T", "prompt": "What is two plus two?", "reference": "four",
                "gold": [{"content": [{"type": "text", "text": "Two plus two is four."}], "expect": [7, 10]},
                         {"content": [{"type": "text", "text": "The capital of France is Berlin."}],
                          "expect": [1, 3]}]})
    out.append({"id": "t2i-08", "conversion": "T->I", "prompt": "Draw a red circle.", "reference": "a red circle",
                "gold": [{"content": [{"type": "text", "text": "Here is a red circle."},
                                      {"type": "image", "path": "media/answer-10.png"}], "expect": [7, 10]},
                         {"content": [{"type": "text", "text": "Here is a red circle."},
                                      {"type": "image", "path": "media/answer-11.png"}], "expect": [1, 4]}]})
    return out


def write_default(folder: str | Path = STUDIES_DIR / "default") -> Path:
    """(Re)write the default study's definition and input media (its prepared answers are left alone)."""
    folder = Path(folder)
    shutil.rmtree(folder / "media", ignore_errors=True)
    questions = items(folder)
    meta = {"name": "default", "title": "NExT-GPT nano: any-to-any questions", "instructions": INSTRUCTIONS,
            "mode": "pairwise", "raters_per_item": 3, "items_per_rater": None, "seed": 0, "systems": SYSTEMS,
            "rubrics": rubrics()}
    (folder / "study.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    with (folder / "questions.jsonl").open("w", encoding="utf-8") as f:
        for item in questions:
            f.write(json.dumps(item) + "\n")
    return folder


if __name__ == "__main__":
    print(write_default())
