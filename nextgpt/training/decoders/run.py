"""Every chosen part of every chosen modality, in order: the decoders' orchestration (scripts/train_decoders.py).

A part whose summary says it trained the recipe's steps, with its component in the folder, is skipped; every
other part starts (or resumes from ``<run_dir>/<modality>/<part>/state``), trains and writes its component.
The world's terms of the losses come in as `DecoderHooks` (nextgpt.world.training).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from nextgpt.config import Modality, NextGPTConfig
from nextgpt.training.decoders.components import (decoder_folder, ensure_folder, fresh_component, load_pipeline,
                                                  register_class, save_component, weights_digest,
                                                  with_frame_positions)
from nextgpt.training.decoders.evaluation import METRICS_FILE, evaluate, merge_metrics
from nextgpt.training.decoders.media import load_media
from nextgpt.training.decoders.settings import (COMPONENT, RECIPES, SMOKE_LIMIT, SMOKE_SIZES, DecoderTrainArgs,
                                                _settings)
from nextgpt.training.decoders.unet import sampler_for, train_unet
from nextgpt.training.decoders.vae import cache_latents, train_vae
from nextgpt.training.decoders.vocoder import train_vocoder
from nextgpt.training.loop import main_first, on_main
from nextgpt.world.training import DecoderHooks, decoder_hooks

log = logging.getLogger(__name__)


def run_part(cfg: NextGPTConfig, args: DecoderTrainArgs, modality: Modality, part: str,
             *, hooks: DecoderHooks | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or evaluate) one part of one modality; returns its summary. `hooks`: the world's terms of the
    losses (default: nextgpt.world.training's)."""
    hooks = hooks or decoder_hooks()
    recipe = RECIPES[modality]
    run_dir = args.run_dir / modality.value
    part_dir = run_dir / part
    if part == "eval":  # on the main process (under accelerate launch the others wait)
        metrics: dict[str, Any] = {}

        def measure() -> None:
            plan = (1, 1) if args.smoke else None
            metrics.update(evaluate(cfg, args.out, args.data, modality, split=args.eval_split, plan=plan,
                                    num_inference_steps=2 if args.smoke else None))
            metrics["training"] = {p: _read_json(run_dir / p / "summary.json") for p in recipe.parts}
            merge_metrics(args.out / "decoders" / METRICS_FILE, modality, metrics)
            log.info("%s eval: %s", modality.value, {k: v for k, v in metrics.items() if k.startswith(("acc", "lat"))})

        on_main(measure)
        return metrics
    if part not in recipe.parts:
        raise ValueError(f"the {modality.value} decoder has no {part!r} part; it has {list(recipe.parts)}")
    settings = _settings(args, recipe, part)
    component = COMPONENT.get(part, part)
    done = _read_json(part_dir / "summary.json")
    if done and done.get("steps") == settings.steps and (decoder_folder(args.out, modality) / component).is_dir():
        log.info("%s %s: already trained (%s); delete %s to train again", modality.value, part, done["final"], part_dir)
        return done
    sizes = SMOKE_SIZES if args.smoke else recipe.sizes
    folder = main_first(lambda: ensure_folder(cfg, modality, args.out, sizes, args.seed))
    limit = SMOKE_LIMIT if args.smoke and args.limit is None else args.limit
    media = main_first(lambda: load_media(args.data, modality, run_dir / "media.pt", limit=limit))
    decoders, pipe = load_pipeline(cfg, args.out, modality)
    if part != "vae_decoder" and not args.from_checkpoint:  # every other part starts from scratch by default
        setattr(pipe, part, fresh_component(cfg.decoder(modality), sizes, part, args.seed))
    if part == "unet":
        pipe.unet = with_frame_positions(pipe.unet, settings)
    if part in ("vae", "vae_decoder"):
        module, summary = train_vae(pipe, media, settings, part_dir, seed=args.seed,
                                    decoder_only=part == "vae_decoder", fresh=not args.from_checkpoint,
                                    foreground=hooks.foreground, stop_after=stop_after)
    elif part == "vocoder":
        module, summary = train_vocoder(pipe, media, settings, part_dir, seed=args.seed, stop_after=stop_after)
    else:
        latents = main_first(lambda: cache_latents(pipe.vae, media, run_dir / "latents.pt",
                                                   weights_digest(folder / "vae")))
        module, summary = train_unet(decoders, pipe, cfg.decoder(modality), media, latents, settings, part_dir,
                                     seed=args.seed, contrast=hooks.contrast, stop_after=stop_after)
        if "stopped_at" not in summary:  # the sampler must predict what the UNet learnt, on the same betas
            pipe.scheduler = sampler_for(pipe.scheduler, settings)
            on_main(lambda: pipe.scheduler.save_pretrained(folder / "scheduler"))
    if "stopped_at" not in summary:
        def write() -> None:
            save_component(module, folder / component)
            register_class(folder, component, module)
            log.info("%s %s: written to %s (%s)", modality.value, part, folder / component, summary["final"])

        on_main(write)
    return summary


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run(args: DecoderTrainArgs, *, stop_after: int | None = None) -> dict[str, Any]:
    """Every chosen part of every chosen modality, in order; 'all' ends with the evaluation."""
    torch.set_num_threads(args.threads)
    cfg = NextGPTConfig.from_name("nano")
    modalities = [m.value for m in Modality] if args.modality == "all" else [args.modality]
    results: dict[str, Any] = {}
    for name in modalities:
        modality = Modality(name)
        recipe = RECIPES[modality]
        parts = [*recipe.parts, "eval"] if args.part == "all" else [args.part]
        for part in parts:
            if args.modality == "all" and part not in (*recipe.parts, "eval"):
                log.info("%s has no %s part; skipped", name, part)
                continue
            start = time.perf_counter()
            results[f"{name}/{part}"] = run_part(cfg, args, modality, part, stop_after=stop_after)
            log.info("%s %s: %.1f s", name, part, time.perf_counter() - start)
            if stop_after is not None and "stopped_at" in results[f"{name}/{part}"]:
                return results
    return results
