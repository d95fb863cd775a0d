"""nextgpt.eval: metric helpers on known answers; `eval` end to end on a tiny world; `bench` in quick mode.

The tiny model's LLM is random, so an oracle scripts its replies the way a trained model answers (a
caption for an upload, signal tokens for a request, plain text otherwise): every media path then runs
through the real signal parsing, projectors, decoders, judges and metrics.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import make_world
from nextgpt.config import Modality
from nextgpt import cli
from nextgpt.eval.bench import TARGETS, BenchConfig, benchmark, write_bench
from types import SimpleNamespace

from nextgpt.eval.evaluate import TEXT_ONLY_REQUESTS, EvalConfig, evaluate, judge_turn, turn_chance, turn_kind
from nextgpt.eval.metrics import (attribute_accuracy, attribute_chance, bleu4, caption_scores, frechet_distance,
                                  mean_cosine, rate, rate_of)
from nextgpt.eval.report import write_report
from nextgpt.tiny import tiny_decoders
from nextgpt.world.judge import parse_caption

VIDEO_WORDS = ("video", "clip", "animat", "moving", "move ", "film", "watch")
AUDIO_WORDS = ("hear", "play", "sound", "audio", "tone", "beep", "buzz", "pitch", "synthesize", "record")
IMAGE_CAPTION = re.compile(r"\ba (?:red|green|blue|yellow|purple|orange) (?:circle|square|triangle)\b")
IMAGE_WORDS = ("draw", "picture", "see", "image", "paint", "sketch", "make it", "show me", "render", "generate", "create",
               "produce", "turn it", "same thing", "change")


def _answer(model, messages) -> list[int]:
    content = messages[-1]["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    text = " ".join(p.get("text", "") for p in parts).lower()
    words = lambda s: model.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    signals = lambda m: list(model.vocab.signals[m])  # noqa: E731
    from nextgpt.config import Modality

    if any(p["type"] != "text" for p in parts):
        return words("It is a red circle.")
    for modality, keys in ((Modality.VIDEO, VIDEO_WORDS), (Modality.AUDIO, AUDIO_WORDS), (Modality.IMAGE, IMAGE_WORDS)):
        if any(k in text for k in keys):
            return words("Here it is.") + signals(modality)
    if IMAGE_CAPTION.search(text):  # any request naming a coloured shape, however phrased
        return words("Here it is.") + signals(Modality.IMAGE)
    return words("It is red. Paris is the capital of France.")


@pytest.fixture()
def oracle_model(tiny_model):
    """The tiny model with its LLM's choices scripted by `_answer` (the rest of the pipeline is real)."""
    model = tiny_model
    stream = model.stream

    def scripted(messages, settings=None):
        it = iter(_answer(model, messages) + [model.builder.stop_ids[0]])
        model._sample = lambda logits, s, gen: next(it)
        yield from stream(messages, settings)

    model.stream = scripted
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), ("test",), n=2, n_dialogues=3, n_tasks=1)


# ---- metric helpers ---------------------------------------------------------------------------------
def test_bleu_of_identical_strings_is_one():
    refs = {"a": ["the cat sat on the mat"], "b": ["a red circle moving left now"]}
    assert bleu4(refs, {"a": "The cat sat on the mat.", "b": "a red circle moving left now"}) == pytest.approx(1.0, abs=1e-6)
    assert bleu4(refs, {"a": "dogs bark loudly at night", "b": "blue"}) < 0.01


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    d, mu, s = 4, 1.5, 2.0
    a = rng.normal(size=(20000, d))
    b = rng.normal(mu, s, size=(20000, d))
    expected = d * mu**2 + d * (1 + s**2 - 2 * s)  # |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrt(S_a S_b))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a[:3], b[:5]) >= 0.0  # singular covariances still give a finite number
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_cosine_and_attribute_accuracy():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(x, x) == pytest.approx(1.0)
    assert mean_cosine(x, -x) == pytest.approx(-1.0)
    acc = attribute_accuracy([{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}],
                             [{"colour": "red", "shape": "square"}, None], attribute_chance("image"))
    assert {k: (v["k"], v["n"], v["rate"]) for k, v in acc.items()} == {
        "colour": (1, 2, 0.5), "shape": (0, 2, 0.0), "all": (0, 2, 0.0)}
    assert acc["colour"]["chance"] == pytest.approx(1 / 6) and acc["all"]["chance"] == pytest.approx(1 / 18)


@pytest.mark.parametrize("k,n", [(17, 20), (0, 12), (40, 40), (1, 1), (333, 1000)])
def test_rates_carry_n_wilson_interval_and_chance(k, n):
    z = 1.959963984540054  # the closed form of the Wilson score interval
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = rate(k, n, chance=0.25)
    assert (r["k"], r["n"], r["rate"], r["chance"]) == (k, n, p, 0.25)
    assert r["ci95"] == pytest.approx([centre - half, centre + half], abs=1e-9)
    assert r["ci95"][0] <= p <= r["ci95"][1]
    assert rate_of([True] * k + [False] * (n - k), [0.5, 0.0])["chance"] == 0.25
    assert rate(0, 0)["rate"] is None and rate(0, 0)["ci95"] is None
    with pytest.raises(ValueError):
        rate(3, 2)


def test_general_questions_are_not_training_questions_and_their_keywords_not_training_answers():
    from pathlib import Path

    from nextgpt.eval.questions import GENERAL_QUESTIONS, keyword_right
    from nextgpt.world import prompts as P

    norm = lambda s: " ".join(re.sub(r"[^a-z0-9 ]", " ", s.lower()).split())  # noqa: E731
    chat = json.loads((Path(__file__).resolve().parent.parent / "assets/training/general_chat.json").read_text())
    human = {norm(t["value"]) for r in chat for t in r["conversations"] if t["from"] == "human"}
    human |= {norm(h) for h, _ in P.CHAT}
    answers = [t["value"] for r in chat for t in r["conversations"] if t["from"] == "gpt"]
    answers += [a for a in (*P.CAPTION_ANSWERS.values(),) for a in a] + list(P.T2M_ANSWERS) + list(P.EDIT_ANSWERS)
    answers += [a for _, a in P.QUESTIONS.values()] + [a for _, a in P.CHAT]
    assert len({q for q, _ in GENERAL_QUESTIONS}) == len(GENERAL_QUESTIONS)
    assert sum(bool(k) for _, k in GENERAL_QUESTIONS) >= 30
    for question, keywords in GENERAL_QUESTIONS:
        assert norm(question) not in human, question
        assert not any(keyword_right(a, keywords) for a in answers), (question, keywords)
    assert keyword_right("It is Canberra.", ("canberra",)) and not keyword_right("Sydney", ("canberra",))
    assert keyword_right("anything", ()) is None


@pytest.mark.parametrize("modality", ["image", "audio", "video"])
def test_the_fid_floor_renders_the_same_captions_afresh(modality):
    from nextgpt.eval.evaluate import render_again
    from nextgpt.world import JUDGES, parse_caption, sample_spec

    rng = np.random.default_rng(5)
    captions = [sample_spec(modality, rng).caption for _ in range(6)]
    again = render_again(modality, captions, seed=0)
    assert [JUDGES[modality](x) for x in again] == [parse_caption(c, modality) for c in captions]
    assert render_again(modality, captions, seed=0)[0].tobytes() == again[0].tobytes()  # seeded
    assert render_again(modality, captions, seed=1)[0].tobytes() != again[0].tobytes()


def test_meteor_without_java_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    scores = caption_scores({"image": ({"0": ["a red circle here"]}, {"0": "a red circle here"})})["image"]
    assert scores["METEOR"] is None and "Java" in scores["unavailable"]["METEOR"]
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_turn_kinds():
    user = lambda text: {"role": "user", "content": [{"type": "text", "text": text}]}  # noqa: E731
    assert turn_kind(user("make it blue")) == "edit"
    assert turn_kind(user("What colour is it?")) == "question"
    assert turn_kind(user("draw a red circle")) == "request"
    assert turn_kind({"role": "user", "content": [{"type": "image", "path": "x.png"}]}) == "upload"
    # the test split's own phrasings, and an upload with an edit in the same turn
    assert turn_kind(user("can u make it purple")) == "edit" and turn_kind(user("what color is it")) == "question"
    upload = lambda text: {"role": "user", "content": [{"type": "image", "path": "x.png"}, {"type": "text", "text": text}]}  # noqa: E731
    assert turn_kind(upload("Make it purple.")) == "upload_edit" and turn_kind(upload("What's this?")) == "upload"
    assert turn_kind(upload("Same but higher.")) == "upload_edit" and turn_kind(upload("reverse it")) == "upload_edit"
    assert turn_kind(upload("Make it move left.")) == "upload_animate"
    assert turn_kind(upload("Show me the shape from this clip.")) == "upload_still"
    assert turn_kind(upload("Is this higher than a middle tone?")) == "upload_check"
    two = {"role": "user", "content": [{"type": "image", "path": "x.png"}, {"type": "image", "path": "y.png"},
                                       {"type": "text", "text": "Which of these two pictures is red?"}]}
    assert turn_kind(two) == "upload_pair"


def test_small_talk_turns_are_judged_on_what_they_say():
    from nextgpt.world import prompts as P

    # every small-talk answer of every split has a rule, and each rule accepts its own answer
    answers = {gpt for book in (P.TRAIN_BOOK, P.TEST_BOOK) for _, gpt in book.chat}
    assert answers <= set(P.SMALL_TALK_CONTENT)
    text = lambda t: {"role": "assistant", "content": [{"type": "text", "text": t}]}  # noqa: E731
    reply = lambda t: SimpleNamespace(text=t, media={m: [] for m in Modality}, audio_sample_rate=16000)  # noqa: E731
    for answer in P.SMALL_TALK_CONTENT:
        assert judge_turn(text(answer), reply(answer), "image")[0], answer
        assert 0.0 < turn_chance(text(answer), "image") < 1.0
    # what a reply says decides, not that it is text
    thanks, hello = "You're welcome! Anything else?", "Hi! I can describe or create images, sounds and videos."
    abilities = "I can describe and create images, sounds and videos."
    assert not judge_turn(text(thanks), reply("It is a red circle."), "image")[0]
    assert judge_turn(text(thanks), reply("My pleasure, glad to help."), "image")[0]
    assert judge_turn(text(hello), reply("Hello! How are you?"), None)[0]
    assert not judge_turn(text(hello), reply("The high pitch is steady."), "audio")[0]  # "high" is not "hi"
    assert not judge_turn(text(abilities), reply("I'm here to help with a wide range of tasks."), None)[0]
    assert judge_turn(text(abilities), reply("I can draw pictures, play sounds and make video clips."), None)[0]


# ---- eval end to end -----------------------------------------------------------------------------------
def test_eval_end_to_end(oracle_model, world, tmp_path):
    cfg = EvalConfig(data_dir=world, split="test", limit=2, seed=0, max_new_tokens=24, progress=False)
    base = {"What is the capital of Australia?": "Canberra is.", "What is the largest planet in our solar system?": "Saturn."}
    report = evaluate(oracle_model, cfg, base=("stand-in", base.__getitem__))
    paths = write_report(report, tmp_path / "eval")
    out = tmp_path / "eval"
    for name in ("report.json", "report.md", "items.jsonl.gz", "captioning.png", "generation.png",
                 "modality_confusion.png", "embedding_metrics.png", "editing_dialogue.png", "samples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(paths["plots"]) == 6
    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["skipped"] == [] and data["meta"]["errors"] == []
    def is_rate(r, n, chance=True):
        return (r["n"] == n and r["k"] == round(r["rate"] * n) and r["ci95"][0] <= r["rate"] <= r["ci95"][1]
                and (r["chance"] is not None) == chance)

    for m in ("image", "audio", "video"):
        row = data["captioning"]["rows"][m]
        assert row["n"] == 2 and 0.0 <= row["BLEU-4"] <= 1.0 and row["CIDEr"] >= 0.0
        assert row["METEOR"] is None or 0.0 <= row["METEOR"] <= 1.0
        assert all(is_rate(v, 2) for v in row["attributes"].values())
        gen = data["generation"]["rows"][m]
        assert gen["switch_accuracy"]["rate"] == 1.0 and is_rate(gen["switch_accuracy"], 2)  # the oracle asks right
        assert is_rate(gen["attributes"]["all"], 2) and gen["frechet"] >= 0.0 and gen["frechet_floor"] >= 0.0
        assert gen["frechet_n"] == {"produced": 2, "real": 2}
        assert gen["combinations"]["seen"]["n"] + gen["combinations"]["held_out"]["n"] == 2
        assert -1.0 <= gen["clipsim"] <= 1.0 and -1.0 <= gen["clipsim_real"] <= 1.0
    assert data["generation"]["rows"]["text"]["switch_accuracy"]["rate"] == 1.0
    assert is_rate(data["dialogue"]["success_rate"], 2) and is_rate(data["dialogue"]["turn_accuracy"],
                                                                     data["dialogue"]["turn_accuracy"]["n"])
    if data["editing"]["n"]:
        assert is_rate(data["editing"]["accuracy"], data["editing"]["n"])
    assert data["generation"]["confusion"]["text"]["none"] == 2
    answers = data["generation"]["rows"]["text"]["answers"]
    assert [a["prompt"] for a in answers] == list(TEXT_ONLY_REQUESTS[:2]) and all(a["produced"] == [] for a in answers)
    # the oracle answers every text question "It is red. Paris is the capital of France.": no keyword right
    assert data["generation"]["rows"]["text"]["keyword_right"]["k"] == 0
    assert [a["base_reply"] for a in answers] == ["Canberra is.", "Saturn."]  # the stand-in base LLM
    assert [a["base_right"] for a in answers] == [True, False]
    assert data["generation"]["rows"]["text"]["base_keyword_right"]["k"] == 1
    assert data["dialogue"]["n"] == 2
    assert data["editing"]["n"] <= 2 and "reference" in data["editing"]["history"]
    tasks = data["tasks"]["rows"]  # one record per task row, each judged (the oracle's replies decide how)
    assert len(tasks) == 8 and all(r["n"] == 1 and is_rate(r["right"], 1) for r in tasks.values())
    assert "| edit image | 1 | " in (out / "report.md").read_text()
    md = (out / "report.md").read_text()
    assert "BLEU-4" in md and "confusion" in md and "Multi-turn" in md and "Wilson" in md and "chance %" in md
    r = data["generation"]["rows"]["image"]["attributes"]["all"]
    assert f"{100 * r['rate']:.1f} ({r['k']}/{r['n']}; {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f})" in md
    assert f"| {TEXT_ONLY_REQUESTS[0]} | canberra | none | **no** | {' '.join(answers[0]['reply'].split())[:157]}" in md

    # a rerun gives the same outputs (greedy decoding, diffusion seeded per record): checked on limit 1
    again = evaluate(oracle_model, EvalConfig(data_dir=world, split="test", limit=1, max_new_tokens=24, progress=False,
                                              use_meteor=False), base=("stand-in", base.__getitem__))
    first = {json.dumps({k: v for k, v in item.items()}, sort_keys=True) for item in report.items}
    assert all(json.dumps(item, sort_keys=True) in first for item in again.items)


def test_workers_give_the_replies_of_one_process(world):
    """`--workers 2`: the chat calls answered by two processes, each loading nano, give the very items and tables
    of one process (greedy decoding, every call seeded by its record)."""
    import dataclasses

    from nextgpt.model import NextGPT

    model = NextGPT.from_preset("nano")
    cfg = EvalConfig(data_dir=world, split="test", limit=1, max_new_tokens=16, num_inference_steps=4, progress=False,
                     use_meteor=False)
    one = evaluate(model, cfg)
    two = evaluate(model, dataclasses.replace(cfg, workers=2), load=("nano", {}))
    assert two.meta["chat_calls"] == one.meta["chat_calls"] == len(one.items) > 10
    assert two.meta["config"]["workers"] == 2 and one.meta["config"]["workers"] == 1
    assert two.items == one.items
    dump = lambda tables: json.dumps(tables, sort_keys=True, default=str)  # noqa: E731
    assert dump(two.tables) == dump(one.tables)
    with pytest.raises(ValueError, match="workers > 1 needs `load`"):
        evaluate(model, dataclasses.replace(cfg, workers=2))


def test_eval_cli_on_a_text_only_checkpoint(tiny_model, world, tmp_path, monkeypatch, capsys):
    """Like the nano checkpoint mid-training: no encoder, no decoders -> the rest is skipped with reasons."""
    tiny_model.can_encode = False
    tiny_model.encoder = None
    tiny_model.can_generate = set()
    monkeypatch.setattr(cli, "_load", lambda args: tiny_model)
    code = cli.main(["eval", "--data", str(world), "--split", "test", "--limit", "1", "--no-meteor", "--no-base", "--max-new-tokens", "8",
                     "--out", str(tmp_path / "e")])
    out = json.loads(capsys.readouterr().out.strip())
    assert code == 0, out
    assert any("captioning / image: skipped: checkpoint has no trained media encoder" in s for s in out["skipped"])
    assert any("generation / video: skipped" in s for s in out["skipped"])
    assert any(s.startswith("dialogue: 1 of 1 dialogues skipped: ") for s in out["skipped"])
    assert out["summary"]["switch_accuracy"]["text"] is not None
    assert (tmp_path / "e" / "modality_confusion.png").is_file()
    assert "skipped" in (tmp_path / "e" / "report.md").read_text()


def test_eval_cli_writes_the_missing_split_and_names_its_provenance(tiny_model, tmp_path, monkeypatch, capsys):
    """A fresh clone has no data/world: `eval` writes the split it needs (the same bytes `make_split` writes)
    and the report names its split, the checkpoint's weight hash and the git commit."""
    from safetensors.torch import save_file

    from nextgpt.eval.provenance import git_commit, weight_hash
    from nextgpt.world.records import SPLIT_SIZES

    tiny_model.can_encode = False
    tiny_model.encoder = None
    tiny_model.can_generate = set()
    monkeypatch.setattr(cli, "_load", lambda args: tiny_model)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"w": torch.arange(4.0)}, str(ckpt / "a.safetensors"))
    code = cli.main(["eval", "--data", str(tmp_path / "nowhere"), "--checkpoint", str(ckpt), "--limit", "1",
                     "--no-meteor", "--no-base", "--max-new-tokens", "4", "--out", str(tmp_path / "e")])
    out = json.loads(capsys.readouterr().out.strip())
    assert code == 0, out
    assert out["summary"]["split"] == "val"  # the development split by default
    val = tmp_path / "nowhere" / "val"
    assert len(json.loads((val / "t2m.json").read_text())) == 3 * SPLIT_SIZES["val"]
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["meta"]["split"] == "val" and report["meta"]["weight_hash"] == weight_hash(ckpt)
    assert report["meta"]["weight_hash"].startswith("sha256:") and report["meta"]["git_commit"] == git_commit()
    md = (tmp_path / "e" / "report.md").read_text()
    assert "Split **val**" in md and report["meta"]["weight_hash"] in md


def test_weight_hash_follows_the_weights_only(tmp_path):
    from safetensors.torch import save_file

    from nextgpt.eval.provenance import weight_hash

    assert weight_hash(tmp_path) is None
    (tmp_path / "sub").mkdir()
    save_file({"w": torch.zeros(3)}, str(tmp_path / "sub" / "m.safetensors"))
    first = weight_hash(tmp_path)
    (tmp_path / "README.md").write_text("a model card")
    assert weight_hash(tmp_path) == first
    save_file({"w": torch.ones(3)}, str(tmp_path / "sub" / "m.safetensors"))
    assert weight_hash(tmp_path) != first


# ---- bench -------------------------------------------------------------------------------------------
def test_bench_quick(oracle_model, tmp_path):
    result = benchmark(oracle_model, BenchConfig(quick=True, max_new_tokens=24), cold_start_cmd=None,
                       decoder_factory=lambda: tiny_decoders(oracle_model.cfg))
    paths = write_bench(result, tmp_path / "b")
    m = result["measurements"]
    assert m["ready_s"]["value"] is None and "skip" in m["ready_s"]["skipped"]
    for key in ("first_token_s", "tokens_per_s", "image_s", "audio_s", "video_s", "any_to_any_s", "conversation_s",
                "official_conversation_s", "speedup", "peak_rss_gb", "memory_bound_tokens_per_s", "tokens_per_s_of_limit"):
        assert m[key]["value"] is not None and m[key]["value"] > 0, (key, m[key])
    assert m["conversation_s"]["detail"]["produced"] == [[], ["image"], ["video"], ["audio"], []]
    llm_bytes = sum(p.numel() * p.element_size() for p in {p.data_ptr(): p for p in oracle_model.llm.parameters()
                                                             if p.dim() == 2}.values())
    assert m["memory_bound_tokens_per_s"]["detail"]["weight_gb"] == round(llm_bytes / 1e9, 3)
    assert m["tokens_per_s_of_limit"]["value"] == pytest.approx(m["tokens_per_s"]["value"]
                                                                 / m["memory_bound_tokens_per_s"]["value"])
    official = m["official_conversation_s"]["detail"]
    assert official["decoder_loads"] == 3 and official["decoder_load_s"] > 0
    for detail in (m["conversation_s"]["detail"], official):  # the parts are within the whole
        assert 0 < detail["llm_s"] and 0 < detail["decoders_s"]
    assert m["conversation_s"]["detail"]["llm_s"] + m["conversation_s"]["detail"]["decoders_s"] <= m["conversation_s"]["value"]
    assert official["decoder_load_s"] <= official["decoders_s"]
    assert len(result["targets"]) == len(TARGETS)
    assert {t["met"] for t in result["targets"]} <= {True, False, None}
    assert result["machine"]["torch_threads"] >= 1
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "Official way" in md and "by how much" in md and "Where the time goes" in md
    assert json.loads(open(paths["json"]).read())["preset"] == oracle_model.cfg.name
    assert result["git_commit"] and result["weight_hash"] is None  # no checkpoint folder given


def test_bench_on_a_text_only_checkpoint(tiny_model, tmp_path):
    tiny_model.can_encode = False
    tiny_model.can_generate = set()
    result = benchmark(tiny_model, BenchConfig(quick=True, max_new_tokens=8), cold_start_cmd=None)
    m = result["measurements"]
    assert m["first_token_s"]["value"] is not None
    assert "no trained image output projector" in m["image_s"]["skipped"]
    assert m["conversation_s"]["skipped"] and m["speedup"]["value"] is None
    verdicts = {t["key"]: t["verdict"] for t in result["targets"]}
    assert verdicts["image_s"].startswith("not measured:")


# ---- 6. requests about uploaded media ------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_world(tmp_path_factory):
    """A test split with 2 task records per row (and one item, one dialogue)."""
    from nextgpt.world.records import make_split

    root = tmp_path_factory.mktemp("tasks")
    make_split(root, "test", n=1, seed=0, n_dialogues=1, n_tasks=2, workers=2)
    return root


def _render(caption: str, modality: str, seed: int) -> np.ndarray:
    """A fresh world item with the words of `caption` (new size, place, pitch, path)."""
    from nextgpt.world.vocab import sample_spec

    spec = sample_spec(modality, np.random.default_rng(seed))
    for attribute, word in parse_caption(caption, modality).items():
        spec = spec.edited(attribute, word)
    return spec.render()


_FLIP = {"Yes": "No", "No": "Yes", "first": "second", "second": "first"}


class _Scripted:
    """Stands in for the eval's runner: answers each task turn from its record, rightly or in a wrong way that
    models a failure seen in the shipped nano (an upload returned unchanged, an earlier item's words carried over,
    the wrong colour after a conversion, the opposite verdict)."""

    def __init__(self, records: dict[int, list], right: bool) -> None:
        self.records, self.right = records, right

    def replies(self, calls):
        return [self.chat(messages, seed) for messages, seed in calls]

    def chat(self, messages, seed):
        from nextgpt.eval.evaluate import _media_parts, _text
        from nextgpt.model import Reply

        full = next(m for m in self.records.values() if m[: len(messages)] == list(messages))
        reference, user = full[len(messages)], messages[-1]
        text = _text(reference)
        expected = _media_parts(reference)
        if not expected:  # a question about the uploads: the reference verdict, or the other one
            return Reply(text=text if self.right else re.sub(r"\b(Yes|No|first|second)\b",
                                                              lambda w: _FLIP[w.group(1)], text, count=1))
        (target,) = expected
        caption, modality = target["caption"], target["type"]
        if not self.right:
            uploads, earlier = _media_parts(user), [p for m in messages[:-1] for p in _media_parts(m)]
            if uploads and uploads[0]["type"] == modality:  # the upload returned unchanged
                caption = uploads[0]["caption"]
            elif not uploads:  # the earlier item's words carried over into the new one
                words = parse_caption(caption, modality)
                words.update({k: v for k, v in parse_caption(earlier[-1]["caption"], earlier[-1]["type"]).items()
                              if v and k in words})
                caption = " ".join(words.values())
            else:  # a conversion in the wrong colour
                words = parse_caption(caption, modality)
                words["colour"] = next(c for c in ("red", "blue") if c != words["colour"])
                caption = " ".join(words.values())
        return Reply(text=text, media={Modality(modality): [_render(caption, modality, seed)]})


@pytest.mark.parametrize("right", [True, False])
def test_task_rows_judge_right_and_wrong_replies(task_world, right):
    from nextgpt.eval.evaluate import _mosit, plan_tasks, run_tasks
    from nextgpt.eval.report import _tasks_section
    from nextgpt.world.records import TASKS

    cfg = EvalConfig(data_dir=task_world, split="test", limit=2, progress=False)
    model = SimpleNamespace(can_encode=True, can_generate=set(Modality))
    plan = plan_tasks(model, cfg)
    records = {d: messages for d, _, messages in _mosit(cfg, tasks=True)[0]}
    items: list[dict] = []
    out = run_tasks(_Scripted(records, right), plan, items)
    assert list(out["rows"]) == [t.name for t in TASKS] and len(items) == 2 * len(TASKS)
    for name, row in out["rows"].items():
        assert row["n"] == 2 and row["right"]["k"] == (2 if right else 0), (name, [i for i in items if i["row"] == name])
        assert 0 < row["right"]["chance"] < 1
    edits = out["rows"]["edit video"]
    assert edits["edited"]["k"] == (2 if right else 0) and edits["kept"]["k"] == 2  # unchanged: kept, not edited
    carried = out["rows"]["request after another item"]["carried_over"]
    assert carried["n"] == 2 and carried["k"] == (0 if right else 2)
    for name, row in out["rows"].items():  # the wrong replies' text names the right item: the media side failed
        if "modality" in row:
            assert row["modality"]["k"] == row["text"]["k"] == 2, name
            assert row["decoded"]["n"] == 2 and row["decoded"]["k"] == (2 if right else 0), name
    section = "\n".join(_tasks_section(out))
    assert "| edit audio | 2 | " + ("100.0" if right else "0.0") in section and "two uploads" in section
    assert "34.2-100.0) | " + ("100.0 (n 2)" if right else "0.0 (n 2)") + " |" in section  # modality, text, decoded


def test_task_rows_say_where_a_media_turn_went_wrong(task_world):
    """A reply in another modality, and one whose text names another item, count against *modality* and *text*;
    *decoded* counts only the replies with both right."""
    from nextgpt.eval.evaluate import _media_parts, _mosit, plan_tasks, run_tasks
    from nextgpt.model import Reply
    from nextgpt.world.vocab import ATTRIBUTES

    cfg = EvalConfig(data_dir=task_world, split="test", limit=2, progress=False)
    plan = plan_tasks(SimpleNamespace(can_encode=True, can_generate=set(Modality)), cfg)
    records = {d: messages for d, _, messages in _mosit(cfg, tasks=True)[0]}
    right = _Scripted(records, True)

    class Confused(_Scripted):
        calls = 0

        def chat(self, messages, seed):
            reply = right.chat(messages, seed)
            Confused.calls += 1
            items = [m for m, arrays in reply.media.items() if arrays]
            if not items:
                return reply
            (modality,) = items
            if Confused.calls % 2:  # an item of another modality in the right one's place
                other = Modality("audio" if modality.value != "audio" else "image")
                return Reply(text=reply.text, media={other: [_render(
                    {"audio": "a low steady tone", "image": "a red circle"}[other.value], other.value, seed)]})
            target = _media_parts(next(m for m in records.values() if m[: len(messages)] == list(messages))
                                  [len(messages)])[0]
            words = parse_caption(target["caption"], modality.value)
            wrong = {k: next(w for w in ATTRIBUTES[modality.value][k] if w != v) for k, v in words.items()}
            return Reply(text=f"Here it is: {' '.join(wrong.values())}.", media=reply.media)

    out = run_tasks(Confused(records, True), plan, [])
    for name in ("edit image", "edit audio", "edit video", "image -> video", "video -> image"):
        row = out["rows"][name]
        assert row["right"]["k"] == 1 and row["modality"]["k"] == 1, name  # one of two in the wrong modality
        assert row["text"]["k"] == 1 and row["decoded"]["n"] == 0, name  # the other's text names another item


def test_answers_about_uploads_are_judged_on_the_uploads_attributes():
    from nextgpt.eval.evaluate import judge_answer
    from nextgpt.model import Reply

    def user(text, *captions):
        kinds = {"a red circle": "image", "a blue circle": "image", "a high steady tone": "audio",
                 "a low steady tone": "audio"}
        return {"role": "user", "content": [{"type": kinds[c], "path": "x", "caption": c} for c in captions]
                + [{"type": "text", "text": text}]}

    pair = user("Which of these two pictures is red?", "a blue circle", "a red circle")
    assert judge_answer(pair, Reply(text="The second one. The first is a blue circle, the second is a red circle."))[0]
    assert not judge_answer(pair, Reply(text="The first one."))[0]
    assert not judge_answer(pair, Reply(text="It is a red circle."))[0]  # no verdict
    # the verdict follows the uploads, whatever the question's words suggest
    swapped = user("Which of these two pictures is red?", "a red circle", "a blue circle")
    assert judge_answer(swapped, Reply(text="The first one."))[0]
    check = user("Is this higher than a middle tone?", "a low steady tone")
    assert judge_answer(check, Reply(text="No, it is a low steady tone."))[0]
    assert not judge_answer(check, Reply(text="Yes, it is high."))[0]
    same = user("same pitch?", "a low steady tone", "a high steady tone")
    assert judge_answer(same, Reply(text="No."))[0] and not judge_answer(same, Reply(text="Yes, both."))[0]
    # a right verdict with media attached is wrong: the question asks for text
    image = np.full((64, 64, 3), 255, np.uint8)
    assert not judge_answer(check, Reply(text="No.", media={Modality.IMAGE: [image]}))[0]
