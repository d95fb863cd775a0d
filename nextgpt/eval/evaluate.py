"""The paper's tables on a split of the world, measured through the public `NextGPT.chat` API only.

    python -m nextgpt eval --preset nano --limit 4 --out runs/eval            # val: the development split
    python -m nextgpt eval --preset nano --split test --out benchmarks        # test: once, for a shipped report

    report = evaluate(model, EvalConfig(data_dir=Path("data/world"), limit=4))
    write_report(report, Path("runs/eval"))   # report.md, report.json, items.jsonl.gz, *.png

The split is written first when it is missing (`ensure_split`: deterministic, seconds). Every report names
its split, the checkpoint's weight hash and the git commit it was measured at.

1. X->text captioning (comprehension.json): BLEU-4 / METEOR / CIDEr against every caption phrasing of the
   world, and per-attribute accuracy of the words in the reply (`parse_caption`).
2. text->X generation (t2m.json + text-only questions written here): which modality was produced
   (confusion matrix, asked-for x produced), attribute accuracy of the produced media by the rule-based
   judges, and in the nano encoder's space a Frechet distance to the real test media (FID analogue) and
   the cosine between each produced item and its caption's text embedding (CLIPSIM analogue).
3. text+X->X editing (mosit.json edit turns): the dialogue up to the edit request is the REFERENCE history
   (the recorded turns, earlier media as recorded), so each edit is judged on its own.
4. Multi-turn dialogue success (mosit.json): every turn is generated with the model's OWN earlier replies
   in the history; a dialogue succeeds when every turn's judged output is right.
6. Requests about uploaded media (mosit.json task records, one row per `records.TASKS` row): an edit of an
   uploaded image / sound / video, image -> video, video -> image, a question about one upload or two, and a new
   request after another item. The record's earlier turns are the REFERENCE history; its last turn is judged:
   media by the world's judges against the target caption, answers by their verdict against the one the uploads'
   world attributes give (`judge.question_truth`). Tables 3 and 4 use the random dialogues only.

Decoding is greedy and every diffusion call is seeded (seed + record index), so a rerun gives the same
numbers. A table or row the checkpoint cannot do (no trained encoder, no decoder of a modality) is
reported as skipped with the reason, never faked.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nextgpt.config import MODALITY_INFO, GenerationSettings, Modality
from nextgpt.eval.questions import GENERAL_QUESTIONS, keyword_right
from nextgpt.eval.metrics import (attribute_accuracy, attribute_chance, caption_scores, frechet_distance, mean_cosine,
                                  rate_of)
from nextgpt.world import JUDGES
from nextgpt.world import prompts as P
from nextgpt.world.judge import judge_small_talk, parse_caption
from nextgpt.world.vocab import ATTRIBUTES, CAPTION_TEMPLATES, MODALITIES, held_out_pairs

log = logging.getLogger(__name__)

PRODUCED_COLUMNS = (*MODALITIES, "none")  # confusion-matrix columns
SWITCH_CHANCE = 1.0 / len(PRODUCED_COLUMNS)  # a blind pick of one outcome: image, audio, video or none
ASKED_ROWS = (*MODALITIES, "text")  # confusion-matrix rows

TEXT_ONLY_REQUESTS = tuple(q for q, _ in GENERAL_QUESTIONS)  # the text row: the right answer produces no media

_BOOKS = (P.TRAIN_BOOK, P.TEST_BOOK)  # user-turn phrasings of every split
_EDIT_PROMPTS = {p for b in _BOOKS for values in b.edits.values() for ps in values.values() for p in ps}
_QUESTIONS = {q for b in _BOOKS for qs in b.questions.values() for q in qs}
_ANIMATE = {p.format(value=d) for b in _BOOKS for p in b.animate for d in ATTRIBUTES["video"]["direction"]}
_STILL = {p for b in _BOOKS for p in b.still}
_CHAT = {human for b in _BOOKS for human, _ in b.chat}
_UPLOAD_EDITS = ({p.format(value=c) for b in _BOOKS for p in b.upload_edits for c in ATTRIBUTES["image"]["colour"]}
                 | {p for b in _BOOKS for values in b.uploads.edits.values() for ps in values.values() for p in ps}
                 | {p for b in _BOOKS for p in b.uploads.reverse})
_UPLOAD_ANIMATE = {p.format(value=d) for b in _BOOKS for p in b.uploads.animate for d in ATTRIBUTES["video"]["direction"]}
_UPLOAD_STILL = {p for b in _BOOKS for p in b.uploads.still}
_SENSES = {text: sense for b in _BOOKS for text, sense in P.question_senses(b.uploads).items()}  # question -> sense


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how."""

    data_dir: Path  # the world's root (holds <split>/comprehension.json, ...); a missing split is written
    split: str = "val"  # develop on val; test is run once for the report a checkpoint ships with
    checkpoint: Path | None = None  # the checkpoint folder, for the weight hash in the report
    limit: int | None = None  # items per modality (tables 1-2), edit turns (3), dialogues (4), task records per
                              # row (6); None = all
    seed: int = 0  # diffusion seed base (item seed = seed + record index); decoding is greedy
    max_new_tokens: int = 64
    num_inference_steps: int | None = None  # diffusion steps; None = the preset's
    use_meteor: bool = True
    progress: bool = True  # tqdm bar on stderr
    workers: int = 1  # processes answering the chat calls (each loads the model; see `evaluate`'s `load`)


# ---- what the checkpoint can do ---------------------------------------------------------------------
def read_reason(model: Any) -> str | None:
    """Why the model cannot read media, or None when it can."""
    if model.can_encode:
        return None
    if model.encoder is None:
        return "checkpoint has no trained media encoder, so the model cannot read images, audio or video"
    return "checkpoint has no trained input projection, so the model cannot read images, audio or video"


def write_reason(model: Any, modality: str) -> str | None:
    """Why the model cannot generate `modality`, or None when it can."""
    from nextgpt.loading import decoder_available

    m = Modality(modality)
    if m in model.can_generate:
        return None
    if model.decoders is None:
        return f"no decoders were loaded, so the model cannot generate {m.value}"
    if not decoder_available(model.decoders, m):
        return f"checkpoint has no trained {m.value} decoder"
    return f"checkpoint has no trained {m.value} output projector (signal tokens switched off)"


def capabilities(model: Any) -> dict[str, Any]:
    return {
        "reads_media": model.can_encode,
        "read_reason": read_reason(model),
        "generates": sorted(m.value for m in model.can_generate),
        "write_reasons": {m: r for m in MODALITIES if (r := write_reason(model, m))},
        "has_encoder": model.encoder is not None,
    }


# ---- judging --------------------------------------------------------------------------------------
def judge(modality: str, arr: np.ndarray, sample_rate: int = 16000) -> dict[str, str | None]:
    """The world's rule-based judge of one produced item."""
    return JUDGES[modality](arr, sample_rate)


def caption_attributes(caption: str, modality: str) -> dict[str, str]:
    """The attribute words of a world caption (all present by construction)."""
    found = parse_caption(caption, modality)
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise ValueError(f"{caption!r} is not a world {modality} caption (no {missing})")
    return found  # type: ignore[return-value]


def by_combination(modality: str, truths: Sequence[dict[str, str]], preds: Sequence[Any]) -> dict[str, Any]:
    """Every-attribute-right rates of the items whose attribute combination is seen in training vs held out of
    it (`held_out_pairs`); `preds` are judged attribute dicts (None = nothing produced) or plain booleans."""
    groups: dict[str, list[bool]] = {"seen": [], "held_out": []}
    for truth, pred in zip(truths, preds):
        ok = pred if isinstance(pred, bool) else all((pred or {}).get(k) == v for k, v in truth.items())
        groups["held_out" if held_out_pairs(modality, truth) else "seen"].append(ok)
    return {g: rate_of(v, attribute_chance(modality)["all"]) for g, v in groups.items()}


def produced(reply: Any) -> list[tuple[str, np.ndarray]]:
    """(modality, array) of every item in a reply, in canonical modality order."""
    return [(m, arr) for m in MODALITIES for arr in reply.media[Modality(m)]]


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text(message: dict[str, Any]) -> str:
    return " ".join(p["text"] for p in _parts(message) if p["type"] == "text").strip()


def _media_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _parts(message) if p["type"] in MODALITIES]


def turn_kind(user: dict[str, Any]) -> str:
    """upload | upload_edit | upload_animate | upload_still | upload_check | upload_pair | edit | question |
    animate | still | chat | request, from a MosIT user turn."""
    text = _text(user)
    media = _media_parts(user)
    if media:
        for kind, phrasings in (("upload_edit", _UPLOAD_EDITS), ("upload_animate", _UPLOAD_ANIMATE),
                                ("upload_still", _UPLOAD_STILL)):
            if text in phrasings:
                return kind
        if text in _SENSES:
            return "upload_pair" if len(media) > 1 else "upload_check"
        return "upload"
    for kind, phrasings in (("edit", _EDIT_PROMPTS), ("question", _QUESTIONS), ("animate", _ANIMATE),
                            ("still", _STILL), ("chat", _CHAT)):
        if text in phrasings:
            return kind
    return "request"


# ---- running turns ----------------------------------------------------------------------------------
Job = tuple[str, Sequence[dict[str, Any]], int]  # ("chat", messages, seed) or ("dialogue", messages, dialogue index)


def _chat(model: Any, cfg: EvalConfig, messages: Sequence[dict[str, Any]], seed: int, errors: list[str]) -> Any:
    """`model.chat` with the evaluation's settings; an error a user could cause is a wrong (empty) reply, listed."""
    from nextgpt.conversation import ConversationError
    from nextgpt.media import MediaError
    from nextgpt.model import ModelUnavailableError, Reply

    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed + seed,
                                  num_inference_steps=cfg.num_inference_steps)
    try:
        return model.chat(messages, settings)
    except (ConversationError, MediaError, ModelUnavailableError) as err:  # judged wrong; listed in the report
        errors.append(f"{type(err).__name__}: {err}")
        return Reply(text="", notices=[str(err)])


def play_dialogue(chat: Callable[[Sequence[dict[str, Any]], int], Any], messages: Sequence[dict[str, Any]],
                  d: int) -> list[Any]:
    """The model's reply to each user turn of dialogue `d`, each turn seeing the model's OWN earlier replies
    (text and produced media), not the recorded ones."""
    history: list[dict[str, Any]] = []
    replies = []
    for j in range(0, len(messages) - 1, 2):
        history.append(messages[j])
        reply = chat(list(history), 1000 * d + j)
        replies.append(reply)
        history.append({"role": "assistant", "content": [{"type": "text", "text": reply.text}]
                        + [{"type": m, "array": arr} for m, arr in produced(reply)]})
    return replies


def _turns(job: Job) -> int:
    return 1 if job[0] == "chat" else len(job[1]) // 2


def _do(model: Any, cfg: EvalConfig, job: Job, step: Callable[[int], Any] = lambda n: None) -> tuple[Any, list[str]]:
    """A job's reply (a chat) or replies (a dialogue), and the errors its calls gave."""
    kind, messages, key = job
    errors: list[str] = []

    def chat(history: Sequence[dict[str, Any]], seed: int) -> Any:
        reply = _chat(model, cfg, history, seed, errors)
        step(1)
        return reply

    return (chat(messages, key) if kind == "chat" else play_dialogue(chat, messages, key)), errors


_WORKER: dict[str, Any] = {}  # a worker process's model and settings


def _start_worker(load: tuple[str, dict[str, Any]], cfg: EvalConfig, threads: int) -> None:
    from nextgpt.model import NextGPT

    torch.set_num_threads(threads)
    name, kwargs = load
    _WORKER.update(model=NextGPT.from_preset(name, **kwargs), cfg=cfg)


def _work(job: Job) -> tuple[Any, list[str]]:
    return _do(_WORKER["model"], _WORKER["cfg"], job)


class _Runner:
    """Answers the tables' chat calls with the evaluation's settings, in this process or spread over
    `cfg.workers` processes (each with its own model, built by `load`); counts calls and errors; drives the bar.
    A job's reply does not depend on where it ran: decoding is greedy and every call carries its own seed."""

    def __init__(self, model: Any, cfg: EvalConfig, total: int,
                 base: tuple[str, Callable[[str], str]] | None = None,
                 load: tuple[str, dict[str, Any]] | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.base_name, self.base = base if base else (None, None)
        self.errors: list[str] = []
        self.calls = 0
        self.bar = tqdm(total=total, desc="eval", unit="turn", disable=not cfg.progress, leave=False)
        self._pool = None
        if cfg.workers > 1:
            if load is None:
                raise ValueError("workers > 1 needs `load`, the (preset, keyword arguments) each worker builds")
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, torch.get_num_threads() // cfg.workers)
            self._pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(load, cfg, threads))

    def replies(self, calls: Sequence[tuple[Sequence[dict[str, Any]], int]]) -> list[Any]:
        """The reply to each (messages, seed), in order."""
        return self._run([("chat", messages, seed) for messages, seed in calls])

    def dialogues(self, items: Sequence[tuple[int, Sequence[dict[str, Any]]]]) -> list[list[Any]]:
        """For each (index, messages), the replies of `play_dialogue`, in order."""
        return self._run([("dialogue", messages, d) for d, messages in items])

    def _run(self, jobs: list[Job]) -> list[Any]:
        if self._pool is None:
            done = [_do(self.model, self.cfg, job, self.bar.update) for job in jobs]
        else:
            from concurrent.futures import as_completed

            futures = {self._pool.submit(_work, job): job for job in jobs}
            for future in as_completed(futures):
                self.bar.update(_turns(futures[future]))
            done = [future.result() for future in futures]
        for job, (_, errors) in zip(jobs, done):
            self.calls += _turns(job)
            self.errors.extend(errors)
        return [out for out, _ in done]

    def close(self) -> None:
        self.bar.close()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _records(cfg: EvalConfig, kind: str) -> tuple[list[dict[str, Any]], Path]:
    from nextgpt.world.records import ensure_split, load_records

    root = ensure_split(cfg.data_dir, cfg.split)
    return load_records(cfg.data_dir, cfg.split, kind), root


def _cap(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def _embed(model: Any, modality: str, items: Sequence[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model.encoder.encode(Modality(modality), list(items)).float().cpu().numpy()  # (N, D)


def _embed_text(model: Any, texts: Sequence[str]) -> np.ndarray:
    with torch.no_grad():
        return model.encoder.encode_text(list(texts)).float().cpu().numpy()  # (N, D)


# ---- 1. X -> text -----------------------------------------------------------------------------------
def plan_captioning(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    records, root = _records(cfg, "comprehension")
    reason = read_reason(model)
    plan = {}
    for m in MODALITIES:
        items = _cap([(i, r) for i, r in enumerate(records) if r.get(f"input_{m}")], cfg.limit)
        plan[m] = {"items": [] if reason else items, "skipped": reason}
    return {"root": root, "rows": plan}


def run_captioning(run: _Runner, plan: dict[str, Any], items_out: list[dict[str, Any]]) -> dict[str, Any]:
    from nextgpt.world.messages import record_to_messages

    groups, accuracy, rows = {}, {}, {}
    for m, row in plan["rows"].items():
        if row["skipped"]:
            rows[m] = {"n": 0, "skipped": row["skipped"]}
            continue
        refs, hyps, truths, preds, examples = {}, {}, [], [], []
        records = [(index, record_to_messages(rec, plan["root"])) for index, rec in row["items"]]
        replies = run.replies([(messages[:1], index) for index, messages in records])
        for (index, messages), reply in zip(records, replies):
            truth = caption_attributes(_text(messages[1]), m)
            caption = CAPTION_TEMPLATES[m].format(**truth)
            refs[str(index)] = [a.format(caption=caption) for a in P.CAPTION_ANSWERS[m]]
            hyps[str(index)] = reply.text
            truths.append(truth)
            preds.append(parse_caption(reply.text, m))
            examples.append({"caption": caption, "reply": reply.text})
            items_out.append({"table": "captioning", "modality": m, "record": index, "prompt": _text(messages[0]),
                              "caption": caption, "reply": reply.text, "parsed": preds[-1]})
        rows[m] = {"n": len(truths), "examples": examples[:3]}
        if truths:
            groups[m] = (refs, hyps)
            accuracy[m] = attribute_accuracy(truths, preds, attribute_chance(m))
            rows[m]["combinations"] = by_combination(m, truths, preds)
    scores = caption_scores(groups, use_meteor=run.cfg.use_meteor) if groups else {}
    for m in groups:
        rows[m].update(scores[m], attributes=accuracy[m])
    return {"rows": rows, "references": "every caption phrasing of the world (CAPTION_ANSWERS) of the true caption"}


# ---- 2. text -> X -----------------------------------------------------------------------------------
def plan_generation(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    records, root = _records(cfg, "t2m")
    rows = {}
    for m in MODALITIES:
        reason = write_reason(model, m)
        items = _cap([(i, r) for i, r in enumerate(records) if r.get(f"output_{m}")], cfg.limit)
        rows[m] = {"items": [] if reason else items, "skipped": reason}
    rows["text"] = {"items": list(enumerate(_cap(list(GENERAL_QUESTIONS), cfg.limit))), "skipped": None}
    return {"root": root, "rows": rows}


def run_generation(run: _Runner, plan: dict[str, Any], items_out: list[dict[str, Any]]) -> dict[str, Any]:
    from nextgpt.world.messages import record_to_messages
    from nextgpt.world.records import read_media

    model = run.model
    confusion = {asked: dict.fromkeys(PRODUCED_COLUMNS, 0) for asked in ASKED_ROWS}
    rows: dict[str, Any] = {}
    media: dict[str, dict[str, list]] = {}  # modality -> generated / captions / real
    samples: list[dict[str, Any]] = []
    for asked, row in plan["rows"].items():
        if row["skipped"]:
            rows[asked] = {"n": 0, "skipped": row["skipped"]}
            continue
        rights, truths, preds, answers, keyed, base_keyed = [], [], [], [], [], []
        store = media.setdefault(asked, {"generated": [], "captions": [], "real": [], "real_captions": []})
        calls = []
        for index, item in row["items"]:
            if asked == "text":  # item: (question, keywords)
                calls.append(([{"role": "user", "content": item[0]}], None, 100_000 + index))
            else:
                calls.append((record_to_messages(item, plan["root"])[:1], item[f"{asked}_captions"], index))
        replies = run.replies([(messages, seed) for messages, _, seed in calls])
        for (index, item), (messages, caption, _), reply in zip(row["items"], calls, replies):
            if asked == "text":
                question, keywords = item
            out = produced(reply)
            kinds = [m for m, _ in out]
            for column in set(kinds) or {"none"}:
                confusion[asked][column] += 1
            rights.append(sorted(kinds) == ([] if asked == "text" else [asked]))
            record = {"table": "generation", "asked": asked, "record": index, "prompt": _text(messages[0]),
                      "reply": reply.text, "produced": kinds}
            if asked == "text":  # shown in the report: does general chat survive the tuning?
                ours = keyword_right(reply.text, keywords) and not kinds if keywords else None
                base = run.base(question) if run.base else None
                theirs = keyword_right(base, keywords) if base is not None else None
                answers.append({"prompt": question, "reply": reply.text, "produced": kinds, "keywords": list(keywords),
                                "right": ours, "base_reply": base, "base_right": theirs})
                record.update(keywords=list(keywords), right=ours, base_reply=base, base_right=theirs)
                if keywords:
                    keyed.append(bool(ours))
                    if theirs is not None:
                        base_keyed.append(theirs)
            if caption is not None:
                truth = caption_attributes(caption, asked)
                mine = reply.media[Modality(asked)]
                pred = judge(asked, mine[0], reply.audio_sample_rate) if mine else None
                truths.append(truth)
                preds.append(pred)
                store["real"].append(read_media(plan["root"] / item[f"output_{asked}"]))
                store["real_captions"].append(caption)
                if mine:
                    store["generated"].append(mine[0])
                    store["captions"].append(caption)
                    if asked in ("image", "video") and len(samples) < 12:
                        samples.append({"modality": asked, "caption": caption, "array": mine[0], "judged": pred})
                record.update(caption=caption, judged=pred)
            items_out.append(record)
        rows[asked] = {"n": len(rights), "switch_accuracy": rate_of(rights, SWITCH_CHANCE),
                       **({"answers": answers} if answers else {})}
        if asked == "text":
            rows[asked]["keyword_right"] = rate_of(keyed)
            rows[asked]["base_keyword_right"] = rate_of(base_keyed) if run.base else None
            rows[asked]["base"] = run.base_name
        if truths:
            rows[asked]["attributes"] = attribute_accuracy(truths, preds, attribute_chance(asked))
            rows[asked]["combinations"] = by_combination(asked, truths, preds)
            rows[asked]["produced_fraction"] = rate_of([p is not None for p in preds])
    embedding = _embedding_metrics(model, media, run.cfg.seed)
    for m, values in embedding.items():
        rows[m].update(values)
    switch = [rows[r]["switch_accuracy"]["rate"] for r in ASKED_ROWS if rows.get(r, {}).get("switch_accuracy")]
    return {"rows": rows, "confusion": {r: confusion[r] for r in ASKED_ROWS if rows[r].get("n")},
            "switch_accuracy_mean": float(np.mean(switch)) if switch else None, "_samples": samples,
            "attribute_accuracy": "over all requests of the row: a missing item counts as wrong"}


def render_again(modality: str, captions: Sequence[str], seed: int) -> list[np.ndarray]:
    """An independent render of each world caption (new sizes, positions, pitches, paths), through the same file
    format as the split's media, so that a statistic between these and the real media is its floor."""
    import tempfile

    from nextgpt.world.records import read_media, write_media
    from nextgpt.world.vocab import sample_spec

    rng = np.random.default_rng([seed, 7, MODALITIES.index(modality)])
    specs = []
    for caption in captions:
        spec = sample_spec(modality, rng)
        for attribute, word in caption_attributes(caption, modality).items():
            if getattr(spec, attribute) != word:
                spec = spec.edited(attribute, word)
        specs.append(spec)
    suffix = MODALITY_INFO[Modality(modality)].extension
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i:06d}{suffix}" for i in range(len(specs))]
        if modality == "video":
            from nextgpt.world.records import encode_videos

            encode_videos([s.render() for s in specs], paths)
        else:
            for spec, path in zip(specs, paths):
                write_media(spec, path)
        return [read_media(path) for path in paths]


def _embedding_metrics(model: Any, media: dict[str, dict[str, list]], seed: int) -> dict[str, dict[str, Any]]:
    """FID / CLIPSIM analogues per modality in the nano encoder's space, with the FID analogue's floor: the same
    distance between the real media and an independent render of the same captions, at the same n."""
    out: dict[str, dict[str, Any]] = {}
    for m, store in media.items():
        if m == "text" or not store["real"]:
            continue
        if model.encoder is None:
            out[m] = {"embedding_skipped": "checkpoint has no trained media encoder to embed media with"}
            continue
        real = _embed(model, m, store["real"])
        values: dict[str, Any] = {"clipsim_real": mean_cosine(real, _embed_text(model, store["real_captions"]))}
        gen = store["generated"]
        if gen:
            gen_emb = _embed(model, m, gen)
            values["clipsim"] = mean_cosine(gen_emb, _embed_text(model, store["captions"]))
        else:
            values["clipsim"] = None
        if len(gen) >= 2 and len(real) >= 2:
            values["frechet"] = frechet_distance(gen_emb, real)
            # the floor: real media against a second render of the captions of the produced items, same n
            again = _embed(model, m, render_again(m, store["captions"], seed))
            values["frechet_floor"] = frechet_distance(again, real)
            values["frechet_n"] = {"produced": len(gen), "real": len(real)}
        else:
            values["frechet"] = None
            values["frechet_reason"] = f"needs >= 2 produced items, got {len(gen)}"
        out[m] = values
    return out


# ---- 3. text + X -> X editing ------------------------------------------------------------------------
def _mosit(cfg: EvalConfig, tasks: bool = False) -> tuple[list[Any], Path]:
    """The random dialogues of mosit.json as messages, or with `tasks` its task records (`records.TASKS`) as
    (index in mosit.json, row, messages)."""
    from nextgpt.world.messages import record_to_messages

    records, root = _records(cfg, "mosit")
    if tasks:
        return [(i, r["task"], record_to_messages(r, root)) for i, r in enumerate(records) if r.get("task")], root
    return [record_to_messages(r, root) for r in records if not r.get("task")], root


def _needs(model: Any, messages: Sequence[dict[str, Any]]) -> list[str]:
    """Why `model` cannot do these turns (the user media to read, the media to write); empty when it can."""
    reasons = []
    if any(_media_parts(m) for m in messages if m["role"] == "user"):
        reasons.append(read_reason(model))
    for m in sorted({p["type"] for msg in messages if msg["role"] == "assistant" for p in _media_parts(msg)}):
        reasons.append(write_reason(model, m))
    return [r for r in reasons if r]


def plan_editing(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    dialogues, _ = _mosit(cfg)
    items, skipped, reasons = [], 0, Counter()
    edits = [(d, j, messages) for d, messages in enumerate(dialogues) for j in range(0, len(messages) - 1, 2)
             if turn_kind(messages[j]) in ("edit", "upload_edit")]
    for d, j, messages in _cap(edits, cfg.limit):
        needs = _needs(model, messages[: j + 2])
        skipped += bool(needs)
        reasons.update(needs)
        if not needs:
            items.append((d, j, messages))
    return {"items": items, "skipped": {"count": skipped, "of": len(items) + skipped, "reasons": dict(reasons)}}


def run_editing(run: _Runner, plan: dict[str, Any], items_out: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, dict[str, list]] = {}
    kinds: dict[str, list[tuple[bool, float]]] = {}
    replies = run.replies([(messages[: j + 1], 1000 * d + j) for d, j, messages in plan["items"]])
    for (d, j, messages), reply in zip(plan["items"], replies):
        target = _media_parts(messages[j + 1])[0]  # the item the reference reply produced
        m, caption = target["type"], target["caption"]
        before = [p for msg in messages[:j + 1] for p in _media_parts(msg)][-1]  # the item being edited
        new, old = caption_attributes(caption, m), caption_attributes(before["caption"], before["type"])
        edited = [k for k in new if old.get(k) != new[k]]
        mine = reply.media[Modality(m)]
        pred = judge(m, mine[0], reply.audio_sample_rate) if mine else {}
        row = per.setdefault(m, {"all": [], "edited": [], "kept": [], "produced": [], "targets": [], "chance": []})
        kept = [k for k in new if k not in edited]
        words = ATTRIBUTES[m]
        row["produced"].append(bool(mine))
        row["all"].append(bool(mine) and all(pred.get(k) == v for k, v in new.items()))
        row["edited"].append(bool(mine) and all(pred.get(k) == new[k] for k in edited))
        row["kept"].append(bool(mine) and all(pred.get(k) == new[k] for k in kept))
        row["targets"].append(new)
        kinds.setdefault(turn_kind(messages[j]), []).append((row["all"][-1], attribute_chance(m)["all"]))
        row["chance"].append({"edited": float(np.prod([1 / len(words[k]) for k in edited])),
                              "kept": float(np.prod([1 / len(words[k]) for k in kept]))})
        items_out.append({"table": "editing", "dialogue": d, "turn": j // 2, "kind": turn_kind(messages[j]),
                          "request": _text(messages[j]),
                          "previous": before["caption"], "target": caption, "edited": edited, "reply": reply.text,
                          "produced": [k for k, _ in produced(reply)], "judged": pred or None})
    rows = {m: {"n": len(v["all"]), "produced": rate_of(v["produced"]),
                "all": rate_of(v["all"], attribute_chance(m)["all"]),
                "edited": rate_of(v["edited"], [c["edited"] for c in v["chance"]]),
                "kept": rate_of(v["kept"], [c["kept"] for c in v["chance"]]),
                "combinations": by_combination(m, v["targets"], v["all"])} for m, v in per.items()}
    every = [x for v in per.values() for x in v["all"]]
    chances = [attribute_chance(m)["all"] for m, v in per.items() for _ in v["all"]]
    return {"history": "reference (the recorded earlier turns and media)", "rows": rows,
            "accuracy": rate_of(every, chances), "n": len(every), "skipped": plan["skipped"],
            "by_kind": {k: rate_of([ok for ok, _ in v], [c for _, c in v]) for k, v in sorted(kinds.items())}}


# ---- 4. multi-turn dialogues -------------------------------------------------------------------------
def plan_dialogues(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    dialogues, _ = _mosit(cfg)
    items, skipped, reasons = [], 0, Counter()
    for d, messages in enumerate(_cap(dialogues, cfg.limit)):
        needs = _needs(model, messages)
        skipped += bool(needs)
        reasons.update(needs)
        if not needs:
            items.append((d, messages))
    return {"items": items, "skipped": {"count": skipped, "of": len(items) + skipped, "reasons": dict(reasons)}}


def turn_chance(reference: dict[str, Any], last_modality: str | None) -> float:
    """How often a blind guess of every judged word would pass a turn (the modality taken as right): media turns,
    every attribute of every expected item; small talk, a pick among the world's small-talk answers; other text
    turns, the reference answer's attribute words (1.0 when it names none: then any text reply without media
    passes)."""
    expected = _media_parts(reference)
    if expected:
        return float(np.prod([attribute_chance(p["type"])["all"] for p in expected]))
    if judge_small_talk(_text(reference), "") is not None:
        # a blind pick among the world's small-talk answers: the share of them that says what this one must
        return float(np.mean([judge_small_talk(_text(reference), a) for a in P.SMALL_TALK_CONTENT]))
    if last_modality is None:
        return 1.0
    want = [k for k, v in parse_caption(_text(reference), last_modality).items() if v]
    return float(np.prod([1 / len(ATTRIBUTES[last_modality][k]) for k in want]))


def judge_turn(reference: dict[str, Any], reply: Any, last_modality: str | None) -> tuple[bool, dict[str, Any]]:
    """Is a reply right for a MosIT turn? Media turns: exactly the expected items, each judged to have its
    caption's attributes. Small talk: no media, and the reply says what the reference says (thanks
    acknowledged, a greeting returned, the abilities named: `judge_small_talk`). Other text turns: no media,
    and every attribute word of the reference answer (about the latest item) is in the reply."""
    expected = [(p["type"], p["caption"]) for p in _media_parts(reference)]
    out = produced(reply)
    detail: dict[str, Any] = {"expected": [c for _, c in expected], "produced": [m for m, _ in out]}
    if sorted(m for m, _ in out) != sorted(m for m, _ in expected):
        return False, detail
    if expected:
        judged = {m: judge(m, arr, reply.audio_sample_rate) for m, arr in out}
        detail["judged"] = judged
        ok = all(judged[m].get(k) == v for m, c in expected for k, v in caption_attributes(c, m).items())
        return ok, detail
    small_talk = judge_small_talk(_text(reference), reply.text)
    if small_talk is not None:
        detail["small_talk"] = True
        return small_talk, detail
    if last_modality is None:
        return True, detail
    want = {k: v for k, v in parse_caption(_text(reference), last_modality).items() if v}
    got = parse_caption(reply.text, last_modality)
    detail["expected_words"] = want
    return all(got.get(k) == v for k, v in want.items()), detail


def run_dialogues(run: _Runner, plan: dict[str, Any], items_out: list[dict[str, Any]]) -> dict[str, Any]:
    successes, by_kind, by_index, dialogue_chance = [], {}, {}, []
    for (d, messages), replies in zip(plan["items"], run.dialogues(plan["items"])):
        last: str | None = None
        oks, chances = [], []
        for j, reply in zip(range(0, len(messages) - 1, 2), replies):
            user, reference = messages[j], messages[j + 1]
            last = ([p["type"] for p in _media_parts(user)] or [last])[-1]
            ok, detail = judge_turn(reference, reply, last)
            chance = turn_chance(reference, last)
            oks.append(ok)
            chances.append(chance)
            kind = turn_kind(user)
            by_kind.setdefault(kind, []).append((ok, chance))
            by_index.setdefault(j // 2 + 1, []).append((ok, chance))
            last = ([p["type"] for p in _media_parts(reference)] or [last])[-1]
            items_out.append({"table": "dialogue", "dialogue": d, "turn": j // 2, "kind": kind,
                              "request": _text(user), "reference": _text(reference), "reply": reply.text,
                              "right": ok, **{k: v for k, v in detail.items() if k != "judged"}})
        successes.append(all(oks))
        dialogue_chance.append(float(np.prod(chances)))
    turns = [x for v in by_kind.values() for x in v]

    def pooled(pairs: list[tuple[bool, float]]) -> dict[str, Any]:
        return rate_of([ok for ok, _ in pairs], [c for _, c in pairs])

    return {
        "history": "the model's own earlier replies (text and produced media)",
        "n": len(successes),
        "success_rate": rate_of(successes, dialogue_chance),
        "turn_accuracy": pooled(turns),
        "by_kind": {k: pooled(v) for k, v in sorted(by_kind.items())},
        "by_turn": {str(k): pooled(v) for k, v in sorted(by_index.items())},
        "skipped": plan["skipped"],
    }


# ---- 6. requests about uploaded media (task records) ------------------------------------------------------
_ANSWER_KINDS = ("upload_check", "upload_pair")  # judged on their verdict; every other task turn on its media
VERDICT_CHANCE = 0.5  # a blind pick of yes / no, or of first / second


def judge_answer(user: dict[str, Any], reply: Any) -> tuple[bool, dict[str, Any]]:
    """Is a reply to a question about the uploads in `user` right? No media, and the verdict it gives (its first
    yes / no, or first / second) is the one the uploads' world attributes give (their captions in the record)."""
    from nextgpt.world.judge import question_truth, read_verdict

    form, attribute, word = _SENSES[_text(user)]
    items = [caption_attributes(p["caption"], p["type"]) for p in _media_parts(user)]
    truth = question_truth(form, attribute, word, items)
    said = read_verdict(reply.text, form)
    detail = {"asks": [form, attribute, word], "truth": truth, "verdict": said, "produced": [m for m, _ in produced(reply)]}
    return said == truth and not detail["produced"], detail


def plan_tasks(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    from nextgpt.world.records import TASKS

    records, _ = _mosit(cfg, tasks=True)
    rows: dict[str, Any] = {}
    for task in TASKS:
        mine = _cap([(d, messages) for d, row, messages in records if row == task.name], cfg.limit)
        items, reasons = [], Counter()
        for d, messages in mine:
            needs = _needs(model, messages)
            reasons.update(needs)
            if not needs:
                items.append((d, messages))
        rows[task.name] = {"items": items, "kind": task.kind,
                           "skipped": {"count": len(mine) - len(items), "of": len(mine), "reasons": dict(reasons)}}
    return {"rows": rows}


def run_tasks(run: _Runner, plan: dict[str, Any], items_out: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, row in plan["rows"].items():
        oks, chances, by_modality = [], [], {}
        edited, kept, carried, combos, steps = [], [], [], {}, []
        replies = run.replies([(messages[:-1], 1000 * d + len(messages) - 2) for d, messages in row["items"]])
        for (d, messages), reply in zip(row["items"], replies):
            j = len(messages) - 2
            user, reference = messages[j], messages[j + 1]
            uploads = _media_parts(user)
            earlier = [p for msg in messages[:j] for p in _media_parts(msg)]
            if row["kind"] in _ANSWER_KINDS:
                ok, detail = judge_answer(user, reply)
                chance, modality = VERDICT_CHANCE, uploads[0]["type"]
            else:
                ok, detail = judge_turn(reference, reply, None)
                target = _media_parts(reference)[0]
                modality, new = target["type"], caption_attributes(target["caption"], target["type"])
                chance = attribute_chance(modality)["all"]
                judged = (detail.get("judged") or {}).get(modality) or {}
                combos.setdefault(modality, ([], []))
                combos[modality][0].append(new)
                combos[modality][1].append(ok)
                # where a wrong reply went wrong: the item's modality, the item its text names, its media
                said = parse_caption(reply.text, modality)
                steps.append((detail["produced"] == [modality], all(said.get(k) == v for k, v in new.items()), ok))
                if row["kind"] == "upload_edit":  # which words changed, which were kept
                    old = caption_attributes(uploads[0]["caption"], modality)
                    changed = [k for k in new if old[k] != new[k]]
                    edited.append(bool(judged) and all(judged.get(k) == new[k] for k in changed))
                    kept.append(bool(judged) and all(judged.get(k) == new[k] for k in new if k not in changed))
                if earlier:  # a word of the latest earlier item where the target differs from it
                    before = caption_attributes(earlier[-1]["caption"], earlier[-1]["type"])
                    differ = [k for k in new if k in before and before[k] != new[k]]
                    if differ:
                        carried.append(any(judged.get(k) == before[k] for k in differ))
            oks.append(ok)
            chances.append(chance)
            by_modality.setdefault(modality, []).append((ok, chance))
            items_out.append({"table": "tasks", "row": name, "record": d, "turn": j // 2, "kind": row["kind"],
                              "request": _text(user), "uploads": [p["caption"] for p in uploads],
                              "reference": _text(reference), "reply": reply.text, "right": ok,
                              **{k: v for k, v in detail.items() if k != "judged"},
                              **({"judged": detail["judged"]} if detail.get("judged") else {})})
        out = {"n": len(oks), "kind": row["kind"], "right": rate_of(oks, chances),
               "by_modality": {m: rate_of([ok for ok, _ in v], [c for _, c in v]) for m, v in sorted(by_modality.items())},
               "skipped": row["skipped"]}
        if row["kind"] == "upload_edit":
            out.update(edited=rate_of(edited), kept=rate_of(kept))
        if steps:
            out.update(modality=rate_of([m for m, _, _ in steps]), text=rate_of([t for _, t, _ in steps]),
                       decoded=rate_of([ok for m, t, ok in steps if m and t]))
        if carried:
            out["carried_over"] = rate_of(carried)
        if combos:
            out["combinations"] = {m: by_combination(m, t, o) for m, (t, o) in combos.items()}
        rows[name] = out
    return {"history": "reference (the recorded earlier turns and media); the record's last turn is judged",
            "rows": rows}


# ---- all tables ---------------------------------------------------------------------------------------
@dataclass
class EvalReport:
    """Everything `write_report` needs: the tables, per-item rows and sample media for the plots."""

    meta: dict[str, Any]
    tables: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, **self.tables}


def base_llm(model: Any, max_new_tokens: int) -> tuple[str, Callable[[str], str]] | None:
    """(name, answer(question)) of the preset's base LLM on its own chat template, greedy; None when the
    preset's LLM is not the bundled one (the 7B preset's Vicuna is not loaded twice)."""
    from nextgpt.llm import _load_gguf

    if model.cfg.llm.source != "gguf":
        return None
    llm, tok = _load_gguf(model.cfg.llm, torch.float32)

    def answer(question: str) -> str:
        ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]  # (1, T)
        with torch.no_grad():
            out = llm.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    return f"{model.cfg.llm.gguf_file} without the tuning (its own chat template, greedy)", answer


def evaluate(model: Any, cfg: EvalConfig, base: tuple[str, Callable[[str], str]] | None = None,
             load: tuple[str, dict[str, Any]] | None = None) -> EvalReport:
    """Run the tables on `cfg.split` of the world; see the module docstring. `base`: (name, answer(question))
    of the base LLM, which answers the general questions in the same run for comparison. With `cfg.workers` > 1
    the chat calls are answered by that many processes, each building its model as
    `NextGPT.from_preset(*load)` = the same weights as `model` (`load` = (preset name, keyword arguments)) with
    torch's threads shared among them; `model` itself still plans, embeds and judges."""
    from nextgpt.eval.provenance import display_path, git_commit, weight_hash

    # 1. what is measured (the code as it is when the run starts), then plan every table first
    commit, weights = git_commit(), weight_hash(cfg.checkpoint) if cfg.checkpoint else None
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    plans = {"captioning": plan_captioning(model, cfg), "generation": plan_generation(model, cfg),
             "editing": plan_editing(model, cfg), "dialogue": plan_dialogues(model, cfg),
             "tasks": plan_tasks(model, cfg)}
    total = (sum(len(r["items"]) for p in ("captioning", "generation", "tasks") for r in plans[p]["rows"].values())
             + len(plans["editing"]["items"]) + sum(len(m) // 2 for _, m in plans["dialogue"]["items"]))
    run = _Runner(model, cfg, total, base, load)
    items: list[dict[str, Any]] = []
    # 2. run them through model.chat
    try:
        tables = {"captioning": run_captioning(run, plans["captioning"], items),
                  "generation": run_generation(run, plans["generation"], items),
                  "editing": run_editing(run, plans["editing"], items),
                  "dialogue": run_dialogues(run, plans["dialogue"], items),
                  "tasks": run_tasks(run, plans["tasks"], items)}
    finally:
        run.close()
    samples = tables["generation"].pop("_samples")
    world = json.loads((Path(cfg.data_dir) / cfg.split / "meta.json").read_text())
    trained_on = Path(cfg.checkpoint) / "training_world.json" if cfg.checkpoint else None
    meta = {
        "preset": model.cfg.name,
        "split": cfg.split,
        "world": {k: world.get(k) for k in ("seed", "split_seed", "n", "version", "phrasings", "held_out_pairs")},
        "checkpoint_world": json.loads(trained_on.read_text()) if trained_on and trained_on.is_file() else None,
        "checkpoint": display_path(cfg.checkpoint) if cfg.checkpoint else None,
        "weight_hash": weights,
        "git_commit": commit,
        "config": {k: display_path(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "capabilities": capabilities(model),
        "decoding": "greedy (temperature 0); diffusion seeded with seed + record index",
        "chat_calls": run.calls,
        "errors": run.errors[:20],
        "elapsed_s": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "skipped": _skipped(tables),
    }
    return EvalReport(meta=meta, tables=tables, items=items, samples=samples)


def _skipped(tables: dict[str, Any]) -> list[str]:
    """One line per table or row that could not be measured, with the reason."""
    lines = []
    for name in ("captioning", "generation"):
        for row, values in tables[name]["rows"].items():
            if values.get("skipped"):
                lines.append(f"{name} / {row}: skipped: {values['skipped']}")
            if values.get("embedding_skipped"):
                lines.append(f"{name} / {row} FID & CLIPSIM analogues: skipped: {values['embedding_skipped']}")
    for name, unit in (("editing", "edit turns"), ("dialogue", "dialogues")):
        skipped = tables[name]["skipped"]
        if skipped["count"]:
            why = "; ".join(f"{reason} ({count})" for reason, count in skipped["reasons"].items())
            lines.append(f"{name}: {skipped['count']} of {skipped['of']} {unit} skipped: {why}")
    for row, values in tables["tasks"]["rows"].items():
        skipped = values["skipped"]
        if skipped["count"]:
            why = "; ".join(f"{reason} ({count})" for reason, count in skipped["reasons"].items())
            lines.append(f"tasks / {row}: {skipped['count']} of {skipped['of']} records skipped: {why}")
    return lines


def iter_lines(items: Iterable[dict[str, Any]]) -> Iterable[str]:
    for item in items:
        yield json.dumps(item, default=_jsonable) + "\n"


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
