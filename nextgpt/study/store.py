"""The raters and ratings of human evaluation studies, in SQLite.

    store = StudyStore("scores.sqlite")          # or $NEXTGPT_SCORES_DB; WAL mode
    store.add_study_rater("default", "bo", token)                # a rater who signs in with a link
    rater = store.join_study("default", least_rated, 3, name="ana")   # or token=...; gets the least-rated block
    store.add_study_ratings("default", rater["id"], "t2i-01", [("nano-20-steps", "A", 7), ...], "comment")
    store.study_ratings("default")               # every rating with its rater's name

The file is the evaluation database that the app also keeps its chat scores in: app/store.py's ScoreStore
is this class plus the `scores` table, so `python -m nextgpt study ...` and the app read and write the same
file without the library depending on the app.

Every operation opens its own connection (safe from any thread; WAL lets readers run beside a writer and
the busy timeout queues concurrent writers).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Sequence

SCORES_DB_ENV = "NEXTGPT_SCORES_DB"
MAX_NAME = 100
MAX_COMMENT = 4000

STUDY_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_raters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    study TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT UNIQUE,            -- sha256 of the rater's link token; NULL for a rater who typed a name
    block INTEGER,                     -- the assigned block of items (nextgpt/study/assign.py); NULL until started
    UNIQUE (study, name)
);
CREATE TABLE IF NOT EXISTS study_ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,          -- unix time
    study TEXT NOT NULL,
    rater INTEGER NOT NULL REFERENCES study_raters (id),
    item TEXT NOT NULL,
    system TEXT NOT NULL,              -- the system (or gold answer) behind the answer; never shown to the rater
    side TEXT NOT NULL DEFAULT '',     -- "A" or "B" in pairwise mode: where the answer was shown
    score INTEGER CHECK (score IS NULL OR score BETWEEN 1 AND 10),  -- NULL: skipped
    comment TEXT NOT NULL DEFAULT '',
    UNIQUE (study, rater, item, system)
);
"""


def default_db_path() -> Path:
    """$NEXTGPT_SCORES_DB, else the nextgpt cache folder."""
    env = os.environ.get(SCORES_DB_ENV)
    if env:
        return Path(env)
    from nextgpt.llm import cache_dir

    return cache_dir() / "scores.sqlite"


class StudyStore:
    """SQLite file of study raters and ratings. Thread-safe: nothing is shared between calls but the path.

    Subclasses add tables by extending `SCHEMA` (app/store.py adds the chat scores)."""

    SCHEMA = STUDY_SCHEMA

    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(self.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout)
        conn.row_factory = sqlite3.Row
        return conn

    def add_study_rater(self, study: str, name: str, token: str) -> int:
        """Register a rater who signs in with a link token (the name is then reserved for that link)."""
        name = _rater_name(name)
        if len(token) < 16:
            raise ValueError("a rater token needs at least 16 characters")
        with closing(self._connect()) as conn, conn:
            try:
                cur = conn.execute("INSERT INTO study_raters (created_at, study, name, token_hash) VALUES (?, ?, ?, ?)",
                                   (time.time(), study, name, _token_hash(token)))
            except sqlite3.IntegrityError:
                raise ValueError(f"the study already has a rater named {name!r}") from None
            return int(cur.lastrowid)

    def join_study(self, study: str, choose_block: Callable[[Sequence[int]], int], blocks: int, *,
                   name: str | None = None, token: str | None = None) -> dict[str, Any]:
        """The rater of a typed name (created on first use) or of a link token, with a block assigned.

        A new rater's block is `choose_block(raters per block)`, counted and written in one write transaction,
        so raters who start at the same moment still spread over the blocks. Raises ValueError with a message
        for the rater (unknown token, a name reserved for a link).
        """
        with closing(self._connect()) as conn:
            conn.isolation_level = None  # explicit BEGIN IMMEDIATE: the count and the insert are one transaction
            conn.execute("BEGIN IMMEDIATE")
            try:
                if token:
                    row = conn.execute("SELECT * FROM study_raters WHERE study = ? AND token_hash = ?",
                                       (study, _token_hash(token))).fetchone()
                    if row is None:
                        raise ValueError("this rater link is not valid for this study")
                else:
                    name = _rater_name(name or "")
                    row = conn.execute("SELECT * FROM study_raters WHERE study = ? AND name = ?",
                                       (study, name)).fetchone()
                    if row is not None and row["token_hash"] is not None:
                        raise ValueError(f"the name {name!r} belongs to a rater link: open your link instead")
                    if row is None:
                        cur = conn.execute("INSERT INTO study_raters (created_at, study, name) VALUES (?, ?, ?)",
                                           (time.time(), study, name))
                        row = conn.execute("SELECT * FROM study_raters WHERE id = ?", (cur.lastrowid,)).fetchone()
                if row["block"] is None or not 0 <= row["block"] < blocks:
                    counts = [0] * blocks
                    for (block,) in conn.execute("SELECT block FROM study_raters WHERE study = ? AND block IS NOT NULL",
                                                 (study,)):
                        if 0 <= block < blocks:
                            counts[block] += 1
                    block = choose_block(counts)
                    conn.execute("UPDATE study_raters SET block = ? WHERE id = ?", (block, row["id"]))
                    row = conn.execute("SELECT * FROM study_raters WHERE id = ?", (row["id"],)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return {k: row[k] for k in ("id", "study", "name", "block")}

    def add_study_ratings(self, study: str, rater: int, item: str, scores: Sequence[tuple[str, str, int | None]],
                          comment: str = "") -> bool:
        """One screen's ratings, (system, side, score or None for a skip) each, in one transaction.
        False (nothing written) when this rater has already rated an answer of the screen."""
        comment = comment.strip()
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"the comment is longer than {MAX_COMMENT} characters")
        for _, _, score in scores:
            if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 10):
                raise ValueError("the score must be a whole number from 1 to 10")
        now = time.time()
        with closing(self._connect()) as conn, conn:
            try:
                conn.executemany(
                    "INSERT INTO study_ratings (created_at, study, rater, item, system, side, score, comment) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(now, study, rater, item, system, side, score, comment) for system, side, score in scores])
            except sqlite3.IntegrityError:
                conn.rollback()
                return False
        return True

    def study_done(self, study: str, rater: int) -> set[tuple[str, str]]:
        """(item, system) of every answer this rater has rated or skipped."""
        with closing(self._connect()) as conn:
            return {(r["item"], r["system"]) for r in conn.execute(
                "SELECT item, system FROM study_ratings WHERE study = ? AND rater = ?", (study, rater))}

    def study_raters(self, study: str) -> list[dict[str, Any]]:
        """Every rater of the study: id, name, block, whether they sign in with a link, created_at."""
        with closing(self._connect()) as conn:
            return [{"id": r["id"], "name": r["name"], "block": r["block"], "link": r["token_hash"] is not None,
                     "created_at": r["created_at"]}
                    for r in conn.execute("SELECT * FROM study_raters WHERE study = ? ORDER BY id", (study,))]

    def study_ratings(self, study: str) -> list[dict[str, Any]]:
        """Every rating of the study, oldest first: created_at, rater (name), rater_id, item, system, side,
        score (None = skipped), comment."""
        query = ("SELECT g.created_at, r.name AS rater, g.rater AS rater_id, g.item, g.system, g.side, g.score, "
                 "g.comment FROM study_ratings g JOIN study_raters r ON r.id = g.rater WHERE g.study = ? ORDER BY g.id")
        with closing(self._connect()) as conn:
            return [dict(r) for r in conn.execute(query, (study,))]


def _rater_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("type your name first")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is longer than {MAX_NAME} characters")
    return name


def _token_hash(token: str) -> str:
    """Link tokens are stored hashed: the database alone does not let anyone sign in as a rater."""
    return hashlib.sha256(token.encode()).hexdigest()
