"""The nextgpt-7b code path end to end at toy size: a stand-in of the official release in its own formats
(random weights; nextgpt/synthetic.py), converted with `python -m nextgpt convert`, loaded with the same code as
the real release (`NextGPT.from_preset("nextgpt-7b", ...)`), one turn of every conversion through `chat`.

The LLM has LLaMA's architecture and the real LLaMA tokenizer (32000 + 38 added tokens); ImageBind keeps its
1024-d embedding and preprocessing; the projectors feed 77x768 / 77x1024 / 512 conditions into toy decoders of
the official pipeline classes. Replies are dictated token by token (random weights never choose signal tokens).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nextgpt.config import GenerationSettings, Modality, NextGPTConfig
from nextgpt.eval.bench7b import TEXT_REPLY, PhaseMeter, conversions, run_turn
from nextgpt.loading import convert_official_checkpoint
from nextgpt.model import NextGPT
from nextgpt.synthetic import ScriptedNextGPT, build_release, release_config
from tests.conftest import run_nextgpt

pytestmark = pytest.mark.usefixtures("one_thread")

PREFIX = "llama_model.base_model.model."
CONDITION = {Modality.IMAGE: (1, 77, 768), Modality.VIDEO: (1, 77, 1024), Modality.AUDIO: (1, 512)}


def test_toy_scale_keeps_the_official_interfaces():
    full, tiny = release_config("full"), release_config("tiny")
    preset = NextGPTConfig.from_name("nextgpt-7b")  # the JSON configs and the preset describe the same model
    assert (full.llm, full.encoder, full.projector, full.decoders) == (preset.llm, preset.encoder, preset.projector,
                                                                       preset.decoders)
    for cfg in (full, tiny):
        assert cfg.name == "nextgpt-7b" and cfg.llm.template == full.llm.template
        assert cfg.llm.base_vocab_size + len(cfg.added_tokens) == 32038
        assert cfg.encoder.out_embed_dim == 1024 and cfg.encoder.image_size == 224
        assert {s.modality: (s.cond_len, s.cond_dim) for s in cfg.decoders} == {
            Modality.IMAGE: (77, 768), Modality.VIDEO: (77, 1024), Modality.AUDIO: (1, 512)}
        assert [s.num_signal_tokens for s in cfg.decoders] == [4, 24, 8]
    assert (full.llm.hidden_size, full.llm.num_layers, full.encoder.vision_num_blocks) == (4096, 32, 32)
    assert full.decoder("video").num_frames == 24 and (full.decoder("video").height, full.decoder("video").width) == (320, 576)
    assert tiny.llm.hidden_size < 100 and tiny.encoder.vision_num_blocks == 1


@pytest.fixture(scope="module")
def release(tmp_path_factory, llama_tokenizer):
    return build_release(tmp_path_factory.mktemp("release"), "tiny")


def test_release_layout_is_the_official_one(release):
    state = torch.load(release.official_pt, map_location="cpu", weights_only=True)
    assert state[PREFIX + "model.embed_tokens.weight"].shape == (32038, 64)
    assert state[PREFIX + "lm_head.weight"].shape == (32038, 64)
    assert state["llama_proj.weight"].shape == (64, 1024)
    assert {k.split(".0.")[0] for k in state if k.startswith("gen_text_hidden_fcs")} == {
        "gen_text_hidden_fcs", "gen_text_hidden_fcs_video", "gen_text_hidden_fcs_audio"}
    lora = [k for k in state if ".lora_" in k]
    assert len(lora) == 2 * 4 * 2 and all(k.startswith(PREFIX + "model.layers.") for k in lora)
    assert all(v.dtype == torch.float16 for v in state.values())  # the release is fp16
    assert (release.llm_dir / "tokenizer.json").is_file() and (release.llm_dir / "config.json").is_file()


def test_converted_release_chats_in_every_conversion(release, tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTGPT_CACHE", str(tmp_path / "cache"))  # ImageBind's converted copy goes there
    out, _ = run_nextgpt("convert", str(release.official_pt), "--out", str(tmp_path / "converted"),
                         "--config", str(release.config_file))
    model = NextGPT.from_preset("nextgpt-7b", folder=Path(out["converted"]), llm_path=str(release.llm_dir),
                                encoder_path=str(release.imagebind_pth), decoder_paths=release.decoder_paths)
    tok = model.tokenizer
    assert len(tok) == 32038 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.convert_tokens_to_ids("[VID23]") == 32000 + 2 + 4 + 23  # official order: <Img> </Img> IMG VID AUD
    assert model.can_encode and model.can_generate == set(Modality)
    assert list((tmp_path / "cache" / "imagebind").glob("*/encoder.safetensors"))

    # the checkpoint reached every part: all 32038 rows, the merged LoRA, both projections
    state = {k: v.float() for k, v in torch.load(release.official_pt, map_location="cpu", weights_only=True).items()}
    assert torch.equal(model.llm.get_input_embeddings().weight, state[PREFIX + "model.embed_tokens.weight"])
    assert torch.equal(model.llm.get_output_embeddings().weight, state[PREFIX + "lm_head.weight"])
    base = load_file(release.llm_dir / "model.safetensors")["model.layers.1.self_attn.v_proj.weight"].float()
    lora = PREFIX + "model.layers.1.self_attn.v_proj.lora_{}.default.weight"
    merged = base + state[lora.format("B")] @ state[lora.format("A")] * (model.cfg.llm.lora_alpha / model.cfg.llm.lora_r)
    assert torch.allclose(model.llm.model.layers[1].self_attn.v_proj.weight, merged, atol=1e-5)
    assert not torch.allclose(merged, base, atol=1e-5)
    assert torch.equal(model.input_proj.weight, state["llama_proj.weight"])
    assert torch.equal(model.output_projectors["video"].query_embs, state["gen_text_hidden_fcs_video.0.query_embs"])

    # one turn of each conversion; the conditions reach the decoders in the official shapes
    model = ScriptedNextGPT.adopt(model)
    conditions: list[tuple[Modality, tuple[int, ...]]] = []
    generate = model.decoders.generate
    model.decoders.generate = lambda m, cond, **kw: conditions.append((Modality(m), tuple(cond.shape))) or generate(m, cond, **kw)
    sizes = {m: model.cfg.decoder(m) for m in Modality}
    for name, (messages, reply) in conversions(model).items():
        model.queue_reply(reply)
        out = model.chat(messages)
        produced = {m for m in Modality if out.media[m]}
        wanted = {"T->I": {Modality.IMAGE}, "I+T->I": {Modality.IMAGE}, "T->V": {Modality.VIDEO},
                  "T->A": {Modality.AUDIO}}.get(name, set())
        assert produced == wanted, name
        assert not out.signal_issues and "[" not in out.text, (name, out.text)
        assert out.text.startswith("Here" if wanted else TEXT_REPLY[:30]), (name, out.text)
        if Modality.IMAGE in produced:
            assert out.images[0].shape == (sizes[Modality.IMAGE].height, sizes[Modality.IMAGE].width, 3)
        if Modality.VIDEO in produced:
            v = sizes[Modality.VIDEO]
            assert out.videos[0].shape == (v.num_frames, v.height, v.width, 3)
        if Modality.AUDIO in produced:
            assert out.audios[0].shape == (round(16000 * sizes[Modality.AUDIO].audio_seconds),)
    assert conditions == [(Modality.IMAGE, CONDITION[Modality.IMAGE]), (Modality.VIDEO, CONDITION[Modality.VIDEO]),
                          (Modality.AUDIO, CONDITION[Modality.AUDIO]), (Modality.IMAGE, CONDITION[Modality.IMAGE])]


def test_phase_meter_labels_each_step_of_a_turn(release, tmp_path, monkeypatch):
    """The benchmark's per-phase GPU peaks, with the CUDA counters replaced by a clock: every step of a turn is
    filed under its own phase, in order."""
    monkeypatch.setenv("NEXTGPT_CACHE", str(tmp_path / "cache"))
    folder = convert_official_checkpoint(release.official_pt, tmp_path / "converted", release.config)
    model = ScriptedNextGPT.adopt(NextGPT.from_preset(
        "nextgpt-7b", folder=folder, llm_path=str(release.llm_dir), encoder_path=str(release.imagebind_pth),
        decoder_paths=release.decoder_paths))
    ticks = iter(range(1, 1000))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: next(ticks) * 2**30)
    meter = PhaseMeter("cpu")
    meter.cuda = True
    meter.wrap(model)
    turns = conversions(model)
    settings = GenerationSettings(max_new_tokens=64)
    edit = run_turn(model, meter, *turns["I+T->I"], settings)
    # marks in order: text (prompt), encode, text (generation), conditions, conditions, decode:image, finish
    assert list(edit["phases_gb"]) == ["text", "encode", "conditions", "decode:image", "finish"]
    assert edit["phases_gb"]["text"] == 3 and edit["peak_phase"] == "finish" and edit["peak_gb"] == 7
    chat = run_turn(model, meter, *turns["T->T"], settings)
    assert list(chat["phases_gb"]) == ["text"]
