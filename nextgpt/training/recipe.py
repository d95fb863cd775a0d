"""The nano recipe as data: the ordered steps that build checkpoints/nano from nothing, each with the trainer it
runs and every setting, and the minutes it is expected to take on 2 CPU cores.

    python -m nextgpt train --recipe nano --list     # the steps and their settings
    python -m nextgpt train --recipe nano            # run them (resumable; nextgpt/training/run_recipe.py)

A step names one runner (`RUNNERS`) and passes `settings` to it as the trainer's own arguments: the world's
flags, `EncoderTraining`, `DecoderTrainArgs` (+ `PartSettings` overrides in `set`), `StageArgs` (+ the stage plan
in nextgpt/training/plans.py, whose step counts and learning rates come from here), `AlignArgs`. `run_dir` is
relative to the runs folder. `stop_after` makes a step one resumable part of a longer run: it trains until that
step of the run and the next recipe step continues the same run folder. A `lanes` step runs its lanes at once,
one process and one torch thread each, each lane's steps in order, each step in a fresh process: the nano recipe
trains its LLM side (the encoder, the stages, the alignment) beside its decoders, which share nothing but the
world.

Minutes: `basis` says where each figure comes from: "measured" ones are seconds per step of this recipe's own
from-scratch run, one thread per lane, times the planned steps; "estimate" marks the rest (`_S` says how each was
taken). Adding a setting to a trainer is adding a key to its steps here (the runner passes every key through).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

RUNNERS = ("world", "general_chat", "encoder", "decoders", "stage", "align", "fp16", "world_profile", "lanes")


@dataclass(frozen=True)
class Step:
    """One step of a recipe."""

    name: str  # unique in the recipe: --from / --only and the state file's key
    runs: str  # one of RUNNERS
    settings: dict[str, Any] = field(default_factory=dict)  # the trainer's arguments, every one explicit
    minutes: float = 0.0  # expected wall time on 2 CPU cores (a lanes step: its slowest lane)
    basis: str = ""  # where `minutes` comes from ("measured: ..." or "estimate: ...")
    lanes: tuple[tuple["Step", ...], ...] = ()  # runs == "lanes": these steps, each lane in its own process
    note: str = ""  # why the step is as it is, when the settings alone do not say

    def __post_init__(self) -> None:
        if self.runs not in RUNNERS:
            raise ValueError(f"step {self.name}: runs {self.runs!r} is not one of {RUNNERS}")
        if (self.runs == "lanes") != bool(self.lanes):
            raise ValueError(f"step {self.name}: a lanes step, and only a lanes step, has lanes")

    def leaves(self) -> Iterator["Step"]:
        """This step, or the steps of its lanes (lane by lane)."""
        if self.lanes:
            for lane in self.lanes:
                yield from lane
        else:
            yield self


def _decoder(name: str, modality: str, part: str, steps: int, batch_size: int, lr: float, minutes: float,
             basis: str, *, run_dir: str = "decoders", stop_after: int | None = None, from_checkpoint: bool = False,
             settings: dict[str, Any] | None = None, note: str = "") -> Step:
    """A decoder part: `DecoderTrainArgs` fields, `set` = `PartSettings` overrides on top of the part's defaults
    in nextgpt/training/decoders.py (RECIPES)."""
    return Step(name, "decoders", {"modality": modality, "part": part, "steps": steps, "batch_size": batch_size,
                                   "lr": lr, "seed": 0, "run_dir": run_dir, "from_checkpoint": from_checkpoint,
                                   "stop_after": stop_after, "set": dict(settings or {})},
                minutes, basis, note=note)


def _stage(name: str, plan: str, steps: int, lr: float, minutes: float, basis: str, *, run_dir: str | None = None,
           stop_after: int | None = None, modality: str | None = None, note: str = "") -> Step:
    """An LLM-side stage: `StageArgs` fields; what trains, on which records, is the plan's (plans.py)."""
    return Step(name, "stage", {"stage": plan, "steps": steps, "batch_size": 8, "lr": lr, "seed": 0,
                                "limit": None, "modality": modality, "run_dir": run_dir or name,
                                "stop_after": stop_after, "threads": 1}, minutes, basis, note=note)


def _lanes(name: str, lanes: tuple[tuple[Step, ...], ...], note: str = "") -> Step:
    """Steps run in parallel lanes; expected minutes: the slowest lane's."""
    sums = [sum(s.minutes for s in lane) for lane in lanes]
    slowest = sums.index(max(sums))
    kinds = {s.basis.split(":")[0] for s in lanes[slowest]}
    basis = f"{'estimate' if 'estimate' in kinds else 'measured'}: lane {slowest + 1}, the slowest"
    return Step(name, "lanes", minutes=max(sums), basis=basis, lanes=lanes, note=note)


def _align(modality: str, limit: int, minutes: float, basis: str) -> Step:
    """Output projector alignment on cached signal states: `AlignArgs` fields."""
    return Step(f"align_{modality}", "align",
                {"modality": modality, "limit": limit, "steps": 2000, "batch_size": 64, "lr": 1e-3,
                 "weight_decay": 0.01, "max_len": 192, "seed": 0, "standardize": True, "fresh": True,
                 "threads": 1, "run_dir": f"projectors_std_{modality}"}, minutes, basis,
                note="2000 steps (the shipped projectors: 4000); see docs/training.md, Time")


# seconds per step on one torch thread beside the other lane (see `Step.basis`): "measured" ones come from this
# recipe's from-scratch run (runs/v2: the step's wall time over its steps, caches and evaluations included, or the
# median speed of its log.jsonl where the machine was shared for part of the step), "estimate" ones from the
# shipped runs (the two VAEs, on one thread)
_S: dict[str, tuple[float, str]] = {
    "image_vae": (267.8 / 700, "measured"), "image_unet": (1002.8 / 2200, "measured"),
    "audio_vae": (444.6 / 400, "estimate"), "audio_vocoder": (226.8 / 700, "measured"),
    "audio_unet": (0.85, "measured"), "video_vae": (996.5 / 700, "estimate"), "video_unet": (0.68, "measured"),
    "video_vae_decoder": (120.4 / 400, "measured"), "video_unet_sign": (1.05, "measured"),
    "video_vae_decoder_fg": (300.2 / 800, "measured"), "encoder": (1453.0 / 683, "measured"),
    "stage1": (813.0 / 220, "measured"), "stage2": (544.4 / 150, "measured"),
    "stage3_plain": ((516.7 + 200 * 7.8) / 200, "measured"),  # its features (shared) + its unshared speed
    # stage3_1 and stage3_3's wall times less the 339.8 s each spent encoding its uploads, which the parts now read
    # from the features file stage3_plain writes (0.6 s; scripts/bench_training_inputs.py, one thread)
    "stage3": ((1708.9 - 339.8 + 1614.0 - 339.8) / (170 + 160), "estimate"),
    "stage1_video": (589.1 / 150, "measured"),
}


# the align steps, rerun with the signal-state pass that cuts, sorts and skips the LM head on a copy of the
# from-scratch run's weights (`--only`; the same train blocks, val within a point of the run's): seconds on one
# thread, and how they were taken (the states alone had taken 1965 / 2001 / 1789 s in the from-scratch run)
_ALIGN_S: dict[str, tuple[float, str]] = {
    "video": (1315.0, "CPU time (wall 1908 s, the machine shared)"),
    "image": (1204.0, "CPU time (wall 1814 s, the machine shared)"),
    "audio": (1050.0, "wall time, the machine otherwise idle"),
}


def _align_minutes(modality: str) -> tuple[float, str]:
    seconds, how = _ALIGN_S[modality]
    return seconds / 60, f"measured: {seconds:.0f} s, {how}"


def _m(run: str, steps: int) -> tuple[float, str]:
    """(minutes, basis) of `steps` steps at the speed of `run` on one thread."""
    seconds, kind = _S[run]
    return steps * seconds / 60, f"{kind}: {seconds:.2f} s/step on one thread"


VIDEO_UNET_SPLIT = 3500  # of its 6000 steps, the video UNet's first part (each part under the hour)
STAGE3_PARTS = (170, 340)  # stage 3's 500 steps in three resumable parts (each under the hour on one thread)

_VIDEO_SIGN = {"snr_gamma": 0.0, "high_noise_fraction": 0.5, "zero_terminal_snr": True, "frame_positions": True,
               "frame_init": 0.3, "sign_contrast": 4.0}

_ENCODER = Step("encoder", "encoder",
                {"steps": 683, "batch_size": 32, "audio_batch_size": 8, "single_clip": True, "lr": 1e-3,
                 "weight_decay": 0.05, "warmup": 40, "max_minutes": None, "seed": 0, "save_every": 50,
                 "log_every": 10, "eval_every": 150, "run_dir": "encoder"},
                *_m("encoder", 683),
                note="683 steps: where the shipped run's 14-min time budget ended it; a step count, so that the "
                     "run does not depend on the machine's speed")

# the LLM side: the encoder, then each stage on the last one's output, then the output projectors' alignment
_LLM_LANE = (
    _ENCODER,
    _stage("stage1", "stage1", 220, 3e-3, *_m("stage1", 220)),
    _stage("stage2", "stage2", 150, 1e-3, *_m("stage2", 150)),
    _stage("stage3_plain", "stage3_plain", 200, 5e-4, *_m("stage3_plain", 200),
           note="stage 3's first 200 steps, on its records without the per-kind mix"),
    _stage("stage3_1", "stage3", 500, 5e-4, *_m("stage3", STAGE3_PARTS[0]), run_dir="stage3",
           stop_after=STAGE3_PARTS[0], note="stage 3 with the data mix, trained on from stage3_plain; first part"),
    _stage("stage3_2", "stage3", 500, 5e-4, *_m("stage3", STAGE3_PARTS[1] - STAGE3_PARTS[0]), run_dir="stage3",
           stop_after=STAGE3_PARTS[1], note="continues stage3_1 (the same run folder)"),
    _stage("stage3_3", "stage3", 500, 5e-4, *_m("stage3", 500 - STAGE3_PARTS[1]), run_dir="stage3",
           note="continues stage3_2 (the same run folder)"),
    _stage("stage1_video", "stage1", 150, 1e-3, *_m("stage1_video", 150), modality="video",
           note="stage 1 again on video captions only"),
    _align("video", 0, *_align_minutes("video")),
    _align("image", 2000, *_align_minutes("image")),
    _align("audio", 2000, *_align_minutes("audio")),
)

# the decoders: each part on the parts before it of its own modality only
_DECODER_LANE = (
    _decoder("decoders_image_vae", "image", "vae", 700, 8, 1e-3, *_m("image_vae", 700)),
    _decoder("decoders_image_unet", "image", "unet", 2200, 16, 8e-4, *_m("image_unet", 2200)),
    _decoder("decoders_audio_vae", "audio", "vae", 400, 8, 1e-3, *_m("audio_vae", 400)),
    _decoder("decoders_audio_vocoder", "audio", "vocoder", 700, 8, 2e-3, *_m("audio_vocoder", 700),
             settings={"vae_mels": 0.5},
             note="HarmonicHifiGan; half of each batch's mels through the VAE just trained, as generation "
                  "hands them over"),
    _decoder("decoders_audio_unet", "audio", "unet", 4000, 16, 5e-4, *_m("audio_unet", 4000)),
    _decoder("decoders_video_vae", "video", "vae", 700, 8, 1e-3, *_m("video_vae", 700)),
    _decoder("decoders_video_unet_1", "video", "unet", 6000, 8, 8e-4, *_m("video_unet", VIDEO_UNET_SPLIT),
             stop_after=VIDEO_UNET_SPLIT, note="the first part of one 6000-step run"),
    _decoder("decoders_video_unet_2", "video", "unet", 6000, 8, 8e-4,
             *_m("video_unet", 6000 - VIDEO_UNET_SPLIT), note="continues decoders_video_unet_1"),
    _decoder("decoders_video_vae_decoder", "video", "vae_decoder", 400, 8, 5e-4,
             *_m("video_vae_decoder", 400)),
    _decoder("decoders_video_unet_sign", "video", "unet", 1900, 8, 3e-4, *_m("video_unet_sign", 1900),
             run_dir="decoders_video_sign", from_checkpoint=True, settings=_VIDEO_SIGN,
             note="trains on as UNet3DFramePositions with zero-terminal-SNR betas and a hinge: the true "
                  "caption must beat its reversed-direction twin by 2 % (weight 4), so left/right follow "
                  "the caption rather than the seed. frame_init sets the frame embeddings to 0.3 x "
                  "sinusoids before it trains on (what the shipped UNet holds)"),
    _decoder("decoders_video_vae_decoder_fg", "video", "vae_decoder", 800, 8, 5e-4,
             *_m("video_vae_decoder_fg", 800), run_dir="decoders_video_fg",
             settings={"foreground_weight": 10.0},
             note="the decoder alone (latents, hence the UNet, unchanged) with 10x loss weight on the "
                  "shape's pixels, so that hue (blue vs purple) survives the round trip"),
)

NANO: tuple[Step, ...] = (
    Step("world", "world", {"seed": 0, "train": 2000, "val": 200, "test": 200, "dialogues": 1.0,
                            "train-tasks": 500, "val-tasks": 50, "test-tasks": 100, "frames": 8},
         1.0, "measured: 46.6 s"),
    Step("general_chat", "general_chat", {"out": "assets/training/general_chat.json", "max_new_tokens": 60},
         3.0, "estimate: ~100 answers of at most 60 tokens from SmolLM2-135M",
         note="the committed file is kept when it is there (it is deterministic)"),
    _lanes("train", (_LLM_LANE, _DECODER_LANE),
           note="the LLM side and the decoders share nothing but the world (the stages' L2 targets come from the "
                "frozen caption encoder), so they train side by side, one process and one thread each"),
    Step("decoders_eval", "decoders", {"modality": "all", "part": "eval", "eval_split": "test", "seed": 0,
                                       "run_dir": "decoders", "threads": 2},
         3.1, "measured: 185.8 s (152 judged samples and the VAE round trips, beside the LLM lane)"),
    Step("fp16", "fp16", {}, 0.1, "measured: seconds",
         note="the stages write the projections and LoRA in fp32 (each starts from the last one's); shipped in "
              "fp16, loaded as fp32"),
    Step("world_profile", "world_profile", {"fit": 1000, "ood": 50, "quantile": 0.995, "components": 32, "seed": 1},
         296.5 / 60, "measured: 296.5 s on 2 cores (scripts/calibrate_ood.py)",
         note="training_world.json (the world version and held-out combinations it learnt) and world.json (the "
              "\"outside its world\" notice, calibrated on the final weights)"),
)

RECIPES: dict[str, tuple[Step, ...]] = {"nano": NANO}
GOAL_MINUTES = 240  # what the nano recipe should take on 2 CPU cores (`--list` says how far the plan is from it)


def get(recipe: str) -> tuple[Step, ...]:
    if recipe not in RECIPES:
        raise ValueError(f"no recipe {recipe!r}; there are {sorted(RECIPES)}")
    return RECIPES[recipe]


def find(steps: tuple[Step, ...], name: str) -> Step:
    """The step (top-level or in a lane) called `name`."""
    for step in steps:
        for leaf in (step, *step.leaves()):
            if leaf.name == name:
                return leaf
    raise ValueError(f"no step {name!r}; the steps are {[s.name for s in steps]}")


def total_minutes(steps: tuple[Step, ...]) -> float:
    return sum(step.minutes for step in steps)


def stage_settings(name: str, recipe: str = "nano") -> dict[str, Any]:
    """steps / batch_size / lr of the recipe's first step that runs the stage plan `name` (plans.py's numbers)."""
    for step in (leaf for top in get(recipe) for leaf in top.leaves()):
        if step.runs == "stage" and step.settings["stage"] == name:
            return {k: step.settings[k] for k in ("steps", "batch_size", "lr")}
    raise ValueError(f"the {recipe} recipe runs no stage {name!r}")
