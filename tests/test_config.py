"""Presets, derived dimensions and config round trips."""

from __future__ import annotations

import argparse

import pytest

from nextgpt.config import GenerationSettings, Modality, NextGPTConfig


def test_official_token_counts():
    cfg = NextGPTConfig.from_name("nextgpt-7b")
    assert len(cfg.added_tokens) == 38  # 32000 -> 32038
    assert cfg.added_tokens[:3] == ("<Img>", "</Img>", "[IMG0]")
    assert cfg.added_tokens[6] == "[VID0]" and cfg.added_tokens[30] == "[AUD0]"
    assert {s.modality: s.num_signal_tokens for s in cfg.decoders} == {Modality.IMAGE: 4, Modality.VIDEO: 24, Modality.AUDIO: 8}
    assert (cfg.decoder("image").cond_len, cfg.decoder("image").cond_dim) == (77, 768)
    assert (cfg.decoder("video").cond_len, cfg.decoder("video").cond_dim) == (77, 1024)
    assert cfg.decoder("audio").pooled and cfg.decoder("audio").cond_dim == 512


@pytest.mark.parametrize("name", ["nano", "nextgpt-7b", "tiny"])
def test_round_trip(tmp_path, name):
    cfg = NextGPTConfig.from_name(name)
    cfg.save(tmp_path)
    assert NextGPTConfig.load(tmp_path) == cfg


def test_tiny_is_nanos_layout_at_toy_widths():
    """The tests, the app's stand-in and the benchmarks' toy scale share one tiny preset: nano's tokenizer,
    template and signal tokens, so its prompts are token for token nano's."""
    nano, tiny = NextGPTConfig.from_name("nano"), NextGPTConfig.from_name("tiny")
    assert tiny.added_tokens == nano.added_tokens and tiny.caption_encoder == nano.caption_encoder
    assert (tiny.llm.source, tiny.llm.gguf_file, tiny.llm.template, tiny.llm.base_vocab_size) == (
        nano.llm.source, nano.llm.gguf_file, nano.llm.template, nano.llm.base_vocab_size)
    assert tiny.llm.hidden_size < nano.llm.hidden_size and tiny.encoder.out_embed_dim < nano.encoder.out_embed_dim
    assert all(spec.num_inference_steps == 2 for spec in tiny.decoders)


def test_modality_table_covers_every_modality_and_preset():
    """MODALITY_INFO has one row per modality in the canonical order, and every preset's signal tokens use the
    table's prefixes; the names each tier keys on are distinct."""
    from nextgpt.config import MODALITY_INFO, PRESETS, Modality

    assert list(MODALITY_INFO) == list(Modality) and all(s.modality is m for m, s in MODALITY_INFO.items())
    for name in PRESETS:
        for spec in NextGPTConfig.from_name(name).decoders:
            assert spec.signal_prefix == MODALITY_INFO[spec.modality].signal_prefix
    for key in ("name", "noun", "reply_key", "extension", "world_dir", "signal_prefix", "media_token"):
        assert len({getattr(s, key) for s in MODALITY_INFO.values()}) == len(Modality), key
    assert MODALITY_INFO[Modality.IMAGE].media_token == "<image>"


def test_the_names_a_user_picks_are_defined_once():
    """--preset and --quantization take their choices from config.py; tiny has no weights, so it is not one."""
    from nextgpt.config import MODEL_PRESETS, PRESETS, QUANTIZATIONS
    from nextgpt.options import add_model_args

    assert set(MODEL_PRESETS) == set(PRESETS) - {"tiny"} and QUANTIZATIONS == ("none", "8bit", "4bit")
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    choices = {a.dest: a.choices for a in parser._actions}
    assert tuple(choices["preset"]) == MODEL_PRESETS and tuple(choices["quantization"]) == QUANTIZATIONS


def test_unknown_preset_and_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        NextGPTConfig.from_name("gpt-5")
    d = NextGPTConfig.from_name("nano").to_dict() | {"bogus": 1}
    with pytest.raises(ValueError, match="bogus"):
        NextGPTConfig.from_dict(d)


@pytest.mark.parametrize("kw", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"num_frames": 1}])
def test_settings_validation(kw):
    with pytest.raises(ValueError):
        GenerationSettings(**kw)
