"""A tuning stage is data: what trains, on which records, with which losses. How long and how fast each stage
trains in the nano recipe (steps, batch, learning rate) is the recipe's (nextgpt/training/recipe.py): the plans
take those numbers from it, so `scripts/train_stage*.py` without flags train as the recipe does.

| stage | trains | data | losses |
|---|---|---|---|
| 1 encoding-side alignment | input projection | X-caption pairs | CE on the caption |
| 2 decoding-side alignment | output projectors + signal-token rows | caption -> "<caption> [IMG0..]" | CE + L2 to the decoder's caption encoding |
| 3 MosIT instruction tuning | LoRA + both projections (+ rows) | T2M + dialogues + X-caption + general chat: first as they come (`stage3_plain`), then mixed per kind (`stage3`) | CE + L2 |
"""

from __future__ import annotations

from dataclasses import dataclass

from nextgpt.training.recipe import stage_settings


@dataclass(frozen=True)
class StagePlan:
    name: str
    trains: tuple[str, ...]  # subset of: input_proj, output_proj, token_rows, lora
    losses: tuple[str, ...]  # ce, l2
    data: tuple[str, ...]  # record kinds (see nextgpt.training.data)
    saves: tuple[str, ...]  # checkpoint parts written (see loading.save_checkpoint)
    lr: float  # nano: the recipe's (official: 4e-4 / 4e-4 / 5e-4)
    steps: int  # nano: the recipe's (a full epoch on real data for the 7B preset)
    batch_size: int
    max_len: int  # tokens per example
    warmup: int = 20
    l2_weight: float = 1.0
    mix: tuple[tuple[str, float], ...] = ()  # per record kind, how many times its examples appear (default 1;
    # a fraction keeps a seeded subset): a small kind (general chat) is repeated so that steps actually see it

    def repeats(self, kind: str) -> float:
        return dict(self.mix).get(kind, 1.0)


_STAGE3 = dict(trains=("lora", "input_proj", "output_proj", "token_rows"), losses=("ce", "l2"),
               data=("t2m", "mosit", "caption", "general"), saves=("input", "output", "rows", "lora"), max_len=128)

PLANS = {
    "stage1": StagePlan("stage1", trains=("input_proj",), losses=("ce",), data=("caption",), saves=("input",),
                        max_len=56, **stage_settings("stage1")),
    "stage2": StagePlan("stage2", trains=("output_proj", "token_rows"), losses=("ce", "l2"), data=("generation",),
                        saves=("output", "rows"), max_len=56, **stage_settings("stage2")),
    # stage 3 starts on its records as they come, then trains on with the mix
    "stage3_plain": StagePlan("stage3_plain", **_STAGE3, **stage_settings("stage3_plain")),
    "stage3": StagePlan("stage3", **_STAGE3, **stage_settings("stage3"),
                        # per step of 8 on the standard world v3: ~2.0 instructions, ~4.0 MosIT records (a third random
                        # dialogues, two thirds task records), ~0.8 captions, ~1.1 general chat (self-distilled)
                        mix=(("t2m", 0.5), ("mosit", 1.0), ("caption", 0.2), ("general", 18.0))),
}
