"""Chat turn <-> model: what the UI's events call, written so that tests can call it directly.

    h = ChatHandlers(model, OutputRoot(), ScoreStore())
    for chatbot, session in h.chat({"text": "Draw a red circle.", "files": []}, None, *DEFAULT_SETTINGS):
        pass                                   # chatbot: gr.Chatbot messages; session: this browser's Session
    h.score("ana", 1, 8, "clear circle", session)

A `Session` (one per browser session, kept in gr.State) holds the turns; the chat display and the
model's messages are both derived from it, so they cannot drift apart. A turn that failed (unreadable
upload, bad setting, a model part that is missing) shows its error in the chat and is left out of
what the model sees next; the session goes on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from app.examples import EXAMPLES, EXAMPLES_DIR
from app.media import OutputRoot, display_part, new_session_id, stored_part
from app.store import Score, ScoreStore
from nextgpt.config import MODALITY_INFO, GenerationSettings, Modality
from nextgpt.conversation import ConversationError
from nextgpt.media import MediaError
from nextgpt.model import ModelUnavailableError
from nextgpt.world import ATTRIBUTES

log = logging.getLogger(__name__)

# the settings panel, in the order the UI passes its values: (name, UI default); 0 = the preset's default
SETTINGS: tuple[tuple[str, float], ...] = (
    ("temperature", 0.0), ("top_p", 1.0), ("max_new_tokens", 128), ("num_inference_steps", 0),
    ("guidance_scale", 0.0), ("num_frames", 0), ("audio_seconds", 0.0), ("seed", 0),
)
DEFAULT_SETTINGS = tuple(value for _, value in SETTINGS)
USER_ERRORS = (MediaError, ModelUnavailableError, ConversationError, ValueError)  # message shown as is
_LETTER = {Modality.IMAGE: "I", Modality.AUDIO: "A", Modality.VIDEO: "V"}
_SEED, _TEMPERATURE = ([name for name, _ in SETTINGS].index(n) for n in ("seed", "temperature"))


# ---- settings ----------------------------------------------------------------------------------------
def _whole(name: str, value: Any) -> int:
    number = float(value) if value is not None else math.nan
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{name} must be a whole number")
    return int(number)


def make_settings(temperature: Any, top_p: Any, max_new_tokens: Any, num_inference_steps: Any,
                  guidance_scale: Any, num_frames: Any, audio_seconds: Any, seed: Any) -> GenerationSettings:
    """Settings-panel values -> GenerationSettings. 0 for a decoder setting = the preset's default.
    Raises ValueError with a message for the user."""
    steps, frames = _whole("diffusion steps", num_inference_steps), _whole("video frames", num_frames)
    guidance, seconds = float(guidance_scale), float(audio_seconds)
    return GenerationSettings(
        max_new_tokens=_whole("max new tokens", max_new_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        num_inference_steps=steps or None,
        guidance_scale=guidance or None,
        num_frames=frames or None,
        audio_seconds=seconds or None,
        seed=_whole("seed", seed),
    )


def settings_record(settings: GenerationSettings) -> dict[str, Any]:
    record = asdict(settings)
    record["modalities"] = [Modality(m).value for m in settings.modalities]
    return record


# ---- what a model is and can do ----------------------------------------------------------------------
def model_version(model: Any, folder: str | Path | None = None) -> str:
    """Short hash of the config, the parts that work and (given the checkpoint folder) its files' sizes and
    times: a retrained or partly trained checkpoint gets a new version."""
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    h.update(repr((bool(model.can_encode), sorted(m.value for m in model.can_generate))).encode())
    if folder is not None and Path(folder).is_dir():
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                stat = path.stat()
                h.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def capabilities(model: Any) -> tuple[list[str], list[str]]:
    """(what it reads, what it writes), e.g. (["text", "images", "audio", "video"], ["text", "images"])."""
    reads = ["text"] + ([s.plural for s in MODALITY_INFO.values()] if model.can_encode else [])
    writes = ["text"] + [s.plural for m, s in MODALITY_INFO.items() if m in model.can_generate]
    return reads, writes


def world_note() -> str:
    """The nano world's vocabulary, from nextgpt.world."""
    image, audio, video = ATTRIBUTES["image"], ATTRIBUTES["audio"], ATTRIBUTES["video"]
    return (
        f"The nano model knows one small world: images of a {'/'.join(image['shape'])} in "
        f"{'/'.join(image['colour'])}; sounds that are {'/'.join(audio['pitch'])} pitch, "
        f"{'/'.join(audio['rhythm'])}, a {'/'.join(audio['sound'])}; videos of a shape moving "
        f"{'/'.join(video['direction'])}."
    )


def headline(model: Any, note: str = "") -> str:
    """The short Markdown above the chat: preset, what this checkpoint reads and writes, and the note."""
    reads, writes = capabilities(model)
    lines = [f"**{model.cfg.name}** · reads {', '.join(reads)} · writes {', '.join(writes)}"]
    if not model.can_encode:
        lines.append("Uploads are not read by this checkpoint yet: send text.")
    if note:
        lines.append(f"**{note}**")
    return "\n\n".join(lines)


def describe(model: Any, version: str, note: str = "") -> str:
    """The Markdown of the About section (and /info): preset, version, what this checkpoint reads and writes."""
    reads, writes = capabilities(model)
    lines = [f"**Preset `{model.cfg.name}`** · model version `{version}` · this checkpoint reads: "
             f"{', '.join(reads)} · writes: {', '.join(writes)}"]
    if not model.can_encode:
        lines.append("Uploads are not read by this checkpoint yet (its media encoder is not trained): send text.")
    if note:
        lines.append(f"**{note}**")
    if model.cfg.name == "nano":
        lines.append(world_note())
    return "\n\n".join(lines)


# ---- turns and sessions ------------------------------------------------------------------------------
def conversion(user: Sequence[dict[str, Any]], produced: Sequence[dict[str, Any]]) -> str:
    """A turn's conversion type from its parts: "T->I", "I->T", "T+I->I" (an edit), "A->T", ...

    The user's text counts as an input when there is no media in, or when media come out (an instruction).
    """
    def letters(parts: Sequence[dict[str, Any]]) -> list[str]:
        kinds = {p["type"] for p in parts}
        return [_LETTER[m] for m in Modality if m.value in kinds]

    media_in, media_out = letters(user), letters(produced)
    text_in = any(p["type"] == "text" and p["text"].strip() for p in user)
    inputs = (["T"] if text_in and (not media_in or media_out) else []) + media_in
    return "+".join(inputs or ["T"]) + "->" + "+".join(media_out or ["T"])


@dataclass
class Turn:
    """One user message and the assistant's answer to it."""

    user: list[dict[str, Any]]  # engine content parts; media paths inside the session folder
    text: str = ""  # the reply's text (grows while streaming)
    media: list[dict[str, Any]] = field(default_factory=list)  # generated media parts
    coming: list[Modality] = field(default_factory=list)  # media being decoded (shown as placeholders)
    notices: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)  # repaired signal tokens (logged, not shown)
    error: str | None = None  # shown instead of a reply; the turn is left out of the model's history
    settings: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    stopped: bool = False

    def reply_parts(self) -> list[dict[str, Any]]:
        return ([{"type": "text", "text": self.text}] if self.text else []) + self.media

    def display(self) -> list[Any]:
        if self.error is not None:
            return [f"⚠️ {self.error}"]
        notes = self.notices + (["Stopped."] if self.stopped else [])
        text = self.text or ("…" if not self.done and not self.coming else "")
        if notes:
            text = (text + "\n\n" if text else "") + "\n".join(f"_{n}_" for n in notes)
        content = ([text] if text else []) + [display_part(p) for p in self.media]
        if not self.done:
            content += [f"_Generating {MODALITY_INFO[m].noun}…_" for m in self.coming]
        return content or ["_(empty reply)_"]


@dataclass
class Session:
    """One browser session's conversation."""

    id: str = field(default_factory=new_session_id)  # random: names the session's media folder
    turns: list[Turn] = field(default_factory=list)
    inbox: list[Any] = field(default_factory=list)  # messages sent while a reply was generating, oldest first

    def messages(self, upto: Turn) -> list[dict[str, Any]]:
        """The model's input for `upto`: earlier good turns with their replies (minus uploads whose files have
        expired, see `expired`), then `upto`'s user message."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            if turn is upto:
                return out + [{"role": "user", "content": list(turn.user)}]
            if turn.error is None:
                out += [{"role": "user", "content": [p for p in turn.user if not _expired(p)]},
                        {"role": "assistant", "content": turn.reply_parts()}]
        raise ValueError("turn not in this session")

    def expired(self, upto: Turn) -> int:
        """How many uploads of earlier good turns are gone (their session folder outlived the TTL)."""
        earlier = itertools.takewhile(lambda t: t is not upto, self.turns)
        return sum(_expired(p) for t in earlier if t.error is None for p in t.user)

    def transcript(self, upto: int) -> list[dict[str, Any]]:
        """Turns 0..upto (good ones) as JSON-ready messages, media by file name (for the scores database)."""
        out = []
        for turn in self.turns[: upto + 1]:
            if turn.error is None:
                out += [{"role": "user", "content": [stored_part(p) for p in turn.user]},
                        {"role": "assistant", "content": [stored_part(p) for p in turn.reply_parts()]}]
        return out

    def scoreable(self) -> list[int]:
        return [i for i, t in enumerate(self.turns) if t.done and t.error is None]

    def category(self, index: int) -> tuple[str, str]:
        """(category, conversion) of turn `index`: a turn after an earlier good turn is "multi-turn"."""
        turn = self.turns[index]
        kind = conversion(turn.user, turn.media)
        later = any(t.error is None for t in self.turns[:index])
        return ("multi-turn" if later else kind), kind


def _expired(part: dict[str, Any]) -> bool:
    return part["type"] != "text" and "path" in part and not Path(part["path"]).is_file()


def chatbot(session: Session | None) -> list[dict[str, Any]]:
    """gr.Chatbot messages for a session."""
    messages: list[dict[str, Any]] = []
    for turn in session.turns if session else []:
        messages.append({"role": "user", "content": [display_part(p) for p in turn.user] or ["_(nothing)_"]})
        messages.append({"role": "assistant", "content": turn.display()})
    for message in session.inbox if session else []:
        text, files = _parse_message(message)
        messages.append({"role": "user", "content": [{"path": f} for f in files] + ([text] if text else [])})
    return messages


def _parse_message(message: Any) -> tuple[str, list[str]]:
    """gr.MultimodalTextbox value ({"text", "files"}) or a plain string -> (text, file paths)."""
    if message is None:
        return "", []
    if isinstance(message, str):
        return message.strip(), []
    files = []
    for f in message.get("files") or []:
        files.append(f["path"] if isinstance(f, dict) else str(f))
    return str(message.get("text") or "").strip(), files


# ---- the handlers ------------------------------------------------------------------------------------
class ChatHandlers:
    """The app's behaviour for one model; every method is a gradio event function."""

    def __init__(self, model: Any, output: OutputRoot, store: ScoreStore, *, note: str = "",
                 version: str | None = None, examples_dir: Path = EXAMPLES_DIR) -> None:
        self.model = model
        self.output = output
        self.store = store
        self.version = version or model_version(model)
        self.info = describe(model, self.version, note)
        self.headline = headline(model, note)
        self.welcome = world_note() if model.cfg.name == "nano" else ""  # shown in the empty chat
        self.examples_dir = examples_dir

    def _session(self, session: Session | None) -> Session:
        if session is None:
            self.output.sweep()
            session = Session()
        for turn in session.turns:  # a turn whose event was cancelled (Stop) never finished
            if not turn.done:
                turn.done, turn.stopped = True, True
        return session

    def show(self, session: Session | None) -> list[dict[str, Any]]:
        """The chat as it stands (a cancelled turn is marked as stopped)."""
        return chatbot(self._session(session) if session is not None else None)

    def stop(self, session: Session | None) -> list[dict[str, Any]]:
        """After Stop: the cancelled turn and every message still waiting in the inbox show as stopped (kept
        in the chat, so Regenerate can answer the last one)."""
        if session is None:
            return chatbot(None)
        session = self._session(session)
        while session.inbox:
            text, files = _parse_message(session.inbox.pop(0))
            user, problems = self._user_parts(session, text, [(f, None) for f in files])
            session.turns.append(Turn(user=user, error="; ".join(problems) or None, done=True, stopped=True))
        return chatbot(session)

    # ---- chat --------------------------------------------------------------------------------------
    def enqueue(self, message: Any, session: Session | None) -> tuple[list, Session, None]:
        """Take a message out of the textbox into the session's inbox -> (chatbot, session, cleared textbox).

        Runs at once, also while a reply is generating (it must not touch the turn being answered);
        `answer_inbox` answers the inbox in order.
        """
        if session is None:
            self.output.sweep()
            session = Session()
        text, files = _parse_message(message)
        if text or files:
            session.inbox.append({"text": text, "files": files})
        return chatbot(session), session, None

    def answer_inbox(self, session: Session | None, *settings: Any) -> Iterator[tuple[list, Session]]:
        """Answer every waiting message of the inbox, oldest first -> streamed (chatbot, session)."""
        session = self._session(session)
        yield chatbot(session), session
        while session.inbox:
            yield from self.chat(session.inbox.pop(0), session, *settings)

    def chat(self, message: Any, session: Session | None, *settings: Any) -> Iterator[tuple[list, Session]]:
        """One user message (text and uploads) -> streamed (chatbot, session)."""
        session = self._session(session)
        text, files = _parse_message(message)
        if not text and not files:
            yield chatbot(session), session
            return
        yield from self._user_turn(session, text, [(f, None) for f in files], settings)

    def _user_parts(self, session: Session, text: str, files: list[tuple[str | Path, str | None]]
                    ) -> tuple[list[dict[str, Any]], list[str]]:
        """(engine content parts of a user message, problems with its uploads); uploads are copied in."""
        user, problems = [], []
        for path, shown in files:
            try:
                user.append(self.output.import_upload(session.id, path, shown_name=shown))
            except MediaError as err:
                problems.append(str(err))
        if text:
            user.append({"type": "text", "text": text})
        return user, problems

    def _user_turn(self, session: Session, text: str, files: list[tuple[str | Path, str | None]],
                   settings: Sequence[Any]) -> Iterator[tuple[list, Session]]:
        user, problems = self._user_parts(session, text, files)
        yield from self._run(session, Turn(user=user, error="; ".join(problems) or None), settings)

    def _run(self, session: Session, turn: Turn, values: Sequence[Any]) -> Iterator[tuple[list, Session]]:
        session.turns.append(turn)
        settings = None
        if turn.error is None:
            try:
                settings = make_settings(*values)
                turn.settings = settings_record(settings)
            except (TypeError, ValueError) as err:
                turn.error = f"Settings: {err}"
        if settings is None:
            turn.done = True
            yield chatbot(session), session
            return
        yield chatbot(session), session
        if expired := session.expired(turn):
            turn.notices.append(f"{expired} earlier upload(s) had expired and were left out.")
        try:
            for event in self.model.stream(session.messages(turn), settings):
                if event.reply is not None:
                    turn.coming = []
                    turn.text = event.reply.text
                    turn.notices += event.reply.notices
                    turn.issues = list(event.reply.signal_issues)
                    turn.media = self.output.save_reply(session.id, event.reply)
                elif event.delta:
                    turn.text += event.delta
                    yield chatbot(session), session
                elif event.coming:
                    turn.coming = [Modality(m) for m in event.coming]
                    yield chatbot(session), session
        except USER_ERRORS as err:
            turn.error = str(err)
        except Exception as err:  # noqa: BLE001 - the chat shows a message, the log keeps the traceback
            log.exception("turn failed")
            turn.error = (f"Something went wrong inside the model ({type(err).__name__}); the details are in "
                          "the server log. You can keep chatting.")
        turn.done = True
        yield chatbot(session), session

    def run_example(self, index: Any, session: Session | None, *settings: Any) -> Iterator[tuple[list, Session]]:
        """Send every user turn of EXAMPLES[index] in order (stops at a turn that fails)."""
        session = self._session(session)
        try:
            example = EXAMPLES[_whole("example", index)]
        except (IndexError, TypeError, ValueError):
            yield chatbot(session), session
            return
        for text, names in example.turns:
            files = [(self.examples_dir / name, name) for name in names]
            yield from self._user_turn(session, text, files, settings)
            if session.turns[-1].error is not None:
                return

    def regenerate(self, session: Session | None, *settings: Any) -> Iterator[tuple[list, Session]]:
        """Answer the last user message again with the current settings and a new random seed (said in the
        reply), so that sampled text and the media come out differently."""
        session = self._session(session)
        if not session.turns:
            yield chatbot(session), session
            return
        last = session.turns.pop()
        values = list(settings) + list(DEFAULT_SETTINGS[len(settings):])
        seed = random.randrange(2**31)
        while seed == last.settings.get("seed"):
            seed = random.randrange(2**31)
        values[_SEED] = seed
        turn = Turn(user=list(last.user), notices=[f"Regenerated with seed {seed}."])
        try:
            if float(values[_TEMPERATURE]) == 0:  # greedy text does not depend on the seed
                turn.notices[0] += " At temperature 0 the text stays the same; raise it in Settings to vary it."
        except (TypeError, ValueError):
            pass  # _run reports the bad setting
        yield from self._run(session, turn, values)

    def undo(self, session: Session | None) -> tuple[list, Session]:
        """Forget the last turn (user message and reply)."""
        session = self._session(session)
        if session.turns:
            session.turns.pop()
        return chatbot(session), session

    def clear(self, session: Session | None) -> tuple[list, Session]:
        """A new, empty conversation; the old one's media are deleted."""
        if session is not None:
            self.output.remove(session.id)
        return [], self._session(None)

    # ---- evaluation --------------------------------------------------------------------------------
    def turn_choices(self, session: Session | None) -> list[tuple[str, int]]:
        """(label, 1-based turn number) for every finished assistant turn."""
        if session is None:
            return []
        out = []
        for i in session.scoreable():
            category, kind = session.category(i)
            said = next((p["text"] for p in session.turns[i].user if p["type"] == "text"), "")
            label = f"Turn {i + 1} · {category}" + (f" ({kind})" if category != kind else "")
            out.append((label + (f" · {said[:40]}" if said else ""), i + 1))
        return out

    def score(self, evaluator: Any, turn: Any, score: Any, comment: Any, session: Session | None) -> str:
        """Store one evaluator's 1-10 score for assistant turn `turn` (1-based) -> a status line."""
        try:
            number = _whole("the turn", turn)
            index = number - 1
            if session is None or index not in session.scoreable():
                return f"Not saved: there is no finished assistant turn {number} in this conversation."
            category, kind = session.category(index)
            record = Score(
                evaluator=str(evaluator or "").strip(), category=category, conversion=kind, turn=number,
                score=_whole("the score", score), comment=str(comment or "").strip(),
                preset=self.model.cfg.name, model_version=self.version, settings=session.turns[index].settings,
                conversation=session.transcript(index), session=session.id,
            )
            row = self.store.add(record)
        except (TypeError, ValueError) as err:
            return f"Not saved: {err}."
        return f"Saved score {record.score} for turn {number} ({category}) as #{row}."

    def summary(self) -> tuple[Any, Any]:
        """(bar-plot frame: category, mean; table: category, n, mean, 95 % interval) for this model version."""
        import pandas as pd

        rows = self.store.summary(model_version=self.version)
        table = pd.DataFrame(
            [(s.category, s.n, round(s.mean, 2), _round(s.low), _round(s.high)) for s in rows],
            columns=["category", "n", "mean", "95% low", "95% high"],
        )
        return table[["category", "mean"]], table

    def export(self) -> str:
        """Every stored score as a CSV file -> its path (for gr.File)."""
        return str(self.store.export_csv(self.output.export_path()))


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 2)
