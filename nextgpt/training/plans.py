"""A tuning stage is data: what trains, on which records, with which losses.

| stage | trains | data | losses |
|---|---|---|---|
| 1 encoding-side alignment | input projection | X-caption pairs | CE on the caption |
| 2 decoding-side alignment | output projectors + signal-token rows | caption -> "<caption> [IMG0..]" | CE + L2 to the decoder's caption encoding |
| 3 MosIT instruction tuning | LoRA + both projections (+ rows) | T2M + dialogues + X-caption + general chat | CE + L2 |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StagePlan:
    name: str
    trains: tuple[str, ...]  # subset of: input_proj, output_proj, token_rows, lora
    losses: tuple[str, ...]  # ce, l2
    data: tuple[str, ...]  # record kinds (see nextgpt.training.data)
    saves: tuple[str, ...]  # checkpoint parts written (see loading.save_checkpoint)
    lr: float  # official: 4e-4 / 4e-4 / 5e-4
    steps: int  # nano defaults (a full epoch on real data for the 7B preset)
    batch_size: int
    max_len: int  # tokens per example
    warmup: int = 20
    l2_weight: float = 1.0
    mix: tuple[tuple[str, float], ...] = ()  # per record kind, how many times its examples appear (default 1;
    # a fraction keeps a seeded subset): a small kind (general chat) is repeated so that steps actually see it

    def repeats(self, kind: str) -> float:
        return dict(self.mix).get(kind, 1.0)


# The stages as scripts/train_nano.sh runs them; docs/training.md says what made the shipped checkpoint.
PLANS = {
    "stage1": StagePlan("stage1", trains=("input_proj",), losses=("ce",), data=("caption",),
                        saves=("input",), lr=2e-3, steps=450, batch_size=8, max_len=56),
    "stage2": StagePlan("stage2", trains=("output_proj", "token_rows"), losses=("ce", "l2"), data=("generation",),
                        saves=("output", "rows"), lr=1e-3, steps=150, batch_size=8, max_len=56),
    "stage3": StagePlan("stage3", trains=("lora", "input_proj", "output_proj", "token_rows"), losses=("ce", "l2"),
                        data=("t2m", "mosit", "caption", "general"), saves=("input", "output", "rows", "lora"),
                        lr=5e-4, steps=700, batch_size=8, max_len=128,
                        # per step of 8: ~2.4 instructions, ~3.2 dialogues, ~1 caption, ~1.3 general chat (self-distilled)
                        mix=(("t2m", 0.5), ("mosit", 2.0), ("caption", 0.2), ("general", 18.0))),
}
