"""The shared training loop: stage plans pick what trains, losses fall, an interrupted run resumes to
exactly where an uninterrupted one ends, and checkpoint writes are atomic."""

from __future__ import annotations

import copy

import pytest
import torch

from nextgpt.config import Modality
from nextgpt.training.data import Collator, prepare
from nextgpt.training.loop import RunConfig, data_order, set_trainable, train
from nextgpt.training.plans import PLANS
from nextgpt.world import record_to_messages


def examples(model):
    msgs = []
    for colour in ("red", "blue", "green", "yellow"):
        msgs.append([{"role": "user", "content": [{"type": "image", "path": f"{colour}.png"}, {"type": "text", "text": "what?"}]},
                     {"role": "assistant", "content": f"a {colour} circle"}])
        msgs.append([{"role": "user", "content": f"draw a {colour} square"},
                     {"role": "assistant", "content": [{"type": "text", "text": "Here."},
                                                       {"type": "image", "path": "o.png", "caption": f"a {colour} square"}]}])
    prepared = prepare(msgs, model.builder, 64)
    g = torch.Generator().manual_seed(0)
    spec = model.cfg.decoder("image")
    feats = {f"{c}.png": torch.randn(model.cfg.encoder.out_embed_dim, generator=g) for c in ("red", "blue", "green", "yellow")}
    targets = {(Modality.IMAGE, f"a {c} square"): torch.randn(spec.cond_len, spec.cond_dim, generator=g)
               for c in ("red", "blue", "green", "yellow")}
    return prepared, Collator(0, feats, targets)


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_record_markers_map_to_media(tmp_path):
    rec = {"image_list": [{"image_name": "images/1.png", "caption": "a red circle"},
                          {"image_name": "images/2.png", "caption": "a blue circle"}],
           "conversation": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "a red circle"},
                            {"from": "human", "value": "make it blue"}, {"from": "gpt", "value": "Here: a blue circle. <image>"}]}
    msgs = record_to_messages(rec, tmp_path)
    assert msgs[0]["content"][0] == {"type": "image", "path": str(tmp_path / "images/1.png"), "caption": "a red circle"}
    assert msgs[3]["content"][1]["caption"] == "a blue circle" and msgs[3]["role"] == "assistant"


def test_plans_freeze_what_they_do_not_train(tiny_model):
    set_trainable(tiny_model, PLANS["stage1"])
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert names == {"input_proj.weight", "input_proj.bias"}
    set_trainable(tiny_model, PLANS["stage2"])
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert all(n.startswith("output_projectors.") or "embed_tokens" in n for n in names)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_stage_learns_on_tiny_model(tiny_model, tmp_path, stage):
    prepared, collate = examples(tiny_model)
    run = RunConfig(out=tmp_path / "ckpt", run_dir=tmp_path / "run", steps=12, batch_size=4, lr=3e-3)
    before = tiny_model.llm.get_input_embeddings().weight[: tiny_model.cfg.llm.base_vocab_size].clone()
    result = train(tiny_model, PLANS[stage], prepared, collate, run)
    hist = result["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    # the base vocabulary never moves, even when the added rows train
    assert torch.equal(before, tiny_model.llm.get_input_embeddings().weight[: tiny_model.cfg.llm.base_vocab_size])
    written = {p.name for p in (tmp_path / "ckpt").iterdir()}
    want = {"stage1": {"input_projection.safetensors"}, "stage2": {"output_projectors.safetensors", "token_rows.safetensors"}}[stage]
    assert written == want | {"config.json"}


def test_interrupted_run_resumes_to_the_same_end(tiny_model, tmp_path):
    prepared, collate = examples(tiny_model)
    fresh = copy.deepcopy(tiny_model)
    plan = PLANS["stage2"]
    full = RunConfig(out=tmp_path / "a", run_dir=tmp_path / "run_a", steps=6, batch_size=4, lr=1e-3, save_every=2)
    train(tiny_model, plan, prepared, collate, full)
    expected = trainable(tiny_model)

    cut = RunConfig(out=tmp_path / "b", run_dir=tmp_path / "run_b", steps=6, batch_size=4, lr=1e-3, save_every=2)
    second = copy.deepcopy(fresh)
    stopped = train(fresh, plan, prepared, collate, cut, stop_after=3)  # "killed" after step 3
    assert stopped["stopped_at"] == 3
    resumed = train(second, plan, prepared, collate, cut)  # a new process starts from the saved state
    assert resumed["history"][0]["step"] == 4
    got = trainable(second)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, msg=name)


def test_data_order_is_fixed_by_the_seed():
    a, b = data_order(10, 7, 3, seed=1), data_order(10, 7, 3, seed=1)
    assert (a == b).all() and a.shape == (7, 3)
    assert not (a == data_order(10, 7, 3, seed=2)).all()


def test_projector_alignment_learns_on_cached_signal_states(tiny_model):
    from nextgpt.training.projectors import AlignArgs, collect_states, fit, measure

    prepared, collate = examples(tiny_model)
    generating = [p for p in prepared if p.block_keys]
    states = collect_states(tiny_model, generating, collate, batch_size=3)[Modality.IMAGE]
    spec = tiny_model.cfg.decoder("image")
    assert states.captions == [f"a {c} square" for c in ("red", "blue", "green", "yellow")]
    assert states.hidden.shape == states.embeds.shape == (4, spec.num_signal_tokens, tiny_model.cfg.llm.hidden_size)
    # the cached inputs are exactly what the stages' L2 sees through the LLM
    projector = tiny_model.output_projectors["image"]
    with torch.no_grad():
        l2 = tiny_model(collate(generating))["l2"]
        cached = torch.nn.functional.mse_loss(projector(states.hidden, states.embeds), states.targets)
    torch.testing.assert_close(cached, l2)
    candidates = dict(zip(states.captions, states.targets))
    before = measure(projector, states, candidates)
    fit(projector, states, AlignArgs(steps=400, batch_size=4, lr=1e-2, weight_decay=0.0))
    after = measure(projector, states, candidates, Modality.IMAGE)
    assert after["mse"] < before["mse"] / 4
    assert after["nearest_caption_accuracy"] == 1.0 and after["n"] == 4 and after["candidates"] == 4
    # per word: the four captions differ in colour only
    assert after["nearest_colour_accuracy"] == after["nearest_shape_accuracy"] == 1.0


def test_upload_features_are_encoded_once_per_encoder_and_file(tiny_model, tmp_path, monkeypatch):
    """The stages and the alignment share a features file per encoder: a second pass encodes nothing, a changed
    file is encoded again, and other encoder weights get a file of their own."""
    import numpy as np
    from PIL import Image

    from nextgpt.training.data import compute_features, features_cache

    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for name, rgb in colours.items():
        Image.fromarray(np.full((32, 32, 3), rgb, np.uint8)).save(tmp_path / f"{name}.png")
    msgs = [[{"role": "user", "content": [{"type": "image", "path": str(tmp_path / f"{c}.png")},
                                          {"type": "text", "text": "what?"}]},
             {"role": "assistant", "content": f"a {c} square"}] for c in colours]
    prepared = prepare(msgs, tiny_model.builder, 64)
    encoder = tiny_model.encoder
    cache = features_cache(tmp_path, encoder)
    assert cache.parent == tmp_path / ".features"
    encoded: list[int] = []
    real = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda m, arrays, **kw: encoded.append(len(arrays)) or real(m, arrays, **kw))
    first = compute_features(encoder, prepared, cache=cache)
    assert cache.is_file() and sum(encoded) == 3
    again = compute_features(encoder, prepared, cache=cache)
    assert sum(encoded) == 3  # nothing encoded the second time
    for key, value in first.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0)
    Image.fromarray(np.full((32, 40, 3), (200, 200, 30), np.uint8)).save(tmp_path / "green.png")  # a new file
    changed = compute_features(encoder, prepared, cache=cache)
    assert sum(encoded) == 4
    green = str(tmp_path / "green.png")
    assert not torch.equal(changed[green], first[green])
    torch.testing.assert_close(changed[green], compute_features(encoder, prepared[2:])[green])
    assert sum(encoded) == 5  # the pass without a features file encoded its one upload
    cache.write_bytes(b"not a features file")  # a broken file is encoded again, not an error
    torch.testing.assert_close(compute_features(encoder, prepared, cache=cache)[green], changed[green])
    assert sum(encoded) == 8
    with torch.no_grad():
        next(encoder.model.parameters()).add_(1.0)
    assert features_cache(tmp_path, encoder) != cache


def test_signal_states_pass_gives_the_whole_records_states_in_their_order(tiny_model):
    """collect_states cuts records after their last block, sorts them by length and skips the LM head: its
    states must be the ones one plain forward over the whole, padded records gives, block for block."""
    from nextgpt.training.projectors import collect_states

    def block(modality, caption):
        return {"type": modality, "path": f"o.{modality}", "caption": caption}

    msgs = []
    for i, colour in enumerate(("red", "blue", "green", "yellow", "purple")):
        turns = [{"role": "user", "content": [{"type": "image", "path": f"{colour}.png"},
                                              {"type": "text", "text": "make a video of it" + " please" * i}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "Here."},
                                                   block("video", f"a {colour} square moving left")]}]
        if i % 2:  # a second turn: an image, then an edit of the video, then words after the last block
            turns += [{"role": "user", "content": "now a picture and make the clip go right"},
                      {"role": "assistant", "content": [block("image", f"a {colour} circle"),
                                                        block("video", f"a {colour} square moving right"),
                                                        {"type": "text", "text": "Done, both." * i}]}]
        msgs.append(turns)
    prepared = prepare(msgs, tiny_model.builder, 256)
    assert len(prepared) == 5 and len({len(p.example.ids) for p in prepared}) == 5
    g = torch.Generator().manual_seed(0)
    feats = {f"{c}.png": torch.randn(tiny_model.cfg.encoder.out_embed_dim, generator=g)
             for c in ("red", "blue", "green", "yellow", "purple")}
    targets = {}
    for p in prepared:
        for m, caption in p.block_keys:
            spec = tiny_model.cfg.decoder(m)
            shape = (spec.cond_len, spec.cond_dim) if spec.cond_len else (spec.cond_dim,)
            targets[(m, caption)] = torch.randn(*shape, generator=g)
    collate = Collator(0, feats, targets)
    tiny_model.eval()
    with torch.no_grad():
        batch = collate(prepared)
        _, plain = tiny_model.signal_states(batch)
    video = [c for p in prepared for m, c in p.block_keys if m == Modality.VIDEO]
    for modality in (None, Modality.VIDEO):
        states = collect_states(tiny_model, prepared, collate, batch_size=2, modality=modality)
        assert set(states) == ({Modality.VIDEO} if modality else {Modality.VIDEO, Modality.IMAGE})
        for m, got in states.items():
            torch.testing.assert_close(got.hidden, plain[m][0].float(), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got.embeds, plain[m][1].float())
            torch.testing.assert_close(got.targets, batch["block_targets"][m].float())
        assert states[Modality.VIDEO].captions == video
        assert states[Modality.VIDEO].previous == [None if c.endswith("left") else c.replace("right", "left")
                                                   for c in video]


def test_interrupted_projector_alignment_resumes_to_the_same_weights(tiny_model, tmp_path):
    from nextgpt.training.projectors import AlignArgs, States, fit

    projector = copy.deepcopy(tiny_model.output_projectors["image"]).float()
    h, n = tiny_model.cfg.llm.hidden_size, tiny_model.cfg.decoder("image").num_signal_tokens
    gen = torch.Generator().manual_seed(1)
    hidden, embeds = torch.randn(6, n, h, generator=gen), torch.randn(6, n, h, generator=gen)
    targets = torch.randn(6, *projector(hidden[:1], embeds[:1]).shape[1:], generator=gen)
    states = States(hidden, embeds, targets, [f"c{i}" for i in range(6)], [None] * 6)
    args = AlignArgs(steps=8, batch_size=4, lr=1e-2, weight_decay=0.01)
    straight = copy.deepcopy(projector)
    fit(straight, states, args, run_dir=tmp_path / "straight")
    cut = copy.deepcopy(projector)
    fit(cut, states, args, run_dir=tmp_path / "cut", stop_after=3)
    resumed = copy.deepcopy(projector)  # a new process: the saved state is loaded over the starting weights
    fit(resumed, states, args, run_dir=tmp_path / "cut")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not torch.equal(straight.fc.weight, projector.fc.weight)  # it trained


def test_standardized_input_trains_and_folds_back_into_the_same_layer(tiny_model):
    """The projector's input layer trains on standardized inputs and leaves as the same keys and function."""
    import copy

    from nextgpt.training.projectors import AlignArgs, States, fit, input_statistics, standardized_input

    projector = copy.deepcopy(tiny_model.output_projectors["image"]).float()
    spec, h = tiny_model.cfg.decoder("image"), tiny_model.cfg.llm.hidden_size
    gen = torch.Generator().manual_seed(0)
    scale = torch.ones(h)
    scale[:2] = 30.0  # a few dimensions far larger than the rest, as in an LLM's hidden states
    hidden = torch.randn(8, spec.num_signal_tokens, h, generator=gen) * scale + 5.0
    embeds = torch.randn(8, spec.num_signal_tokens, h, generator=gen)
    targets = torch.randn(8, *projector(hidden[:1], embeds[:1]).shape[1:], generator=gen)
    states = States(hidden, embeds, targets, [f"c{i}" for i in range(8)], [None] * 8)
    mean, std = input_statistics(states)
    assert mean.shape == std.shape == (h,) and std[:2].min() > 10 * std[2:].max()
    keys = set(projector.state_dict())
    with torch.no_grad():
        before = projector(hidden, embeds)
    with standardized_input(projector, mean, std):  # unchanged function on entry and on leaving untrained
        with torch.no_grad():
            torch.testing.assert_close(projector(hidden, embeds), before, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(projector(hidden, embeds), before, rtol=1e-4, atol=1e-4)
    with standardized_input(projector, mean, std):
        fit(projector, states, AlignArgs(steps=60, batch_size=8, lr=1e-2, weight_decay=0.0))
        with torch.no_grad():
            trained = projector(hidden, embeds)
    assert set(projector.state_dict()) == keys and isinstance(projector.fc, torch.nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(projector(hidden, embeds), trained, rtol=1e-4, atol=1e-4)
        assert torch.nn.functional.mse_loss(trained, targets) < torch.nn.functional.mse_loss(before, targets)
    # edits: blocks whose caption changed from the last one (not a first block, not a repeat)
    assert States(hidden, embeds, targets, ["a", "b", "b", "c", "d", "d", "e", "f"],
                  [None, "a", "b", None, None, "d", "d", "e"]).edits() == [1, 6, 7]


def test_stage_mix_repeats_small_kinds_and_subsamples_large_ones():
    import random

    from nextgpt.training.stages import mixed

    items = list(range(10))
    assert mixed(items, 1.0, random.Random(0)) == items
    assert mixed(items, 3.0, random.Random(0)) == items * 3
    part = mixed(items, 0.3, random.Random(0))
    assert len(part) == 3 and len(set(part)) == 3 and set(part) <= set(items)
    assert part == mixed(items, 0.3, random.Random(0))  # fixed by the seed
    assert len(mixed(items, 2.5, random.Random(0))) == 25
    plan = PLANS["stage3"]
    assert plan.repeats("general") > 1 > plan.repeats("caption") and plan.repeats("unlisted") == 1.0


def test_stage_modality_filter_keeps_conversations_with_that_modality(tmp_path):
    from nextgpt.training.stages import has_modality

    rec = {"video_list": [{"video_name": "videos/1.mp4", "caption": "a red circle moving left"}],
           "conversation": [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "a red circle moving left"}]}
    msgs = record_to_messages(rec, tmp_path)
    assert has_modality(msgs, "video") and not has_modality(msgs, "image")
    assert not has_modality([{"role": "user", "content": "hello"}], "video")


def test_align_script_flags_keep_the_dataclass_defaults():
    """A boolean that defaults to True must stay True unless switched off (it once parsed as store_true: False)."""
    from nextgpt.training.projectors import AlignArgs, parse_args

    assert parse_args([]) == AlignArgs()
    assert parse_args([]).standardize is True and parse_args(["--no-standardize"]).standardize is False
    assert parse_args(["--fresh", "--smoke"]).fresh is True
