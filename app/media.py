"""Files <-> chat display: per-session folders under one output root.

    output = OutputRoot("/tmp/nextgpt-app", ttl_seconds=3600)
    part = output.import_upload(session_id, "/tmp/gradio/ab12/cat.png")   # {"type": "image", "path": ".../in-3f2a.png"}
    parts = output.save_reply(session_id, reply)                          # generated media, via nextgpt.media.save_*
    output.sweep()                                                        # drop folders idle for longer than the TTL

Only names made here become paths: a session folder is a random hex id checked against a pattern, a file is
`in-<random>.<suffix>` or `out-<random>.<suffix>`; the one thing taken from an uploaded file's name is its
suffix, and only when it is on an allow-list for the modality its content was detected as.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from nextgpt.config import MODALITY_INFO, Modality
from nextgpt.media import DEFAULT_LIMITS, MediaError, MediaLimits, guess_modality, save

log = logging.getLogger(__name__)

OUTPUT_DIR_ENV = "NEXTGPT_OUTPUT_DIR"
VIDEO_FPS = 8  # generated videos (the nano world's frame rate; Zeroscope's is close)
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_EXPORTS = "exports"


def new_session_id() -> str:
    return uuid.uuid4().hex


class OutputRoot:
    """The one folder generated and uploaded media live in, one sub-folder per browser session."""

    def __init__(self, root: str | Path | None = None, *, ttl_seconds: float = 3600.0,
                 limits: MediaLimits = DEFAULT_LIMITS) -> None:
        if root is None:
            root = os.environ.get(OUTPUT_DIR_ENV) or tempfile.mkdtemp(prefix="nextgpt-app-")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.ttl_seconds = ttl_seconds
        self.limits = limits

    # ---- folders ---------------------------------------------------------------------------------
    def session_dir(self, session_id: str) -> Path:
        """The session's folder (created, and marked as used now so `sweep` keeps it)."""
        if not _SESSION_RE.match(session_id):
            raise ValueError("invalid session id")
        folder = self.root / session_id
        folder.mkdir(exist_ok=True)
        os.utime(folder)
        return folder

    def _new_file(self, session_id: str, prefix: str, suffix: str) -> Path:
        return self.session_dir(session_id) / f"{prefix}-{uuid.uuid4().hex[:12]}{suffix}"

    def owns(self, path: str | Path) -> bool:
        """True for a file inside a session folder of this root."""
        path = Path(path).resolve()
        return path.is_relative_to(self.root) and len(path.relative_to(self.root).parts) == 2 \
            and _SESSION_RE.match(path.parent.name) is not None

    def remove(self, session_id: str) -> None:
        if _SESSION_RE.match(session_id):
            shutil.rmtree(self.root / session_id, ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        """Remove session folders and exports not used for `ttl_seconds`; returns how many went."""
        cutoff = (time.time() if now is None else now) - self.ttl_seconds
        gone = 0
        candidates = [p for p in self.root.iterdir() if p.is_dir() and _SESSION_RE.match(p.name)]
        exports = self.root / _EXPORTS
        if exports.is_dir():
            candidates += list(exports.iterdir())
        for path in candidates:
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    gone += 1
            except FileNotFoundError:  # removed by a concurrent sweep
                continue
        if gone:
            log.info("removed %d expired item(s) from %s", gone, self.root)
        return gone

    def export_path(self, stem: str = "scores") -> Path:
        folder = self.root / _EXPORTS
        folder.mkdir(exist_ok=True)
        return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.csv"

    # ---- files in --------------------------------------------------------------------------------
    def import_upload(self, session_id: str, src: str | Path, *, shown_name: str | None = None) -> dict[str, Any]:
        """Copy an uploaded file into the session folder -> an engine content part {"type", "path"}.

        The modality is detected from the file's bytes; anything else is refused with a MediaError.
        """
        src = Path(src)
        name = shown_name or src.name
        if not src.is_file():
            raise MediaError(f"{name}: the uploaded file is gone; please upload it again")
        if src.stat().st_size > self.limits.max_file_mb * 1e6:
            raise MediaError(f"{name}: larger than {self.limits.max_file_mb:g} MB")
        modality = guess_modality(src)
        if modality is None:
            raise MediaError(f"{name}: not an image, audio or video file this app can read")
        suffix = src.suffix.lower()
        if suffix not in MODALITY_INFO[modality].extensions:
            suffix = MODALITY_INFO[modality].extension
        dest = self._new_file(session_id, "in", suffix)
        shutil.copyfile(src, dest)
        return {"type": modality.value, "path": str(dest)}

    # ---- files out -------------------------------------------------------------------------------
    def save_reply(self, session_id: str, reply: Any) -> list[dict[str, Any]]:
        """Write a Reply's images, sounds and videos -> engine content parts, in that order."""
        parts = []
        for modality in Modality:
            for arr in reply.media[modality]:
                path = self._new_file(session_id, "out", MODALITY_INFO[modality].extension)
                save(modality, arr, path, sample_rate=reply.audio_sample_rate, fps=VIDEO_FPS)
                parts.append({"type": modality.value, "path": str(path)})
        return parts


def display_part(part: dict[str, Any]) -> str | dict[str, Any]:
    """An engine content part -> gr.Chatbot content: text as is, media as a {"path"} file dict."""
    if part["type"] == "text":
        return part["text"]
    return {"path": part["path"], "alt_text": f"{part['type']} {Path(part['path']).name}"}


def stored_part(part: dict[str, Any]) -> dict[str, Any]:
    """An engine content part for the scores database: media by file name only (the files expire)."""
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    return {"type": part["type"], "file": Path(part["path"]).name}
