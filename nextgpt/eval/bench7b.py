"""The `nextgpt-7b` path measured with random weights, at the official architecture (full) or toy size (tiny).

    python -m nextgpt bench --preset nextgpt-7b --random-weights --scale full --device cuda --settings all --out DIR
    python -m nextgpt bench --preset nextgpt-7b --random-weights --scale tiny --device cpu --out DIR   # in make test

1. build a stand-in release with random weights (nextgpt/synthetic.py: Vicuna-7B v0, ImageBind-huge, SD v1.5,
   Zeroscope v2 576w, AudioLDM-l-full from nextgpt/configs/official) and convert its pytorch_model.pt with the
   code behind `python -m nextgpt convert`;
2. per setting (LLM quantization x decoder offload): load it with `NextGPT.from_preset("nextgpt-7b", ...)` and its
   three decoders, then one turn of each conversion (T->T, I->T, A->T, V->T, T->I, T->V, T->A, I+T->I) through
   `chat`, recording per phase the peak GPU memory (`torch.cuda.max_memory_allocated`, reset at every phase
   boundary), latency, time to first token and tokens/s;
3. in the reference setting (fp16, no offload) also the official way on the same weights (a fresh pipeline for
   every item, 50 steps, every medium re-encoded each turn, all fp16 resident) for the same turns, and the
   5-turn conversation both ways.
Results are written after every setting (bench.json, bench.md): a run cut short still leaves its figures. A
setting that fails is recorded with its error and the run goes on.

Random weights make time and memory real and every output meaningless: a random LLM never chooses signal
tokens, so each reply is dictated token by token (`ScriptedNextGPT`): the forward passes still run, as do the
hidden states at the signal tokens, the projectors and the decoders.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nextgpt.config import QUANTIZATIONS, GenerationSettings, Modality

log = logging.getLogger(__name__)

GB = 1024**3
OFFICIAL_STEPS = 50  # the official demo's sampler steps for every decoder
RANDOM_NOTE = ("Random weights: every component has the stated architecture and random values, so time and "
               "memory are real and every output (text, image, video, audio) is meaningless. Replies are dictated "
               "token by token (the LLM's forward passes run; its choices are replaced).")
TEXT_REPLY = ("The sea covers most of the Earth. Its water is salty, it is eleven kilometres deep at its deepest, "
              "and its currents carry heat from the equator to the poles.")


@dataclass(frozen=True)
class Setting:
    """How the LLM is quantized and whether the decoders (and encoder) are offloaded to the CPU between uses."""

    quantization: str = "none"
    offload: bool = False

    @property
    def name(self) -> str:
        return self.quantization + ("+offload" if self.offload else "")

    @classmethod
    def parse(cls, text: str) -> "Setting":
        quantization, _, rest = text.strip().partition("+")
        if quantization not in QUANTIZATIONS or rest not in ("", "offload"):
            raise ValueError(f"a setting is none|8bit|4bit, optionally +offload; not {text!r}")
        return cls(quantization, rest == "offload")


# peak GPU memory of a full turn including a 24-frame 576x320 video, per setting (GB), and the conversation ratio
TARGET_PEAK_GB = {"4bit+offload": 10.0, "8bit+offload": 14.0, "none+offload": 20.0}
TARGET_SPEEDUP = 5.0
REFERENCE = Setting("none", False)  # where the official way and the conversation run
# `--settings all`: the three memory targets first (cheap at reduced steps), then the reference (the official way
# and the conversations at full steps), then the rest; with --time-budget the last ones are the ones left out
ALL_SETTINGS = (Setting("4bit", True), Setting("8bit", True), Setting("none", True), REFERENCE, Setting("4bit", False),
                Setting("8bit", False))


def parse_settings(text: str) -> tuple[Setting, ...]:
    """"all" or a comma list such as "4bit+offload,none"."""
    return ALL_SETTINGS if text.strip() == "all" else tuple(Setting.parse(t) for t in text.split(","))


@dataclass(frozen=True)
class Bench7bConfig:
    scale: str = "tiny"  # "tiny" | "full" (nextgpt/synthetic.py)
    device: str = "cpu"
    dtype: str = "auto"  # the model's compute dtype, as `load_model` takes it (auto: half on CUDA, fp32 on the CPU)
    settings: tuple[Setting, ...] = (REFERENCE,)
    steps: int | None = None  # decoder steps outside the reference setting (None: the preset's)
    official_steps: int = OFFICIAL_STEPS  # the official way's decoder steps (fewer only to keep a CPU test short)
    max_new_tokens: int = 64
    conversation: bool = True  # the 5-turn conversation and the official way (in the reference setting)
    time_budget_s: float | None = None  # settings that would start after this are skipped (None: no limit)
    seed: int = 0
    work_dir: str | None = None  # where the stand-in release is built (default: a temp folder, removed after)

    def build_dtype(self) -> torch.dtype:
        """The stand-in's weights: float16 on CUDA (the release's), float32 on the CPU, unless `dtype` is set."""
        if self.dtype == "auto":
            return torch.float16 if self.device.startswith("cuda") else torch.float32
        from nextgpt.llm import resolve_dtype

        return resolve_dtype(self.dtype, self.device)


# ---- inputs and dictated replies ------------------------------------------------------------------------
def _image(seed: int = 0) -> np.ndarray:
    """A 512x512 RGB test image (a smooth gradient with noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:512] / 511.0
    img = np.stack([x, y, 1 - x * y], -1) * 200 + rng.integers(0, 55, (512, 512, 3))
    return img.astype(np.uint8)


def _audio(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000.0
    return (0.3 * np.sin(2 * np.pi * 440.0 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2).astype(np.float32)


def _video(frames: int, height: int, width: int) -> np.ndarray:
    """A square moving left to right over a grey background."""
    clip = np.full((frames, height, width, 3), 96, np.uint8)
    side = max(2, height // 4)
    for i in range(frames):
        x = int((width - side) * i / max(1, frames - 1))
        clip[i, height // 2 - side // 2: height // 2 + side // 2, x: x + side] = (220, 40, 40)
    return clip


def _signals(model: Any, modality: Modality) -> str:
    return "".join(model.cfg.decoder(modality).signal_tokens)


def conversions(model: Any) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """name -> (messages, the dictated reply), one turn of each conversion; replies end as the official
    training format does ("\\n###")."""
    video = model.cfg.decoder(Modality.VIDEO)
    clip = _video(video.num_frames or 8, video.height, video.width)
    img, snd = _image(), _audio()

    def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": list(parts)}]

    def text(s: str) -> dict[str, Any]:
        return {"type": "text", "text": s}

    return {
        "T->T": (user(text("Tell me about the sea.")), TEXT_REPLY + "\n###"),
        "I->T": (user({"type": "image", "array": img}, text("What is in this image?")), TEXT_REPLY + "\n###"),
        "A->T": (user({"type": "audio", "array": snd}, text("What do you hear?")), TEXT_REPLY + "\n###"),
        "V->T": (user({"type": "video", "array": clip}, text("What happens in this video?")), TEXT_REPLY + "\n###"),
        "T->I": (user(text("Show me a picture of a lighthouse.")),
                 "Here is a lighthouse. " + _signals(model, Modality.IMAGE) + "\n###"),
        "T->V": (user(text("Make a video of waves on a beach.")),
                 "Here are the waves. " + _signals(model, Modality.VIDEO) + "\n###"),
        "T->A": (user(text("Play the sound of rain.")), "Here is rain. " + _signals(model, Modality.AUDIO) + "\n###"),
        "I+T->I": (user({"type": "image", "array": img}, text("Make it a snowy evening.")),
                   "Here it is in snow. " + _signals(model, Modality.IMAGE) + "\n###"),
    }


def conversation_turns(model: Any) -> list[tuple[dict[str, Any], str]]:
    """The 5-turn mixed conversation: (user message, dictated reply)."""
    return [
        ({"role": "user", "content": [{"type": "image", "array": _image()}, {"type": "text", "text": "Describe this image."}]},
         TEXT_REPLY + "\n###"),
        ({"role": "user", "content": "Make it a night scene."}, "Here it is at night. " + _signals(model, Modality.IMAGE) + "\n###"),
        ({"role": "user", "content": "Now make a video of it."}, "Here is the video. " + _signals(model, Modality.VIDEO) + "\n###"),
        ({"role": "user", "content": "Add a sound that fits."}, "Here is the sound. " + _signals(model, Modality.AUDIO) + "\n###"),
        ({"role": "user", "content": "Thanks!"}, "You are welcome.\n###"),
    ]


# ---- measuring ------------------------------------------------------------------------------------------
class PhaseMeter:
    """Peak GPU memory per phase of a turn: `mark(label)` files the peak since the last mark under `label` and
    resets the counter. Wrapping the model's steps marks their boundaries:
        text        prompt, the LLM's forward passes and sampling
        encode      ImageBind on the user's media (+ the input projection)
        conditions  the pass over the reply for the hidden states at the signal tokens + the output projectors
        decode:X    the decoder of modality X (including loading it, for the official way)
    Off (all None) when CUDA is not in use."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        self.peaks: dict[str, float] = {}
        self._after_conditions = False

    def start(self) -> None:
        self.peaks, self._after_conditions = {}, False
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def mark(self, label: str) -> None:
        if not self.cuda:
            return
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GB
        self.peaks[label] = round(max(self.peaks.get(label, 0.0), peak), 3)
        torch.cuda.reset_peak_memory_stats()

    def finish(self) -> None:
        self.mark("finish" if self._after_conditions else "text")

    def wrap(self, model: Any) -> None:
        """Mark around `embed_media` and `_conditions` of this model instance, and around its decoders."""
        self._around(model, "embed_media", lambda *a: "text", lambda *a: "encode")

        def conditions_done(*a: Any) -> str:
            self._after_conditions = True
            return "conditions"

        self._around(model, "_conditions", lambda *a: "text", conditions_done)
        self.wrap_decoders(model.decoders)

    def wrap_decoders(self, decoders: Any) -> None:
        self._around(decoders, "generate", lambda *a: "conditions", lambda m, *a: f"decode:{Modality(m).value}")

    def _around(self, obj: Any, name: str, before: Callable[..., str], after: Callable[..., str]) -> None:
        inner = getattr(obj, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.mark(before(*args))
            out = inner(*args, **kwargs)
            self.mark(after(*args))
            return out

        setattr(obj, name, wrapped)  # an instance attribute: found before the class's method


def _peak(phases: dict[str, float]) -> tuple[float | None, str | None]:
    if not phases:
        return None, None
    phase = max(phases, key=phases.get)
    return phases[phase], phase


def run_turn(model: Any, meter: PhaseMeter, messages: list[dict[str, Any]], reply: str,
             settings: GenerationSettings) -> dict[str, Any]:
    """One dictated turn through `chat`: time, tokens, phases' peak memory, what came out."""
    model.scripts.clear()  # nothing left over from a turn that failed
    model.queue_reply(reply)
    meter.start()
    start = time.perf_counter()
    out = model.chat(messages, settings)
    latency = time.perf_counter() - start
    meter.finish()
    t = out.timings
    tokens = int(t.get("tokens", 0))
    rate = (tokens - 1) / (t["text"] - t["first_token"]) if tokens >= 2 and t["text"] > t.get("first_token", t["text"]) else None
    peak, phase = _peak(meter.peaks)
    first = t.get("first_token")
    return {
        "latency_s": round(latency, 3), "first_token_s": round(first, 4) if first is not None else None,
        "tokens": tokens, "tokens_per_s": round(rate, 2) if rate else None,
        "encode_s": round(t.get("prepare", 0.0), 3),
        "decode_s": round(sum(t.get(m.value, 0.0) for m in Modality), 3),
        "peak_gb": peak, "peak_phase": phase, "phases_gb": dict(meter.peaks),
        "outputs": {m.value: [list(a.shape) for a in out.media[m]] for m in Modality if out.media[m]},
        "text_chars": len(out.text), "notices": out.notices,
    }


def run_conversation(model: Any, meter: PhaseMeter, settings: GenerationSettings, *, reencode: bool) -> dict[str, Any]:
    """The 5 dictated turns with the model's own history (its media as assistant parts)."""
    model._embed_cache.clear()
    history: list[dict[str, Any]] = []
    turns, peaks = [], []
    start = time.perf_counter()
    for message, reply in conversation_turns(model):
        history.append(message)
        if reencode:
            model._embed_cache.clear()  # the official demo encodes every earlier medium again on every turn
        model.scripts.clear()
        model.queue_reply(reply)
        meter.start()
        out = model.chat(history, settings)
        meter.finish()
        peaks.append(_peak(meter.peaks)[0])
        t = out.timings
        items = [(m.value, a) for m in Modality for a in out.media[m]]
        turns.append({"total_s": round(t["total"], 3), "produced": [m for m, _ in items]})
        history.append({"role": "assistant", "content": [{"type": "text", "text": out.text}]
                        + [{"type": m, "array": a} for m, a in items]})
    total = time.perf_counter() - start
    return {"total_s": round(total, 3), "turns": turns,
            "peak_gb": max((p for p in peaks if p is not None), default=None)}


# ---- one setting ----------------------------------------------------------------------------------------
def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _guarded(label: str, device: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """fn()'s record, or {"error": ...} when it fails (out of memory included): one failed turn never costs the
    setting's other figures."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - recorded; the next turn runs
        log.error("%s failed: %s: %s", label, type(err).__name__, err)
        error = f"{type(err).__name__}: {err}"
    _free(device)  # outside the except block: the traceback's frames are gone by now
    return {"error": error}


def load(release: Any, converted: Path, cfg: Bench7bConfig, setting: Setting) -> Any:
    """The converted stand-in through the code users run (`NextGPT.from_preset`), its decoders loaded.
    `converted` holds the converted checkpoint and, in imagebind/, ImageBind converted from its .pth."""
    from nextgpt.model import NextGPT
    from nextgpt.synthetic import ScriptedNextGPT

    model = NextGPT.from_preset("nextgpt-7b", folder=converted, llm_path=str(release.llm_dir),
                                encoder_path=str(converted / "imagebind"), decoder_paths=release.decoder_paths,
                                device=cfg.device, dtype=cfg.dtype, quantization=setting.quantization,
                                offload=setting.offload)
    for spec in model.cfg.decoders:
        model.decoders.pipeline(spec.modality)  # loaded once, before the first turn
    return ScriptedNextGPT.adopt(model)


def run_setting(release: Any, converted: Path, cfg: Bench7bConfig, setting: Setting, record: dict[str, Any],
                save: Callable[[], None]) -> None:
    """Load, the eight conversions and, in the reference setting, the official way and the conversations;
    `record` is filled in as it goes (and saved after each part)."""
    meter = PhaseMeter(cfg.device)
    meter.start()
    start = time.perf_counter()
    model = load(release, converted, cfg, setting)
    meter.mark("load")
    cuda = meter.cuda
    record.update(load_s=round(time.perf_counter() - start, 2), load_peak_gb=meter.peaks.get("load"),
                  resident_gb=round(torch.cuda.memory_allocated() / GB, 3) if cuda else None,
                  dtype=str(model.dtype).removeprefix("torch."))
    log.info("[%s] loaded in %.1f s (resident %s GB)", setting.name, record["load_s"], record["resident_gb"])
    reference = setting == REFERENCE
    steps = None if reference else cfg.steps
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, num_inference_steps=steps)
    record["decoder_steps"] = {s.modality.value: steps or s.num_inference_steps for s in model.cfg.decoders}
    meter.wrap(model)
    record["turns"] = {}
    for name, (messages, reply) in conversions(model).items():
        model._embed_cache.clear()  # every conversion turn encodes its media (the conversation shows the cache)
        turn = _guarded(f"[{setting.name}] {name}", cfg.device,
                        lambda: run_turn(model, meter, messages, reply, settings))  # noqa: B023 - called at once
        record["turns"][name] = turn
        if "error" not in turn:
            log.info("[%s] %s: %.2f s, peak %s GB", setting.name, name, turn["latency_s"], turn["peak_gb"])
    peaks = {k: v["peak_gb"] for k, v in record["turns"].items() if v.get("peak_gb") is not None}
    if peaks:
        worst = max(peaks, key=peaks.get)
        record.update(peak_gb=peaks[worst], peak_turn=worst, peak_phase=record["turns"][worst]["peak_phase"])
    save()
    if reference and cfg.conversation:
        record["conversation"] = _guarded("5-turn conversation, ours", cfg.device,
                                          lambda: run_conversation(model, meter, settings, reencode=False))
        log.info("[%s] 5-turn conversation, ours: %s s", setting.name, record["conversation"].get("total_s"))
        save()
        run_official(model, meter, cfg, record, save)
    del model
    _free(cfg.device)


def run_official(model: Any, meter: PhaseMeter, cfg: Bench7bConfig, record: dict[str, Any],
                 save: Callable[[], None]) -> None:
    """The official way on the same weights: our resident decoders dropped; a fresh pipeline set for every item,
    all fp16 on the GPU, 50 steps, every medium re-encoded on every turn."""
    from nextgpt.decode import Decoders
    from nextgpt.eval.official_way import ReloadingDecoders

    device = cfg.device
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model_cfg = model.cfg
    model.decoders = None
    _free(device)
    reloading = ReloadingDecoders(lambda: Decoders.from_folder(model_cfg, Path("."), dtype=dtype, device=device))
    model.decoders = reloading
    meter.wrap_decoders(reloading)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                  num_inference_steps=cfg.official_steps)
    official: dict[str, Any] = {"decoder_steps": cfg.official_steps, "turns": {}}
    record["official"] = official
    for name, (messages, reply) in conversions(model).items():
        model._embed_cache.clear()
        turn = _guarded(f"[official way] {name}", device,
                        lambda: run_turn(model, meter, messages, reply, settings))  # noqa: B023 - called at once
        official["turns"][name] = turn
        log.info("[official way] %s: %s s", name, turn.get("latency_s"))
    save()
    official["conversation"] = _guarded("5-turn conversation, official way", device,
                                        lambda: run_conversation(model, meter, settings, reencode=True))
    official["decoder_loads"], official["decoder_load_s"] = reloading.loads, round(reloading.load_s, 2)
    ours = record["conversation"].get("total_s")
    theirs = official["conversation"].get("total_s")
    record["speedup"] = round(theirs / ours, 3) if ours and theirs else None
    log.info("[official way] 5-turn conversation: %s s (ours %s s: %sx)", theirs, ours, record["speedup"])
    save()


# ---- the whole run ----------------------------------------------------------------------------------------
def machine(device: str) -> dict[str, Any]:
    import diffusers
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "diffusers": diffusers.__version__,
                            "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - absent or broken: only reported
        info["bitsandbytes"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / GB, 1), cuda=torch.version.cuda)
    return info


def plan_gb(setting: Setting) -> float | None:
    """The memory plan's estimate for the full-size 7B preset (nextgpt/memory.py)."""
    from nextgpt.memory import memory_plan

    return round(memory_plan("nextgpt-7b", quantization=setting.quantization, offload=setting.offload)["peak_gb"], 2)


def run(cfg: Bench7bConfig, out: Path) -> dict[str, Any]:
    """Build, convert, then every setting; bench.json / bench.md are rewritten after each step."""
    from nextgpt.encode import load_official_imagebind
    from nextgpt.loading import convert_official_checkpoint
    from nextgpt.synthetic import build_release

    out = Path(out)
    started = time.perf_counter()
    result: dict[str, Any] = {"note": RANDOM_NOTE, "config": {**asdict(cfg), "settings": [s.name for s in cfg.settings]},
                              "machine": machine(cfg.device), "build": {}, "settings": {}}

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        write(result, out)

    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="nextgpt-bench7b-"))
    try:
        log.info("building the %s-scale stand-in release in %s", cfg.scale, work)
        t0 = time.perf_counter()
        try:
            release = build_release(work / "release", cfg.scale, device=cfg.device, dtype=cfg.build_dtype(),
                                    seed=cfg.seed)
            result["build"] = {"seconds": release.seconds, "total_s": round(time.perf_counter() - t0, 1)}
            t0 = time.perf_counter()
            converted = convert_official_checkpoint(release.official_pt, work / "converted", release.config)
            # ImageBind's .pth converted once, as the first load does, into the work folder rather than the cache
            load_official_imagebind(release.imagebind_pth, release.config.encoder, converted / "imagebind")
            result["build"]["convert_s"] = round(time.perf_counter() - t0, 1)
            for done in (release.imagebind_pth, release.official_pt):  # converted: gigabytes of disk freed
                done.unlink()
        except Exception as err:  # noqa: BLE001 - written down for the report, then raised
            result["build"].update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
            save()
            raise
        log.info("built in %.1f s, converted in %.1f s", result["build"]["total_s"], result["build"]["convert_s"])
        _free(cfg.device)
        save()
        for setting in cfg.settings:
            record: dict[str, Any] = {"quantization": setting.quantization, "offload": setting.offload}
            if cfg.scale == "full":
                try:
                    record["plan_gb"] = plan_gb(setting)
                except Exception as err:  # noqa: BLE001 - the estimate is a side note; the measurement goes on
                    log.warning("no memory plan for %s: %s", setting.name, err)
            result["settings"][setting.name] = record
            elapsed = time.perf_counter() - started
            if cfg.time_budget_s is not None and elapsed > cfg.time_budget_s:
                record.update(status="skipped", error=f"time budget of {cfg.time_budget_s:.0f} s used up "
                                                      f"({elapsed:.0f} s elapsed)")
                save()
                continue
            log.info("[%s] starting (%.0f s elapsed)", setting.name, elapsed)
            t0 = time.perf_counter()
            try:
                run_setting(release, converted, cfg, setting, record, save)
                record["status"] = "ok"
            except Exception as err:  # noqa: BLE001 - a failed setting is a result too; the next one runs
                record.update(status="error", error=f"{type(err).__name__}: {err}",
                              traceback=traceback.format_exc()[-3000:])
                log.error("[%s] failed: %s", setting.name, record["error"])
            record["seconds"] = round(time.perf_counter() - t0, 1)
            _free(cfg.device)
            save()
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    save()
    log.info("done in %.1f s", result["elapsed_s"])
    return result


# ---- the report ------------------------------------------------------------------------------------------
def write(result: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "bench.md").write_text(markdown(result))
    return {"json": str(out / "bench.json"), "md": str(out / "bench.md")}


def _f(value: Any, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(result: dict[str, Any]) -> str:
    cfg, mach = result["config"], result["machine"]
    gpu = f"{mach.get('gpu')} ({mach.get('gpu_memory_gb')} GB), CUDA {mach.get('cuda')}" if mach.get("gpu") else "no GPU (CPU)"
    lines = [f"# nextgpt-7b with random weights, {cfg['scale']} scale, {cfg['device']}", "",
             f"**{result['note']}**", "",
             f"Machine: {gpu}; torch {mach['torch']}, transformers {mach['transformers']}, diffusers "
             f"{mach['diffusers']}, bitsandbytes {mach.get('bitsandbytes')}; {mach['cpu_cores']} CPU cores. "
             + (f"**Building failed: {result['build']['error']}** " if result["build"].get("error") else "")
             + f"Run time {result.get('elapsed_s')} s; build {result['build'].get('total_s')} s "
             f"({result['build'].get('seconds')}), convert {result['build'].get('convert_s')} s.", "",
             f"Decoder steps: the reference setting (none) uses the preset's; the others use "
             f"{cfg['steps'] or 'the preset' + chr(39) + 's'} (peak memory does not depend on the step count, "
             f"latency does); the official way uses {cfg['official_steps']}"
             + ("" if cfg["official_steps"] == OFFICIAL_STEPS else f" (the official demo uses {OFFICIAL_STEPS})")
             + ". Peak memory is "
             "`torch.cuda.max_memory_allocated`, reset at every phase boundary; `plan` is `python -m nextgpt memory`'s "
             "estimate for the same setting.", "",
             "## Settings", "",
             "| setting | status | load s | resident GB | peak GB | peak in | plan GB | T->T tokens/s | T->I s | T->V s | T->A s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["settings"].items():
        turns = r.get("turns", {})
        status = r.get("status", "running") + (f": {r['error'][:160]}" if r.get("error") else "")
        lines.append(
            f"| {name} | {status} | {_f(r.get('load_s'))} | {_f(r.get('resident_gb'))} | {_f(r.get('peak_gb'))} | "
            f"{r.get('peak_turn', '-')} {r.get('peak_phase', '')} | {_f(r.get('plan_gb'))} | "
            f"{_f(turns.get('T->T', {}).get('tokens_per_s'))} | {_f(turns.get('T->I', {}).get('latency_s'))} | "
            f"{_f(turns.get('T->V', {}).get('latency_s'))} | {_f(turns.get('T->A', {}).get('latency_s'))} |")
    if cfg["scale"] == "full" and cfg["device"].startswith("cuda"):
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for name, limit in TARGET_PEAK_GB.items():
            peak = result["settings"].get(name, {}).get("peak_gb")
            lines.append(f"| peak GPU memory, {name} <= {limit:g} GB | {_f(peak)} | "
                         f"{'-' if peak is None else ('yes' if peak <= limit else '**no**')} |")
        speedup = result["settings"].get(REFERENCE.name, {}).get("speedup")
        lines.append(f"| 5-turn conversation >= {TARGET_SPEEDUP:g}x faster than the official way | {_f(speedup)} | "
                     f"{'-' if speedup is None else ('yes' if speedup >= TARGET_SPEEDUP else '**no**')} |")
    for name, r in result["settings"].items():
        if not r.get("turns"):
            continue
        official = r.get("official", {}).get("turns", {})
        lines += ["", f"## {name}: one turn of each conversion (decoder steps {r.get('decoder_steps')})", "",
                  "| conversion | latency s | first token s | tokens | tokens/s | prompt + encode s | decode s | peak GB | peak in |"
                  + (" official way s | official peak GB |" if official else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if official else "")]
        for conv, t in r["turns"].items():
            o = official.get(conv, {})
            if "error" in t:
                lines.append(f"| {conv} | failed: {t['error'][:200]} |" + " |" * 7 + (" |" * 2 if official else ""))
                continue
            lines.append(f"| {conv} | {_f(t['latency_s'])} | {_f(t['first_token_s'])} | {t['tokens']} | "
                         f"{_f(t['tokens_per_s'])} | {_f(t['encode_s'])} | {_f(t['decode_s'])} | {_f(t['peak_gb'])} | "
                         f"{t['peak_phase'] or '-'} |" + (f" {_f(o.get('latency_s'))} | {_f(o.get('peak_gb'))} |" if official else ""))
        done = [t for t in r["turns"].values() if "error" not in t]
        phases = {p for t in done for p in t["phases_gb"]}
        if phases:
            lines += ["", "Peak GB per phase (max over the turns): " + ", ".join(
                f"{p} {max(t['phases_gb'].get(p, 0.0) for t in done):.3g}" for p in sorted(phases))]
        conv, off = r.get("conversation"), r.get("official", {}).get("conversation")
        for way, c in (("ours", conv), ("official way", off)):
            if c and "error" in c:
                lines += ["", f"5-turn conversation, {way}: failed: {c['error'][:300]}"]
        conv = conv if conv and "error" not in conv else None
        off = off if off and "error" not in off else None
        if conv:
            lines += ["", "### 5-turn conversation (image in; image edit; video; audio; text)", "",
                      "| way | total s | peak GB | per turn s |", "|---|---|---|---|",
                      f"| ours (decoders loaded once, the preset's steps) | {_f(conv['total_s'])} | {_f(conv['peak_gb'])} | "
                      f"{[t['total_s'] for t in conv['turns']]} |"]
            if off:
                lines.append(f"| official way ({r['official']['decoder_loads']} decoder loads, "
                             f"{r['official']['decoder_load_s']} s loading, {r['official']['decoder_steps']} steps, media re-encoded) | "
                             f"{_f(off['total_s'])} | {_f(off['peak_gb'])} | {[t['total_s'] for t in off['turns']]} |")
                lines += ["", f"Ours is **{_f(r.get('speedup'))}x** faster than the official way over the 5 turns.",
                          "", "The official way reuses this project's decoder code for each fresh pipeline (VAE slicing "
                          "included), so its peak memory here is, if anything, below the official code's."]
    return "\n".join(lines) + "\n"
