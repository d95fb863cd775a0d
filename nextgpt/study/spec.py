"""What a study is: a question set, the systems that answer it and a rubric per conversion type.

    study = load_study("default")                 # assets/studies/default/, or any folder holding study.json
    study.items[0].conversion, study.systems[1].id  # "I->T", "nano-50-steps"
    study.messages(study.items[0])                # the user turn the systems answer (HF chat format)

A study folder holds:

    study.json        title, instructions, mode, raters per item, items per rater, seed, systems, rubrics
    questions.jsonl   one item a line: {"id", "conversion", "prompt", "media": [{"type", "path"}],
                      "reference", "gold": [{"content": [...], "expect": [low, high]}]}
    media/            the items' input media (paths in questions.jsonl are relative to the folder)
    prepared/         the systems' answers, written by `python -m nextgpt study prepare` (prepare.py)

Conversion types are written as the app writes them (app/handlers.py `conversion`): inputs -> outputs with
T, I, A, V, e.g. "I->T" (describe a picture), "T->V" (make a video), "T+I->I" (edit an uploaded picture).
A gold item carries fixed answers instead of the systems' (an attention check): each with the score range an
attentive rater gives it; gold items are shown to every rater and left out of the statistics.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextgpt.config import MODALITY_INFO, GenerationSettings

STUDIES_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "studies"
MODES = ("single", "pairwise")  # one answer per screen, or two (Answer A / B) side by side
MEDIA_TYPES = tuple(spec.name for spec in MODALITY_INFO.values())
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # item and system ids: safe as file names
_CONVERSION = re.compile(r"^[TIAV](\+[TIAV])*->[TIAV](\+[TIAV])*$")


class StudyError(ValueError):
    """A study folder that cannot be read (message names the file and the problem)."""


@dataclass(frozen=True)
class System:
    """One way of answering: a model (preset + checkpoint) and its generation settings. Raters never see it."""

    id: str  # e.g. "nano-50-steps"; names the answers' folder and the results' rows
    preset: str = "nano"
    checkpoint: str | None = None  # checkpoint folder (relative to the repository or absolute); None = the preset's
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationSettings fields: {"num_inference_steps": 50}
    label: str = ""  # a longer name for the admin's results

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(**self.settings)

    def record(self) -> dict[str, Any]:
        """JSON-ready description (what an answer's fingerprint covers)."""
        return {"id": self.id, "preset": self.preset, "checkpoint": self.checkpoint, "settings": self.settings}


@dataclass(frozen=True)
class GoldAnswer:
    """A fixed answer of a gold item and the scores an attentive rater gives it (inclusive)."""

    content: tuple[dict[str, Any], ...]  # parts: {"type": "text", "text"} / {"type": "image", "path"} ...
    low: int
    high: int


@dataclass(frozen=True)
class Item:
    """One question of the set."""

    id: str
    conversion: str  # e.g. "T->I"
    prompt: str  # the user's text
    media: tuple[dict[str, Any], ...] = ()  # input media: {"type": "image" | "audio" | "video", "path"}
    reference: str = ""  # shown to raters: what a right answer holds ("" = judge by the rubric alone)
    gold: tuple[GoldAnswer, ...] = ()  # non-empty: an attention check with these answers instead of the systems'

    @property
    def is_gold(self) -> bool:
        return bool(self.gold)


@dataclass(frozen=True)
class Study:
    """A question set, its systems and rubrics; see the module docstring for the folder layout."""

    name: str
    folder: Path
    title: str
    instructions: str  # Markdown shown to raters above the first item
    mode: str  # "single" | "pairwise"
    raters_per_item: int  # k: how many raters each item is given to before an item gets a (k+1)-th
    items_per_rater: int | None  # items in one rater's list besides the gold items (None = every item)
    seed: int  # assignment, per-rater order and A/B sides derive from it
    systems: tuple[System, ...]
    rubrics: dict[str, dict[str, str]]  # conversion (or "default") -> {"1": ..., "5": ..., "10": ...}
    items: tuple[Item, ...]

    @property
    def prepared_dir(self) -> Path:
        return self.folder / "prepared"

    @property
    def rated_items(self) -> tuple[Item, ...]:
        """The items the statistics are about (gold items left out)."""
        return tuple(i for i in self.items if not i.is_gold)

    @property
    def gold_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.is_gold)

    def item(self, item_id: str) -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def rubric(self, conversion: str) -> dict[str, str]:
        return self.rubrics.get(conversion) or self.rubrics.get("default") or {}

    def messages(self, item: Item) -> list[dict[str, Any]]:
        """The user turn the systems answer: media (absolute paths) then the prompt."""
        parts = [{"type": p["type"], "path": str(self.folder / p["path"])} for p in item.media]
        return [{"role": "user", "content": parts + [{"type": "text", "text": item.prompt}]}]


def study_folder(name_or_path: str | Path) -> Path:
    """A bundled study's name ("default" -> assets/studies/default) or a folder holding study.json."""
    path = Path(name_or_path)
    if (path / "study.json").is_file():
        return path
    bundled = STUDIES_DIR / str(name_or_path)
    if _ID.match(str(name_or_path)) and (bundled / "study.json").is_file():
        return bundled
    known = ", ".join(bundled_studies()) or "none"
    raise StudyError(f"no study {str(name_or_path)!r}: give a bundled study ({known}) or a folder with study.json")


def bundled_studies() -> list[str]:
    return sorted(p.parent.name for p in STUDIES_DIR.glob("*/study.json"))


def _parts(raw: Any, where: str, folder: Path, *, text: bool) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise StudyError(f"{where}: expected a list of parts")
    out = []
    for part in raw:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and text and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind in MEDIA_TYPES and isinstance(part.get("path"), str):
            if not (folder / part["path"]).is_file():
                raise StudyError(f"{where}: file not found: {part['path']}")
            out.append({"type": kind, "path": part["path"]})
        else:
            raise StudyError(f"{where}: a part must be {{'type': 'image'|'audio'|'video', 'path'}}"
                             + (" or {'type': 'text', 'text'}" if text else ""))
    return tuple(out)


def _item(raw: dict[str, Any], where: str, folder: Path) -> Item:
    try:
        item_id, conversion, prompt = str(raw["id"]), str(raw["conversion"]), str(raw["prompt"])
    except (KeyError, TypeError):
        raise StudyError(f"{where}: an item needs id, conversion and prompt") from None
    if not _ID.match(item_id):
        raise StudyError(f"{where}: item id {item_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not _CONVERSION.match(conversion):
        raise StudyError(f"{where}: conversion {conversion!r} is not like 'T->I' or 'T+I->I'")
    gold = []
    for g in raw.get("gold") or []:
        try:
            low, high = (int(x) for x in g["expect"])
        except (KeyError, TypeError, ValueError):
            raise StudyError(f"{where}: a gold answer needs content and expect [low, high]") from None
        if not 1 <= low <= high <= 10:
            raise StudyError(f"{where}: a gold answer's expect must be 1 <= low <= high <= 10")
        gold.append(GoldAnswer(_parts(g.get("content"), where, folder, text=True), low, high))
    return Item(item_id, conversion, prompt, _parts(raw.get("media") or [], where, folder, text=False),
                str(raw.get("reference") or ""), tuple(gold))


def load_study(name_or_path: str | Path) -> Study:
    """Read and check a study folder (see the module docstring). Raises StudyError with the reason."""
    folder = study_folder(name_or_path)
    try:
        meta = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        lines = (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{folder}: {err}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise StudyError(f"questions.jsonl line {n}: {err}") from None
            items.append(_item(raw, f"questions.jsonl line {n}", folder))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise StudyError("questions.jsonl: item ids must be unique")
    systems = []
    for s in meta.get("systems") or []:
        system = System(id=str(s["id"]), preset=s.get("preset", "nano"), checkpoint=s.get("checkpoint"),
                        settings=dict(s.get("settings") or {}), label=str(s.get("label") or ""))
        if not _ID.match(system.id):
            raise StudyError(f"study.json: system id {system.id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        try:
            system.generation_settings()
        except (TypeError, ValueError) as err:
            raise StudyError(f"study.json: system {system.id}: settings: {err}") from None
        systems.append(system)
    mode = meta.get("mode", "single")
    study = Study(
        name=str(meta.get("name") or folder.name), folder=folder, title=str(meta.get("title") or folder.name),
        instructions=str(meta.get("instructions") or ""), mode=mode,
        raters_per_item=int(meta.get("raters_per_item", 3)),
        items_per_rater=None if meta.get("items_per_rater") is None else int(meta["items_per_rater"]),
        seed=int(meta.get("seed", 0)), systems=tuple(systems),
        rubrics={str(k): {str(s): str(t) for s, t in v.items()} for k, v in (meta.get("rubrics") or {}).items()},
        items=tuple(items),
    )
    if not study.systems or len({s.id for s in study.systems}) != len(study.systems):
        raise StudyError("study.json: give one or more systems with distinct ids")
    if mode not in MODES:
        raise StudyError(f"study.json: mode must be one of {MODES}")
    if mode == "pairwise" and len(study.systems) != 2:
        raise StudyError("study.json: pairwise mode compares exactly two systems")
    if study.raters_per_item < 1 or (study.items_per_rater is not None and study.items_per_rater < 1):
        raise StudyError("study.json: raters_per_item and items_per_rater must be at least 1")
    if not study.rated_items:
        raise StudyError("questions.jsonl: the study has no items besides gold items")
    for item in study.gold_items:
        if mode == "pairwise" and len(item.gold) != 2:
            raise StudyError(f"questions.jsonl: gold item {item.id} needs two answers in pairwise mode")
    return study
