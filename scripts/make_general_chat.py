"""Write general text-only chat examples answered by the base SmolLM2 itself (stage 3's anti-forgetting mix).

Stage 3 (MosIT) tunes LoRA on the nano world; mixing in the base model's own answers to ordinary questions
keeps its general chat ability (self-distillation). Run once; the result is committed as
assets/training/general_chat.json.

    python scripts/make_general_chat.py --out assets/training/general_chat.json [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from nextgpt.config import GenerationSettings, NextGPTConfig
from nextgpt.model import NextGPT

COUNTRIES = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
             ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Brazil", "Brasilia"), ("India", "New Delhi"),
             ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Peru", "Lima")]
TOPICS = ["photosynthesis", "gravity", "the water cycle", "a black hole", "democracy", "an atom", "a volcano",
          "the internet", "a rainbow", "evolution", "electricity", "a computer program", "the moon", "a virus",
          "inflation", "a haiku", "recycling", "the heart", "an earthquake", "a poem"]
TASKS = ["Give me three tips for sleeping better.", "How do I boil an egg?", "Write a short greeting for a birthday card.",
         "What is 12 plus 30?", "What is 7 times 8?", "Name three fruits.", "Suggest a name for a pet cat.",
         "How many months are in a year?", "What colour is the sky on a clear day?", "Translate 'thank you' into French.",
         "Tell me a fun fact about octopuses.", "What should I pack for a beach trip?", "Hello, who are you?",
         "Hi! How are you today?", "What can you do?", "Thank you!", "Write one sentence about autumn.",
         "What is the opposite of hot?", "Recommend a good habit for students.", "How do plants drink water?"]
# Text-only questions that use the world's words (colours, shapes, sounds, motion): the answer is text, never a
# picture, a sound or a video. None of them is one of the evaluation's held-out text-only requests.
WORLD_WORDS = ["What colour do you get when you mix blue and yellow?", "How many sides does a square have?",
               "What is a circle?", "Name three shapes.", "What colour is a ripe tomato?",
               "What makes a sound high or low?", "Is orange a colour or a fruit?", "What is your favourite colour?",
               "Why do bees buzz?", "What does it mean to turn left?", "Describe the colour green in one sentence.",
               "How many corners does a triangle have?", "What is a video?", "What is the difference between a "
               "picture and a photo?", "Which is bigger, a square or a circle?", "What colour are most leaves?",
               "Why do some sounds hurt our ears?", "What is purple made of?", "Can red and green be mixed?",
               "What does a low voice sound like?", "What is a beep?", "Which direction does the sun rise in?",
               "What is a tone in music?", "Tell me one thing that is blue.", "How fast does sound travel?",
               "What is a square number?", "Write a sentence with the word yellow.", "Is white a colour?",
               "What shape is a wheel?", "How do you draw well? Give one tip."]


def questions() -> list[str]:
    qs = [f"What is the capital of {c}?" for c, _ in COUNTRIES]
    qs += [f"Explain {t} in one or two sentences." for t in TOPICS]
    qs += [f"What is {t}?" for t in TOPICS[:10]]
    return qs + TASKS + WORLD_WORDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/training/general_chat.json"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=60)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as base:  # the preset's config only: no LoRA, no trained rows
        NextGPTConfig.from_name("nano").save(Path(base))
        model = NextGPT.from_preset("nano", folder=Path(base), load_encoder=False, load_decoders=False)
    qs = questions()[: args.limit]
    rows = []
    for q in tqdm(qs, desc="base-model answers"):
        reply = model.chat([{"role": "user", "content": q}], GenerationSettings(max_new_tokens=args.max_new_tokens))
        answer = reply.text
        if reply.notices:  # cut at the token limit: end at the last full sentence
            answer = answer[: answer.rfind(".") + 1] or answer
        rows.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": answer}]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    logging.info("wrote %d examples to %s (model %s)", len(rows), args.out, NextGPTConfig.from_name("nano").llm.gguf_file)


if __name__ == "__main__":
    main()
