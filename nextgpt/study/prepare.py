"""Every system's answer to every item, generated once and kept with the study, so that raters never wait
for a model and all see the same answers.

    python -m nextgpt study prepare --study default      # progress bar; resumable; prints a JSON summary
    prepared = load_prepared(load_study("default"))      # what the app shows: answers by (item, answer key)

Layout under the study's prepared/ folder:

    answers/<system id>/<item id>.json   {"item", "system", "content", "error", "seconds", "fingerprint", "weights"}
    answers/gold-<n>/<item id>.json      a gold item's fixed answers, in the same form
    media/<sha256 prefix>.<ext>          every answer's images / sounds / videos, named by their content

An answer file is written whole (a temporary file renamed), so a killed run leaves only finished answers,
and the next run does only what is missing or stale: an answer is kept while its fingerprint (the system's
preset, checkpoint and settings, the checkpoint's weight hash, the item's prompt and input media) matches.
Media are named by content, never by system, so a file's address tells a rater nothing about who made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nextgpt import files
from nextgpt.config import MODALITY_INFO, Modality
from nextgpt.study.assign import answer_keys
from nextgpt.study.spec import Item, Study, StudyError, System

log = logging.getLogger(__name__)

LoadModel = Callable[[System], Any]  # system -> a model with .chat(messages, settings) (systems may share one)
Weights = Callable[[System], "str | None"]  # system -> its weights' version, e.g. the checkpoint's weight hash


@dataclass(frozen=True)
class Prepared:
    """A study with its answers: (item id, answer key) -> content parts with absolute media paths."""

    study: Study
    answers: dict[tuple[str, str], list[dict[str, Any]]]
    missing: list[tuple[str, str]]  # (item id, answer key) not prepared (or stale)

    @property
    def complete(self) -> bool:
        return not self.missing


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(study: Study, item: Item, key: str, weights: str | None) -> str:
    """What an answer depends on, hashed: the system (or the gold answer), the weights, the item."""
    inputs = [(p["type"], _file_sha(study.folder / p["path"])) for p in item.media]
    if key.startswith("gold-"):
        gold = item.gold[int(key.split("-")[1])]
        answer: Any = [p if p["type"] == "text" else (p["type"], _file_sha(study.folder / p["path"]))
                       for p in gold.content]
    else:
        answer = [s.record() for s in study.systems if s.id == key][0] | {"weights": weights}
    record = {"prompt": item.prompt, "inputs": inputs, "answer": answer}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _answer_path(study: Study, key: str, item_id: str) -> Path:
    return study.prepared_dir / "answers" / key / f"{item_id}.json"


def _write_json(path: Path, record: dict[str, Any]) -> None:
    files.write_json(path, record, indent=1)


def _store_media(study: Study, write: Callable[[Path], Any], suffix: str) -> str:
    """Write a medium through `write(path)`, then name it by its content -> path relative to prepared/."""
    folder = study.prepared_dir / "media"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp" + suffix)
    os.close(fd)
    write(Path(tmp))
    name = f"{_file_sha(Path(tmp))[:20]}{suffix}"
    os.replace(tmp, folder / name)
    return f"media/{name}"


def _stored(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def stale(study: Study, weights: dict[str, str | None]) -> list[tuple[Item, str]]:
    """(item, answer key) whose answer is missing or was made from something else; `weights`: system id ->
    weights version."""
    out = []
    for item in study.items:
        for key in answer_keys(study, item):
            record = _stored(_answer_path(study, key, item.id))
            if not record or record.get("fingerprint") != fingerprint(study, item, key, weights.get(key)):
                out.append((item, key))
    return out


def _gold_answer(study: Study, item: Item, key: str) -> dict[str, Any]:
    content = []
    for part in item.gold[int(key.split("-")[1])].content:
        if part["type"] == "text":
            content.append(part)
        else:
            src = study.folder / part["path"]
            content.append({"type": part["type"], "path": _store_media(
                study, lambda dest, src=src: shutil.copyfile(src, dest), MODALITY_INFO[Modality(part["type"])].extension)})
    return {"content": content, "error": None, "seconds": 0.0}


def _model_answer(study: Study, item: Item, system: System, model: Any) -> dict[str, Any]:
    from nextgpt import media
    from nextgpt.conversation import ConversationError
    from nextgpt.model import ModelUnavailableError

    start = time.perf_counter()
    try:
        reply = model.chat(study.messages(item), system.generation_settings())
    except (media.MediaError, ModelUnavailableError, ConversationError) as err:
        return {"content": [], "error": str(err), "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    content = [{"type": "text", "text": reply.text}] if reply.text else []
    for modality in Modality:
        for arr in reply.media[modality]:
            path = _store_media(study, lambda dest, arr=arr: media.save(modality, arr, dest,
                                                                         sample_rate=reply.audio_sample_rate),
                                MODALITY_INFO[modality].extension)
            content.append({"type": modality.value, "path": path})
    return {"content": content, "error": None, "seconds": round(seconds, 3), "notices": reply.notices}


def prepare(study: Study, load_model: LoadModel, weights_of: Weights, *, progress: bool = True) -> dict[str, Any]:
    """Generate every missing or stale answer (gold answers copied in) -> a summary with counts and times.

    A system's model is loaded (`load_model`) only when one of its answers is to be made.
    """
    from tqdm.auto import tqdm

    weights = {s.id: weights_of(s) for s in study.systems}
    models: dict[str, Any] = {}
    todo = stale(study, weights)
    total = sum(len(answer_keys(study, i)) for i in study.items)
    log.info("%s: %d of %d answers to prepare", study.name, len(todo), total)
    start, seconds = time.perf_counter(), {}
    for item, key in tqdm(todo, desc=f"study {study.name}", unit="answer", disable=not progress):
        if key.startswith("gold-"):
            record = _gold_answer(study, item, key)
        else:
            system = next(s for s in study.systems if s.id == key)
            if key not in models:
                models[key] = load_model(system)
            record = _model_answer(study, item, system, models[key])
            seconds.setdefault(key, []).append(record["seconds"])
        record = {"item": item.id, "system": key, **record, "weights": weights.get(key),
                  "fingerprint": fingerprint(study, item, key, weights.get(key))}
        _write_json(_answer_path(study, key, item.id), record)
    removed = _remove_unused_media(study)
    return {"study": study.name, "answers": total, "generated": len(todo), "kept": total - len(todo),
            "seconds": round(time.perf_counter() - start, 1),
            "seconds_per_answer": {k: round(sum(v) / len(v), 2) for k, v in seconds.items()},
            "media_bytes": sum(p.stat().st_size for p in (study.prepared_dir / "media").glob("*")),
            "media_removed": removed, "prepared": str(study.prepared_dir)}


def _remove_unused_media(study: Study) -> int:
    """Delete media no current answer refers to (left by stale answers or a killed run)."""
    used = set()
    for path in (study.prepared_dir / "answers").glob("*/*.json"):
        record = _stored(path) or {}
        used |= {p["path"] for p in record.get("content", []) if "path" in p}
    gone = 0
    for path in (study.prepared_dir / "media").glob("*"):
        if f"media/{path.name}" not in used:
            path.unlink()
            gone += 1
    return gone


def load_prepared(study: Study, weights: dict[str, str | None] | None = None) -> Prepared:
    """The study's prepared answers. Without `weights` (system id -> weights version) every stored answer of
    the current items and systems counts; with it, only those whose fingerprint matches."""
    answers, missing = {}, []
    for item in study.items:
        for key in answer_keys(study, item):
            record = _stored(_answer_path(study, key, item.id))
            ok = bool(record) and all((study.prepared_dir / p["path"]).is_file()
                                      for p in record.get("content", []) if "path" in p)
            if ok and weights is not None:
                ok = record.get("fingerprint") == fingerprint(study, item, key, weights.get(key))
            if not ok:
                missing.append((item.id, key))
                continue
            answers[(item.id, key)] = [
                p if p["type"] == "text" else {"type": p["type"], "path": str(study.prepared_dir / p["path"])}
                for p in record["content"]]
    return Prepared(study, answers, missing)


def require_prepared(study: Study) -> Prepared:
    """load_prepared, or a StudyError telling how to prepare the study."""
    prepared = load_prepared(study)
    if not prepared.complete:
        raise StudyError(f"study {study.name!r}: {len(prepared.missing)} answer(s) are not prepared yet; "
                         f"run: python -m nextgpt study prepare --study {study.name}")
    return prepared
