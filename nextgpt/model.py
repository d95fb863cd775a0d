"""NExT-GPT: the three tiers composed.

    model = NextGPT.from_preset("nano")
    reply = model.chat([{"role": "user", "content": "Draw a red circle."}])
    reply.text, reply.images  # str, [np.ndarray (H, W, 3) uint8]; reply.media[Modality.IMAGE] is the same list

    for event in model.stream(messages):   # text deltas as they are written, then the whole Reply
        print(event.delta, end="")

One turn: 1. build the prompt (conversation.py) -> 2. encode user media once (encode.py, cached by
content), project them into the LLM's input space, and note the new uploads that lie outside the world the
checkpoint was trained on (world_profile.py) -> 3. generate text token by token with the KV cache -> 4. parse
signal tokens (signals.py) -> 5. one pass over the canonical reply for the hidden states at the signal tokens
-> 6. output projectors -> 7. diffusion decoders (decode.py). A checkpoint with a world profile answers a
question about itself ("What can you do?") from its parts and its world instead of 3.-7. (abilities.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nextgpt.abilities import AbilityQuestions, describe_abilities
from nextgpt.config import GenerationSettings, Modality, NextGPTConfig
from nextgpt.conversation import ConversationBuilder, MediaItem, Prompt, normalize_messages
from nextgpt.llm import lora_config
from nextgpt.loading import default_checkpoint_dir, load_model  # noqa: F401 (default_checkpoint_dir: re-exported)
from nextgpt.project import InputProjection, build_output_projectors
from nextgpt.signals import parse_signals, signal_vocab_from_tokenizer, with_signal_blocks
from nextgpt.world_profile import WorldProfile

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A part of the model that a request needs is not there (user-facing message)."""


@dataclass
class Reply:
    """One assistant turn. Media are arrays, one list per modality: images (H, W, 3) uint8, audios (N,) float32
    at `audio_sample_rate`, videos (T, H, W, 3) uint8."""

    text: str
    media: dict[Modality, list[np.ndarray]] = field(default_factory=lambda: {m: [] for m in Modality})
    notices: list[str] = field(default_factory=list)  # things the user should know (truncation, skips)
    signal_issues: list[str] = field(default_factory=list)  # irregular signal tokens that were repaired
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    audio_sample_rate: int = 16000

    def __post_init__(self) -> None:
        self.media = {m: list(self.media.get(m, [])) for m in Modality}  # every modality has its list

    @property
    def images(self) -> list[np.ndarray]:
        return self.media[Modality.IMAGE]

    @property
    def audios(self) -> list[np.ndarray]:
        return self.media[Modality.AUDIO]

    @property
    def videos(self) -> list[np.ndarray]:
        return self.media[Modality.VIDEO]


@dataclass
class StreamEvent:
    delta: str = ""  # new reply text since the last event
    reply: Reply | None = None  # set on the last event only
    coming: tuple[Modality, ...] = ()  # media about to be decoded: set on one event between the text and the reply


class NextGPT(nn.Module):
    """Encoder + input projection + LLM (+LoRA) + output projectors + decoders."""

    def __init__(
        self, cfg: NextGPTConfig, llm: Any, tokenizer: Any, *, encoder: Any = None, decoders: Any = None,
        media_limits: Any = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.decoders = decoders
        self.media_limits = media_limits
        self.input_proj = InputProjection(cfg.encoder.out_embed_dim, cfg.llm.hidden_size)
        self.output_projectors = build_output_projectors(cfg.llm.hidden_size, cfg.decoders, cfg.projector)
        self.builder = ConversationBuilder(cfg, tokenizer)
        self.vocab = signal_vocab_from_tokenizer(tokenizer, cfg.decoders, (cfg.media_start, cfg.media_end))
        # what this instance can do; set by the loader from which trained parts it found
        self.can_encode = encoder is not None
        self.can_generate: set[Modality] = set()
        # the closed world the checkpoint was trained on (its world.json), set by the loader; None = open world
        self.world: WorldProfile | None = None
        self.ability_questions = AbilityQuestions()  # used only with a world; its encoder loads on first use
        self._embed_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.embed_cache_size = 256

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "nano", **kwargs: Any) -> "NextGPT":
        """The preset's bundled checkpoint (nano) or the official one from local paths (see loading.py)."""
        return load_model(cls, name, **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> "NextGPT":
        """A checkpoint folder with its config.json, whatever its preset."""
        return load_model(cls, None, folder=Path(folder), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    # ---- 2. media -> LLM input embeddings ---------------------------------------------------------
    def _load_media(self, item: MediaItem) -> tuple[np.ndarray, str, list[str]]:
        from nextgpt import media

        if item.array is not None:
            arr = np.ascontiguousarray(item.array)
            return arr, hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest(), []
        path = Path(str(item.path))
        limits = self.media_limits or media.MediaLimits()
        if not path.is_file():
            raise media.MediaError(f"{path.name}: file not found")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        key = f"{item.modality.value}:{digest}"
        if key in self._embed_cache:
            return np.empty(0), digest, []
        loaded = media.load(item.modality, path, limits)
        return loaded.array, digest, [f"{path.name}: {n}" for n in loaded.notes]

    def media_features(self, items: Sequence[MediaItem]) -> tuple[torch.Tensor, list[str]]:
        """(N, enc_dim) encoder embeddings of user media, on the CPU; each distinct item is encoded only once."""
        if not self.can_encode:
            raise ModelUnavailableError(
                f"this {self.cfg.name} checkpoint has no trained media encoder, so it cannot read images, "
                "audio or video yet; send text only"
            )
        notes: list[str] = []
        keys: list[str] = []
        todo: dict[Modality, list[tuple[str, np.ndarray]]] = {}
        for item in items:
            arr, digest, item_notes = self._load_media(item)
            key = f"{item.modality.value}:{digest}"
            keys.append(key)
            notes += item_notes
            if key not in self._embed_cache and all(k != key for k, _ in todo.get(item.modality, [])):
                todo.setdefault(item.modality, []).append((key, arr))
        for modality, batch in todo.items():
            with torch.no_grad():
                feats = self.encoder.encode(modality, [a for _, a in batch])  # (n, enc_dim)
            for (key, _), f in zip(batch, feats):
                self._embed_cache[key] = f.detach().cpu()
        for key in keys:
            self._embed_cache.move_to_end(key)
        while len(self._embed_cache) > self.embed_cache_size:
            self._embed_cache.popitem(last=False)
        return torch.stack([self._embed_cache[k] for k in keys]), notes

    def embed_media(self, items: Sequence[MediaItem]) -> tuple[torch.Tensor, list[str]]:
        """(N, llm_hidden) input embeddings for user media."""
        feats, notes = self.media_features(items)
        feats = feats.to(self.device, self.input_proj.weight.dtype)
        return self.input_proj(feats).to(self.dtype), notes  # (N, H)

    def outside_notices(self, last: dict[str, Any]) -> list[str]:
        """A notice for each upload of `last` (the user message, normalized) that lies outside the checkpoint's
        world; none without a calibrated world profile. Never raises: a failed check is logged and says nothing."""
        if self.world is None or not self.can_encode:
            return []
        try:
            items = [MediaItem(Modality(p["type"]), path=p.get("path"), array=p.get("array"))
                     for p in last["content"] if p["type"] in {m.value for m in Modality}]
            items = [item for item in items if self.world.calibrated(item.modality)]
            if not items:
                return []
            feats, _ = self.media_features(items)
            feats_np = feats.float().numpy()
            outside = [self.world.outside(item.modality, feats_np[i:i + 1])[0] for i, item in enumerate(items)]
        except Exception:  # noqa: BLE001 - a notice is a courtesy: it must never fail the turn
            log.exception("the world check of the uploads failed; no notice")
            return []
        counts = {m: sum(item.modality == m for item in items) for m in Modality}
        seen = dict.fromkeys(Modality, 0)
        notices = []
        for item, out in zip(items, outside):
            seen[item.modality] += 1
            if out:
                which = seen[item.modality] if counts[item.modality] > 1 else None
                notices.append(self.world.notice(item.modality, self.cfg.name, which))
        return notices

    def asks_abilities(self, last: dict[str, Any]) -> bool:
        """Whether `last` (the user message, normalized) asks what the model can do (only a checkpoint with a
        world profile answers that itself; any other leaves it to its LLM)."""
        if self.world is None:
            return False
        text = " ".join(p["text"] for p in last["content"] if p["type"] == "text")
        return self.ability_questions(text)

    def abilities(self) -> str:
        """What this checkpoint reads and writes and the world it knows (the answer to "What can you do?")."""
        return describe_abilities(self.cfg.name, reads_media=self.can_encode, writes=self.can_generate,
                                  world=self.world)

    def prompt_embeds(self, prompt: Prompt) -> tuple[torch.Tensor, list[str]]:
        """(1, T, H) inputs_embeds for a prompt, media slots filled."""
        ids = torch.tensor(prompt.ids, device=self.device)
        embeds = self.llm.get_input_embeddings()(ids)  # (T, H)
        notes: list[str] = []
        if prompt.media:
            media_embeds, notes = self.embed_media([item for _, item in prompt.media])
            positions = torch.tensor([pos for pos, _ in prompt.media], device=self.device)
            embeds = embeds.index_copy(0, positions, media_embeds)
        return embeds.unsqueeze(0), notes

    # ---- 3. text generation ----------------------------------------------------------------------
    def _banned_ids(self, settings: GenerationSettings) -> list[int]:
        banned = set(self.vocab.wrappers)
        for spec in self.cfg.decoders:
            if spec.modality not in self.can_generate or spec.modality not in settings.modalities:
                banned |= set(self.vocab.signals[spec.modality])
        return sorted(banned)

    def _sample(self, logits: torch.Tensor, settings: GenerationSettings, gen: torch.Generator) -> int:
        if settings.temperature <= 0:
            return int(logits.argmax(-1))
        from transformers.generation.logits_process import TopPLogitsWarper

        scores = (logits / settings.temperature).unsqueeze(0)
        if settings.top_p < 1.0:
            scores = TopPLogitsWarper(settings.top_p)(None, scores)
        probs = torch.softmax(scores.float(), -1)
        return int(torch.multinomial(probs[0].cpu(), 1, generator=gen))

    @torch.inference_mode()  # no autograd bookkeeping at all: ~4% more tokens/s than no_grad on this CPU
    def stream(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None) -> Iterator[StreamEvent]:
        """Yield text deltas as they are generated; the last event carries the whole `Reply`."""
        settings = settings or GenerationSettings()
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        # 1. prompt
        max_new_tokens = settings.max_new_tokens or self.cfg.llm.max_new_tokens
        max_prompt = self.cfg.llm.max_context - max_new_tokens
        prompt = self.builder.build(messages, max_prompt_tokens=max_prompt)
        notices = list(prompt.notices)
        # 2. media in, and a word on new uploads from outside the checkpoint's world
        embeds, media_notes = self.prompt_embeds(prompt)
        last = normalize_messages(messages)[-1]  # the builder has checked the list: this does not raise
        notices += media_notes + self.outside_notices(last)
        timings["prepare"] = time.perf_counter() - t0
        if self.asks_abilities(last):  # the model's real abilities, not its LLM's guess
            text = self.abilities()
            yield StreamEvent(delta=text)
            timings["total"] = time.perf_counter() - t0
            yield StreamEvent(reply=Reply(text=text, notices=notices, timings=timings))
            return
        # 3. text out, token by token
        banned = torch.tensor(self._banned_ids(settings), dtype=torch.long, device=self.device)
        stops = [seq for seq in self.builder.stop_sequences if seq]
        if self.tokenizer.eos_token_id is not None:
            stops.append([self.tokenizer.eos_token_id])
        gen = torch.Generator().manual_seed(settings.seed)
        cache = None
        step_input: dict[str, Any] = {"inputs_embeds": embeds}
        generated: list[int] = []
        text_ids: list[int] = []
        special = self.vocab.all_ids
        shown = ""
        for _ in range(max_new_tokens):
            out = self.llm(**step_input, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[0, -1].float()
            if banned.numel():
                logits[banned] = float("-inf")
            token = self._sample(logits, settings, gen)
            if not generated:
                timings["first_token"] = time.perf_counter() - t0
            generated.append(token)
            stop = next((seq for seq in stops if generated[-len(seq):] == seq), None)
            if stop is not None:
                del generated[-len(stop):]  # the end marker is not part of the reply
                break
            step_input = {"input_ids": torch.tensor([[token]], device=self.device)}
            if token not in special:
                text_ids.append(token)
                raw = self.tokenizer.decode(text_ids, skip_special_tokens=True)
                if any(m in raw for m in self.builder.template.run_on):
                    break  # an invented next turn: cut below
                text = self._held_back(raw.strip())
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield StreamEvent(delta=text[len(shown):])
                    shown = text
        else:
            notices.append(f"The reply reached the limit of {max_new_tokens} new tokens.")
        timings["text"] = time.perf_counter() - t0
        timings["tokens"] = float(len(generated))
        generated = self._cut_run_on(generated)
        # 4. signal tokens -> requests
        parsed = parse_signals(generated, self.vocab, allowed=set(settings.modalities) & self.can_generate)
        text = self._decode(list(parsed.text_ids))
        if len(text) > len(shown):
            yield StreamEvent(delta=text[len(shown):])
        reply = Reply(text=text, notices=notices, signal_issues=list(parsed.issues), timings=timings)
        # 5.-7. media out
        if parsed.requests:
            yield StreamEvent(coming=parsed.modalities)
            reply_ids, blocks = with_signal_blocks(parsed, self.vocab)
            conds = self._conditions(cache, embeds.shape[1], reply_ids, blocks)
            for modality, cond in conds.items():
                t1 = time.perf_counter()
                reply.media[modality].append(self._decode_media(modality, cond, settings))
                timings[modality.value] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        yield StreamEvent(reply=reply)

    def chat(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None) -> Reply:
        """One assistant turn: text and any media the model decided to produce."""
        reply = None
        for event in self.stream(messages, settings):
            reply = event.reply or reply
        assert reply is not None
        return reply

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _held_back(self, text: str) -> str:
        """Streamed text without a tail that may be the start of an end marker ("##" of "\\n###")."""
        markers = [m.strip() for m in self.builder.template.stop + self.builder.template.run_on]
        for marker in markers:
            for k in range(len(marker) - 1, 0, -1):
                if text.endswith(marker[:k]):
                    return text[:-k].rstrip()
        return text

    def _cut_run_on(self, ids: list[int]) -> list[int]:
        """A reply that ran on into an invented next turn ("\\nHuman: ...") ends where that turn starts, so
        nothing the invented turn wrote (signal tokens included) is acted on."""
        markers = self.builder.template.run_on
        if not markers:
            return ids
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        found = [text.find(m) for m in markers if m in text]
        if not found:
            return ids
        keep = text[:min(found)].rstrip()
        for j in range(len(ids) + 1):
            if len(self.tokenizer.decode(ids[:j], skip_special_tokens=False).rstrip()) >= len(keep):
                log.info("reply cut at an invented next turn (%d of %d tokens kept)", j, len(ids))
                return ids[:j]
        return ids

    # ---- 5.-6. hidden states at the signal tokens -> decoder conditions ---------------------------
    def _conditions(self, cache: Any, prompt_len: int, reply_ids: list[int], blocks: dict[Modality, slice]) -> dict[Modality, torch.Tensor]:
        extra = cache.get_seq_length() - prompt_len
        if extra > 0:
            cache.crop(-extra)  # reuse the prompt's keys and values; recompute only the reply
        ids = torch.tensor([reply_ids], device=self.device)
        out = self.llm(input_ids=ids, past_key_values=cache, use_cache=True, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (1, R, H), after the final norm
        tok_embeds = self.llm.get_input_embeddings()(ids)  # (1, R, H)
        conds = {}
        for modality, sl in blocks.items():
            proj = self.output_projectors[modality.value]
            dtype = proj.fc.weight.dtype
            conds[modality] = proj(hidden[:, sl].to(dtype), tok_embeds[:, sl].to(dtype))
        return conds

    def _decode_media(self, modality: Modality, cond: torch.Tensor, settings: GenerationSettings) -> np.ndarray:
        spec = self.cfg.decoder(modality)
        arr = self.decoders.generate(
            modality, cond.float(),
            num_inference_steps=settings.num_inference_steps or spec.num_inference_steps,
            guidance_scale=settings.guidance_scale if settings.guidance_scale is not None else spec.guidance_scale,
            num_frames=settings.num_frames or spec.num_frames or None,
            audio_seconds=settings.audio_seconds or spec.audio_seconds or None,
            seed=settings.seed,
        )
        return arr[0]

    # ---- training-side helpers -------------------------------------------------------------------
    def signal_states(self, batch: dict[str, Any], *, logits: bool = True
                      ) -> tuple[Any, dict[Modality, tuple[torch.Tensor, torch.Tensor]]]:
        """Run the LLM teacher-forced on a `forward` batch. Returns its output and, per modality with blocks,
        the output projector's inputs at the signal tokens: last hidden states and token embeddings, each
        (k, num_signal_tokens, H), blocks in batch order (the order of batch["block_targets"][modality]).
        `logits=False` runs the decoder without the LM head (output: its last hidden state): the same states
        without the (B, T, vocab) product, about a quarter of the layers' own cost at nano's size."""
        ids = batch["input_ids"]
        embeds = self.llm.get_input_embeddings()(ids)  # (B, T, H)
        if batch.get("media_feats") is not None and len(batch["media_feats"]):
            rows, cols = batch["media_index"].unbind(-1)
            projected = self.input_proj(batch["media_feats"].to(self.input_proj.weight.dtype)).to(embeds.dtype)
            embeds = embeds.index_put((rows, cols), projected)
        blocks = batch.get("blocks") or []
        if logits:
            out = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                           output_hidden_states=bool(blocks))
        else:
            out = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
        states: dict[Modality, tuple[torch.Tensor, torch.Tensor]] = {}
        if blocks:
            hidden = out.hidden_states[-1] if logits else out.last_hidden_state
            tok_embeds = self.llm.get_input_embeddings()(ids)
            for spec in self.cfg.decoders:
                mine = [(r, s) for r, s, m in blocks if m == spec.modality]
                if not mine:
                    continue
                n = spec.num_signal_tokens
                idx_r = torch.tensor([r for r, _ in mine], device=ids.device)
                idx_t = torch.tensor([s for _, s in mine], device=ids.device)[:, None] + torch.arange(n, device=ids.device)
                states[spec.modality] = (hidden[idx_r[:, None], idx_t], tok_embeds[idx_r[:, None], idx_t])
        return out, states

    def add_lora(self) -> None:
        """Wrap the LLM with a fresh LoRA (stage 3)."""
        from peft import get_peft_model

        self.llm = get_peft_model(self.llm, lora_config(self.cfg.llm))

    def forward(self, batch: dict[str, Any], *, l2_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Teacher-forced losses for the tuning stages.

        batch: input_ids, attention_mask, labels (B, T); media_index (M, 2) long [row, position] with
        media_feats (M, enc_dim) from the frozen encoder; blocks: list of (row, start, modality) with
        block_targets: {modality: (n, cond_len, cond_dim) or (n, cond_dim)} in the same order.
        Returns {"loss", "ce"[, "l2"]}.
        """
        out, states = self.signal_states(batch)
        logits = out.logits[:, :-1].float()
        ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
        losses = {"ce": ce}
        if states:
            l2_terms = []
            for modality, (h, e) in states.items():
                proj = self.output_projectors[modality.value]
                pred = proj(h.to(proj.fc.weight.dtype), e.to(proj.fc.weight.dtype))
                target = batch["block_targets"][modality].to(pred.dtype)
                l2_terms.append(nn.functional.mse_loss(pred, target))
            losses["l2"] = torch.stack(l2_terms).mean()
        losses["loss"] = losses["ce"] + l2_weight * losses.get("l2", torch.zeros((), device=ce.device))
        return losses
