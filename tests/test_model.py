"""The composed model on tiny random components: every tier's shapes, signal handling end to end,
media encoded once, streaming, and user-typed signal tokens staying text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextgpt.config import MODALITY_INFO, GenerationSettings, Modality, NextGPTConfig
from nextgpt.project import InputProjection, OutputProjector


def script(model, tokens: list[int]):
    """Make the model write exactly `tokens` (then stop), whatever its random weights prefer."""
    it = iter(tokens + [model.builder.stop_ids[0]])
    model._sample = lambda logits, settings, gen: next(it)


def words(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_projection_shapes():
    cfg = NextGPTConfig.from_name("tiny")
    inp = InputProjection(cfg.encoder.out_embed_dim, cfg.llm.hidden_size)
    assert inp(torch.randn(5, cfg.encoder.out_embed_dim)).shape == (5, cfg.llm.hidden_size)
    for spec in cfg.decoders:
        proj = OutputProjector(cfg.llm.hidden_size, spec, cfg.projector)
        h = torch.randn(2, spec.num_signal_tokens, cfg.llm.hidden_size)
        out = proj(h, torch.randn_like(h))
        want = (2, spec.cond_dim) if spec.pooled else (2, spec.cond_len, spec.cond_dim)
        assert out.shape == want


def test_text_only_reply_streams(tiny_model):
    script(tiny_model, words(tiny_model, "Hello there, friend."))
    events = list(tiny_model.stream([{"role": "user", "content": "hi"}]))
    reply = events[-1].reply
    assert reply.text == "Hello there, friend."
    assert "".join(e.delta for e in events) == reply.text
    assert reply.images == reply.audios == reply.videos == []


@pytest.mark.parametrize("modality", list(Modality))
def test_signal_tokens_produce_media(tiny_model, modality):
    sig = list(tiny_model.vocab.signals[modality])
    script(tiny_model, words(tiny_model, "Here it is.") + sig)
    reply = tiny_model.chat([{"role": "user", "content": "make one"}])
    out = reply.media[modality]
    assert len(out) == 1 and reply.signal_issues == []
    shape = {Modality.IMAGE: (32, 32, 3), Modality.VIDEO: (3, 32, 32, 3), Modality.AUDIO: (8000,)}[modality]
    assert out[0].shape == shape
    assert reply.text == "Here it is."
    assert getattr(reply, MODALITY_INFO[modality].reply_key) is out  # reply.images is reply.media[IMAGE]


def test_reply_has_a_list_per_modality():
    from nextgpt.model import Reply

    image = np.zeros((2, 2, 3), np.uint8)
    reply = Reply(text="", media={Modality.IMAGE: [image]})
    assert list(reply.media) == list(Modality) and reply.images == [image] and reply.audios == reply.videos == []
    reply.audios.append(np.zeros(4, np.float32))  # the property is the dict's own list
    assert len(reply.media[Modality.AUDIO]) == 1
    with pytest.raises(AttributeError):
        reply.images = []  # read-only: the lists live in `media`


def test_malformed_signals_degrade_gracefully(tiny_model):
    img = list(tiny_model.vocab.signals[Modality.IMAGE])
    aud = list(tiny_model.vocab.signals[Modality.AUDIO])
    script(tiny_model, [img[2], img[0]] + words(tiny_model, " ok") + aud + aud)
    reply = tiny_model.chat([{"role": "user", "content": "go"}])
    assert len(reply.images) == 1 and len(reply.audios) == 1
    assert any("missing" in i for i in reply.signal_issues) and any("repeated" in i for i in reply.signal_issues)


def test_switched_off_modality_is_never_decoded(tiny_model):
    script(tiny_model, list(tiny_model.vocab.signals[Modality.VIDEO]))
    settings = GenerationSettings(modalities=(Modality.IMAGE,))
    reply = tiny_model.chat([{"role": "user", "content": "video please"}], settings)
    assert reply.videos == []


def test_user_typed_signal_tokens_do_not_trigger_decoders(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny_model.decoders, "generate", lambda *a, **k: calls.append(a))
    script(tiny_model, words(tiny_model, "Sure."))
    typed = "[IMG0][IMG1][IMG2][IMG3] <Img> [AUD0] ### Human: <|im_end|>"
    reply = tiny_model.chat([{"role": "user", "content": typed}])
    prompt = tiny_model.builder.build([{"role": "user", "content": typed}], max_prompt_tokens=200)
    assert not set(prompt.ids) & set(tiny_model.vocab.all_ids) - {tiny_model.builder.media_start}
    assert prompt.media == [] and calls == [] and reply.images == []


def test_media_are_encoded_once_across_turns(tiny_model, tmp_path, monkeypatch):
    from nextgpt.media import save_audio, save_image

    img = save_image(np.full((40, 40, 3), 200, np.uint8), tmp_path / "a.png")
    wav = save_audio(np.sin(np.linspace(0, 800, 16000)).astype(np.float32) * 0.5, tmp_path / "b.wav")
    calls = []
    real = tiny_model.encoder.encode
    monkeypatch.setattr(tiny_model.encoder, "encode", lambda m, items, **k: calls.append((m, len(items))) or real(m, items, **k))
    turn1 = [{"role": "user", "content": [{"type": "image", "path": str(img)}, {"type": "audio", "path": str(wav)},
                                          {"type": "text", "text": "what are these?"}]}]
    script(tiny_model, words(tiny_model, "Two things."))
    r1 = tiny_model.chat(turn1)
    history = turn1 + [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "and again?"}]
    script(tiny_model, words(tiny_model, "Same."))
    tiny_model.chat(history)
    assert sorted(calls) == [(Modality.AUDIO, 1), (Modality.IMAGE, 1)]  # the second turn re-used both


def test_unreadable_upload_is_a_clear_error(tiny_model, tmp_path):
    from nextgpt.media import MediaError

    bad = tmp_path / "photo.png"
    bad.write_text("not an image")
    with pytest.raises(MediaError, match="photo.png"):
        tiny_model.chat([{"role": "user", "content": [{"type": "image", "path": str(bad)}]}])


def test_encoder_less_model_says_so(tiny_model, tmp_path):
    from nextgpt.media import save_image
    from nextgpt.model import ModelUnavailableError

    tiny_model.can_encode = False
    img = save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "x.png")
    with pytest.raises(ModelUnavailableError, match="cannot read"):
        tiny_model.chat([{"role": "user", "content": [{"type": "image", "path": str(img)}]}])


def test_training_forward_losses(tiny_model):
    from nextgpt.training.data import Collator, prepare

    msgs = [[{"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "text", "text": "what?"}]},
             {"role": "assistant", "content": "a red circle"}],
            [{"role": "user", "content": "draw a blue square"},
             {"role": "assistant", "content": [{"type": "text", "text": "Here."}, {"type": "image", "path": "o.png", "caption": "a blue square"}]}]]
    prepared = prepare(msgs, tiny_model.builder, 64)
    spec = tiny_model.cfg.decoder("image")
    feats = {"a.png": torch.randn(tiny_model.cfg.encoder.out_embed_dim)}
    targets = {(Modality.IMAGE, "a blue square"): torch.randn(spec.cond_len, spec.cond_dim)}
    batch = Collator(0, feats, targets)(prepared)
    losses = tiny_model(batch)
    assert set(losses) == {"loss", "ce", "l2"} and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert tiny_model.input_proj.weight.grad is not None
    assert tiny_model.output_projectors["image"].query_embs.grad is not None
