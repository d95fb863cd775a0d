"""A small study on disk with scripted answers, shared by tests/test_study.py and tests/test_study_app.py.

    folder = write_study(tmp_path / "toy")          # 12 items (4 conversions) + 1 gold item, two systems
    prepare(load_study(folder), *scripted_models())  # answers "... quality 7." without a model

Each answer states its quality in its text, so scripted raters can score by what they see while the test
alone knows which system gave it: system two is always 2 better than system one on the same item.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt.config import Modality
from nextgpt.media import save_image
from nextgpt.world import ImageSpec

SYSTEMS = ("sysone-hidden", "systwo-hidden")  # must never reach a rater
LABELS = ("LABEL-ONE-HIDDEN", "LABEL-TWO-HIDDEN")
STEPS = (3, 7)  # the systems' settings: the scripted model tells them apart by these
CONVERSIONS = ("T->I", "I->T", "T->T", "T->A")


def quality(item_index: int, system: int) -> int:
    return 2 + item_index % 6 + 2 * system  # 2..9


def write_study(folder: Path, *, mode: str = "pairwise", items_per_rater: int | None = 6) -> Path:
    (folder / "media").mkdir(parents=True, exist_ok=True)
    save_image(ImageSpec("circle", "red", 30, 32.0, 32.0).render(), folder / "media" / "input.png")
    save_image(ImageSpec("square", "blue", 30, 32.0, 32.0).render(), folder / "media" / "wrong.png")
    lines = []
    for n in range(12):
        conversion = CONVERSIONS[n % 4]
        media = [{"type": "image", "path": "media/input.png"}] if conversion == "I->T" else []
        lines.append({"id": f"q{n:02d}", "conversion": conversion, "prompt": f"Question number {n}?", "media": media,
                      "reference": f"reference {n}"})
    lines.append({"id": "q99", "conversion": "T->I", "prompt": "Question number 99?",
                  "gold": [{"content": [{"type": "text", "text": "Obviously right."}], "expect": [7, 10]},
                           {"content": [{"type": "text", "text": "Obviously wrong."},
                                        {"type": "image", "path": "media/wrong.png"}], "expect": [1, 3]}]})
    meta = {"name": "toy", "title": "Toy study", "instructions": "Score each answer.", "mode": mode,
            "raters_per_item": 3, "items_per_rater": items_per_rater, "seed": 5,
            "systems": [{"id": s, "preset": "nano", "settings": {"num_inference_steps": k}, "label": label}
                        for s, k, label in zip(SYSTEMS, STEPS, LABELS)],
            "rubrics": {"default": {"1": "bad", "5": "so-so", "10": "perfect"},
                        "T->I": {"1": "no image", "10": "right"}}}
    (folder / "study.json").write_text(json.dumps(meta))
    (folder / "questions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


class ScriptedModel:
    """chat() -> a Reply whose text says its quality; T->I items also get an image."""

    def __init__(self) -> None:
        self.calls = 0

    def chat(self, messages: list[dict[str, Any]], settings: Any) -> Any:
        from nextgpt.model import Reply

        self.calls += 1
        text = messages[-1]["content"][-1]["text"]
        n = int(re.search(r"number (\d+)", text).group(1))
        system = STEPS.index(settings.num_inference_steps)
        q = quality(n, system)
        images = [np.full((8, 8, 3), 20 * q, np.uint8)] if CONVERSIONS[n % 4] == "T->I" else []
        return Reply(text=f"My answer has quality {q}.", media={Modality.IMAGE: images})


def scripted_models(model: ScriptedModel | None = None) -> tuple[Any, Any]:
    """(load_model, weights_of) for `prepare`: every system answered by one ScriptedModel, weights "weights-v1"."""
    model = model or ScriptedModel()
    return (lambda system: model), (lambda system: "weights-v1")


def shown_quality(answer: list[dict[str, Any]]) -> int:
    """The quality written in an answer as a client sees it (gr.Chatbot message)."""
    texts = [c["text"] if isinstance(c, dict) else c for c in answer[0]["content"]
             if isinstance(c, str) or c.get("type") == "text"]
    joined = " ".join(texts)
    if "Obviously right" in joined:
        return 10
    if "Obviously wrong" in joined:
        return 1
    return int(re.search(r"quality (\d+)", joined).group(1))
