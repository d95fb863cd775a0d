#!/usr/bin/env bash
# The whole nano recipe, end to end, on 2 CPU cores. Every step is resumable: re-run after an interruption.
#
#   bash scripts/train_nano.sh            # writes data/world, runs/, and checkpoints/nano
#
# Steps: the world -> step 0 foundation parts (encoder, decoders) -> stage 1 -> stage 2 -> stage 3 -> projector alignment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=.
OUT=${OUT:-checkpoints/nano}
DATA=${DATA:-data/world}

[ -f "$DATA/test/mosit.json" ] || $PY -m nextgpt.world.records --out "$DATA" --seed 0 --train 2000 --val 200 --test 200
[ -f assets/training/general_chat.json ] || $PY scripts/make_general_chat.py --out assets/training/general_chat.json
$PY scripts/train_encoder.py --data "$DATA" --out "$OUT"
$PY scripts/train_decoders.py --data "$DATA" --out "$OUT" --modality all
$PY scripts/train_stage1.py --data "$DATA" --checkpoint "$OUT"
$PY scripts/train_stage2.py --data "$DATA" --checkpoint "$OUT"
$PY scripts/train_stage3.py --data "$DATA" --checkpoint "$OUT"
$PY scripts/train_stage1.py --data "$DATA" --checkpoint "$OUT" --run-dir runs/stage1_video --modality video --steps 150 --lr 1e-3
$PY scripts/align_projectors.py --data "$DATA" --checkpoint "$OUT"
