#!/usr/bin/env bash
# The whole nano recipe, end to end, on 2 CPU cores: `python -m nextgpt train --recipe nano` (the steps and every
# setting: nextgpt/training/recipe.py; `--list` prints them). Resumable: run it again after an interruption.
#
#   bash scripts/train_nano.sh                  # writes data/world, runs/, and checkpoints/nano
#   bash scripts/train_nano.sh --from stage3_1  # any other flag of `python -m nextgpt train` is passed on
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=.
exec $PY -m nextgpt train --recipe nano --out "${OUT:-checkpoints/nano}" --data "${DATA:-data/world}" "$@"
