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
# The video UNet trained on as UNet3DFramePositions (sinusoidal frame embeddings, scale 0.3) with zero-terminal-SNR
# betas and a hinge: the true caption must beat its reversed-direction twin by 2 % (weight 4), so left/right follow
# the caption rather than the seed.
$PY scripts/train_decoders.py --data "$DATA" --out "$OUT" --modality video --part unet --run-dir runs/decoders_video_sign \
    --from-checkpoint --steps 1900 --lr 3e-4 --set snr_gamma=0 --set high_noise_fraction=0.5 --set zero_terminal_snr=true \
    --set frame_positions=true --set frame_init=0.3 --set sign_contrast=4
# The video VAE's decoder trains on alone (latents, hence the UNet, unchanged) with 10x loss weight on the shape's
# pixels, so that hue (blue vs purple) survives the round trip, not only brightness.
$PY scripts/train_decoders.py --data "$DATA" --out "$OUT" --modality video --part vae_decoder --run-dir runs/decoders_video_fg \
    --steps 800 --set foreground_weight=10
# Every projector is aligned from fresh layers on standardized LLM states (folded back into its input layer), so
# that its condition follows the asked-for caption rather than the LLM's few large hidden dimensions.
for m in video image audio; do
    limit=$([ $m = video ] && echo 0 || echo 2000)
    $PY scripts/align_projectors.py --data "$DATA" --checkpoint "$OUT" --modality $m --limit $limit --steps 4000 --fresh \
        --run-dir runs/projectors_std_$m
done
# the stages write the projections and LoRA in fp32 (each starts from the last one's); shipped in fp16, loaded as fp32
$PY scripts/checkpoint_fp16.py "$OUT"
