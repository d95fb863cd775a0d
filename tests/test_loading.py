"""Checkpoints: save/load round trip, clear errors on bad files, the official release's key mapping
(a tiny synthetic checkpoint of the same layout), and the 7B architecture on the meta device."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from nextgpt.config import Modality, NextGPTConfig
from nextgpt.loading import (
    INPUT_PROJECTION, OUTPUT_PROJECTORS, TOKEN_ROWS, CheckpointError, convert_official_checkpoint, load_into,
    map_official_state, read_safetensors, save_checkpoint,
)
from nextgpt.project import InputProjection, build_output_projectors
from nextgpt.model import NextGPT


def test_a_saved_lora_folder_holds_the_adapter_and_no_template_card(tiny_model, tmp_path):
    tiny_model.add_lora()
    save_checkpoint(tiny_model, tmp_path, parts=("lora",))
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_save_load_round_trip(tiny_model, tmp_path):
    with torch.no_grad():
        tiny_model.input_proj.weight.add_(1.0)
        tiny_model.llm.get_input_embeddings().weight[-3:].fill_(0.5)
    save_checkpoint(tiny_model, tmp_path, parts=("input", "output", "rows"))
    cfg = NextGPTConfig.load(tmp_path)
    assert cfg == tiny_model.cfg
    inp = InputProjection(cfg.encoder.out_embed_dim, cfg.llm.hidden_size)
    load_into(inp, read_safetensors(tmp_path / INPUT_PROJECTION), tmp_path / INPUT_PROJECTION)
    assert torch.equal(inp.weight, tiny_model.input_proj.weight)
    outs = build_output_projectors(cfg.llm.hidden_size, cfg.decoders, cfg.projector)
    load_into(outs, read_safetensors(tmp_path / OUTPUT_PROJECTORS), tmp_path / OUTPUT_PROJECTORS)
    for a, b in zip(outs.parameters(), tiny_model.output_projectors.parameters()):
        assert torch.equal(a, b)
    rows = read_safetensors(tmp_path / TOKEN_ROWS)["embed_tokens"]
    assert rows.shape == (len(cfg.added_tokens), cfg.llm.hidden_size) and torch.all(rows[-3:] == 0.5)



def test_load_model_builds_the_class_it_is_given(tiny_model, tmp_path, monkeypatch):
    """Loading sits below the model: `load_model` builds the class it is handed (a subclass stays one) and fills
    in the parts the folder holds."""
    from nextgpt import loading
    from nextgpt.model import NextGPT

    class Mine(NextGPT):
        pass

    with torch.no_grad():
        tiny_model.input_proj.weight.add_(1.0)
    save_checkpoint(tiny_model, tmp_path, parts=("input", "output", "rows"))
    monkeypatch.setattr(loading, "load_llm", lambda cfg, **kwargs: (tiny_model.llm, tiny_model.tokenizer))
    model = Mine.from_pretrained(tmp_path, load_encoder=False, load_decoders=False)
    assert type(model) is Mine and model.cfg == tiny_model.cfg
    assert torch.equal(model.input_proj.weight, tiny_model.input_proj.weight)
    assert not model.can_encode and not model.can_generate  # no encoder and no decoders were asked for



def test_a_preset_without_weights_is_refused(tmp_path):
    from nextgpt.model import NextGPT

    with pytest.raises(ValueError, match="'tiny' preset has no weights to load"):
        NextGPT.from_preset("tiny", folder=tmp_path)

def test_checkpoint_paths_follow_nextgpt_checkpoints(monkeypatch, tmp_path):
    from nextgpt.loading import REPO_ROOT, default_checkpoint_dir

    monkeypatch.delenv("NEXTGPT_CHECKPOINTS", raising=False)
    assert default_checkpoint_dir("nano") == REPO_ROOT / "checkpoints" / "nano"
    monkeypatch.setenv("NEXTGPT_CHECKPOINTS", str(tmp_path))
    assert default_checkpoint_dir("nano") == tmp_path / "nano"

def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / INPUT_PROJECTION
    save_file({"weight": torch.zeros(4, 4)}, path)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match=INPUT_PROJECTION):
        read_safetensors(path)


def test_mismatched_checkpoint_names_the_key(tmp_path):
    proj = InputProjection(8, 16)
    with pytest.raises(CheckpointError, match=r"key 'weight' has shape \(16, 9\)"):
        load_into(proj, {"weight": torch.zeros(16, 9), "bias": torch.zeros(16)}, "x.safetensors")
    with pytest.raises(CheckpointError, match="missing key 'bias'"):
        load_into(proj, {"weight": torch.zeros(16, 8)}, "x.safetensors")
    with pytest.raises(CheckpointError, match="unexpected key 'extra'"):
        load_into(proj, {"weight": torch.zeros(16, 8), "bias": torch.zeros(16), "extra": torch.zeros(1)}, "x.safetensors")


def tiny_official_config() -> NextGPTConfig:
    """The nextgpt-7b layout (38 added tokens, 4/24/8 signal tokens, gill_mapper projectors) at toy widths."""
    cfg = NextGPTConfig.from_name("nextgpt-7b")
    llm = dataclasses.replace(cfg.llm, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=2,
                              intermediate_size=32, base_vocab_size=100)
    enc = dataclasses.replace(cfg.encoder, out_embed_dim=8)
    proj = dataclasses.replace(cfg.projector, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)
    decoders = tuple(dataclasses.replace(s, cond_len=1 if s.pooled else 5, cond_dim=s.cond_dim // 64) for s in cfg.decoders)
    return cfg.replace(llm=llm, encoder=enc, projector=proj, decoders=decoders)


def official_state(cfg: NextGPTConfig, *, vocab: int | None = None) -> dict[str, torch.Tensor]:
    """State dict with the key names of the released pytorch_model.pt (peft named_parameters style)."""
    torch.manual_seed(0)
    h, r = cfg.llm.hidden_size, cfg.llm.lora_r
    vocab = vocab or cfg.llm.base_vocab_size + len(cfg.added_tokens)
    state = {"llama_proj.weight": torch.randn(h, cfg.encoder.out_embed_dim), "llama_proj.bias": torch.randn(h)}
    names = {"image": "gen_text_hidden_fcs", "video": "gen_text_hidden_fcs_video", "audio": "gen_text_hidden_fcs_audio"}
    for modality, module in build_output_projectors(h, cfg.decoders, cfg.projector).items():
        for k, v in module.state_dict().items():
            state[f"{names[modality]}.0.{k}"] = v.clone()
    for layer in range(cfg.llm.num_layers):
        for p in "qkvo":
            base = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{p}_proj"
            state[f"{base}.lora_A.default.weight"] = torch.randn(r, h)
            state[f"{base}.lora_B.default.weight"] = torch.randn(h, r)
    state["llama_model.base_model.model.model.embed_tokens.weight"] = torch.randn(vocab, h)
    state["llama_model.base_model.model.lm_head.weight"] = torch.randn(vocab, h)
    return state


def test_official_checkpoint_converts_and_loads(tmp_path):
    from peft import PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = tiny_official_config()
    state = official_state(cfg)
    pt = tmp_path / "pytorch_model.pt"
    torch.save(state, pt)
    out = convert_official_checkpoint(pt, tmp_path / "converted", cfg)
    # projections load strictly into our modules, key for key
    inp = InputProjection(cfg.encoder.out_embed_dim, cfg.llm.hidden_size)
    load_into(inp, read_safetensors(out / INPUT_PROJECTION), out / INPUT_PROJECTION)
    assert torch.equal(inp.weight, state["llama_proj.weight"])
    outs = build_output_projectors(cfg.llm.hidden_size, cfg.decoders, cfg.projector)
    load_into(outs, read_safetensors(out / OUTPUT_PROJECTORS), out / OUTPUT_PROJECTORS)
    assert torch.equal(outs["video"].query_embs, state["gen_text_hidden_fcs_video.0.query_embs"])
    # the LoRA becomes a standard peft adapter on a Llama of the same shape
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=138, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    peft = PeftModel.from_pretrained(llama, out / "lora")
    lora_a = peft.base_model.model.model.layers[1].self_attn.k_proj.lora_A["default"].weight
    assert torch.equal(lora_a, state["llama_model.base_model.model.model.layers.1.self_attn.k_proj.lora_A.default.weight"])
    rows = read_safetensors(out / TOKEN_ROWS)
    assert rows["embed_tokens"].shape == (138, 16)
    assert json.loads((out / "lora" / "adapter_config.json").read_text())["r"] == 32


def test_official_mapping_errors():
    cfg = tiny_official_config()
    with pytest.raises(CheckpointError, match="unexpected key 'mystery.weight'"):
        map_official_state(official_state(cfg) | {"mystery.weight": torch.zeros(1)}, cfg)
    with pytest.raises(CheckpointError, match="32042"):  # a LLaMA-2 Vicuna's vocabulary
        map_official_state(official_state(cfg, vocab=142), cfg)


class Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def test_pickles_with_code_are_refused(tmp_path):
    pt = tmp_path / "pytorch_model.pt"
    with open(pt, "wb") as f:
        pickle.dump({"llama_proj.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        convert_official_checkpoint(pt, tmp_path / "out", tiny_official_config())


def test_7b_architecture_on_meta():
    from nextgpt.memory import llm_bytes, memory_plan

    cfg = NextGPTConfig.from_name("nextgpt-7b")
    llm = llm_bytes(cfg, "none")
    assert llm["lora_params"] == 33_554_432  # r=32 on q/k/v/o of 32 layers: the paper's 33M
    assert 6.70e9 < llm["params"] - llm["lora_params"] < 6.78e9  # LLaMA-7B with 32038 tokens
    with torch.device("meta"):
        outs = build_output_projectors(4096, cfg.decoders, cfg.projector)
    for name, module in outs.items():
        assert 28e6 < sum(p.numel() for p in module.parameters()) < 34e6, name  # ~31M each
    plan = memory_plan("nextgpt-7b", quantization="4bit", offload=True)
    fp16 = memory_plan("nextgpt-7b", quantization="none", offload=False)
    assert plan["peak_gb"] < fp16["peak_gb"]
    assert fp16["components"][0]["gb"] > 12.5  # a 7B LLM in fp16


def test_output_projectors_load_whole_or_not_at_all(tiny_model, tmp_path):
    """A modality whose projector keys are all there is switched on; a partial one is an error, never random."""
    from nextgpt.llm import save_safetensors
    from nextgpt.loading import CheckpointError, load_output_projectors

    state = tiny_model.output_projectors.state_dict()
    only_image = {k: v for k, v in state.items() if k.startswith("image.")}
    save_safetensors(only_image, tmp_path / "image.safetensors")
    assert load_output_projectors(tiny_model, tmp_path / "image.safetensors") == [Modality.IMAGE]
    partial = dict(state)
    dropped = next(k for k in partial if k.startswith("video."))
    del partial[dropped]
    save_safetensors(partial, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match="video projector.*missing key"):
        load_output_projectors(tiny_model, tmp_path / "partial.safetensors")
    save_safetensors(state | {"depth.fc.weight": torch.zeros(1)}, tmp_path / "stray.safetensors")
    with pytest.raises(CheckpointError, match="unexpected key 'depth.fc.weight'"):
        load_output_projectors(tiny_model, tmp_path / "stray.safetensors")


def test_checkpoint_abilities_are_what_a_load_finds(tmp_path):
    """What the app shows before the weights load (read from the files) is what load_model then finds: the
    shipped nano checkpoint, and a copy without the encoder and with the image decoder only."""
    from nextgpt.loading import checkpoint_abilities, load_model, resolve_config

    cfg, shipped = resolve_config("nano")
    partial = tmp_path / "nano"
    partial.mkdir()
    for path in shipped.iterdir():
        if path.name not in ("encoder", "decoders"):
            (partial / path.name).symlink_to(path)
    (partial / "decoders").mkdir()
    (partial / "decoders" / "image").symlink_to(shipped / "decoders" / "image")
    expected = {shipped: (True, set(Modality)), partial: (False, {Modality.IMAGE})}
    for folder, abilities in expected.items():
        assert checkpoint_abilities(*resolve_config("nano", folder=folder)) == abilities
        model = load_model(NextGPT, "nano", folder=folder)
        assert (model.can_encode, model.can_generate) == abilities
