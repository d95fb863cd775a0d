"""Evaluation scores in SQLite: a person's scores of their own chat turns. The same file holds the raters and
ratings of human evaluation studies: ScoreStore extends nextgpt/study/store.py's StudyStore (which the
`python -m nextgpt study` commands use on their own) with the `scores` table.

    store = ScoreStore("scores.sqlite")          # or $NEXTGPT_SCORES_DB; WAL mode
    store.add(Score(evaluator="ana", category="T->I", conversion="T->I", turn=1, score=8, ...))
    store.summary(model_version="3fa2c1d09b7e")  # mean and 95 % t-interval per category
    store.export_csv("scores.csv")               # every row, the same columns as `rows()`
    store.study_ratings("default")               # and every StudyStore method

Every operation opens its own connection (safe from any thread; WAL lets readers run beside a writer and
the busy timeout queues concurrent writers).
"""

from __future__ import annotations

import csv
import json
import math
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from nextgpt.study.store import MAX_COMMENT, MAX_NAME, SCORES_DB_ENV, StudyStore, default_db_path

__all__ = ["COLUMNS", "MAX_COMMENT", "MAX_NAME", "SCORES_DB_ENV", "CategorySummary", "Score", "ScoreStore",
           "default_db_path", "mean_interval"]

_SCORES_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,          -- unix time
    evaluator TEXT NOT NULL,
    preset TEXT NOT NULL,
    model_version TEXT NOT NULL,
    category TEXT NOT NULL,            -- the conversion type, or "multi-turn" for a later turn
    conversion TEXT NOT NULL,          -- inputs -> outputs of this turn, e.g. "T+I->I"
    turn INTEGER NOT NULL,             -- 1-based position of the turn in its conversation
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 10),
    comment TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL,            -- JSON: GenerationSettings of the turn
    conversation TEXT NOT NULL,        -- JSON: the messages up to and including the scored reply
    session TEXT NOT NULL DEFAULT ''   -- random id of the browser session
);
CREATE INDEX IF NOT EXISTS scores_by_version ON scores (model_version, category);
"""
COLUMNS = ("id", "created_at", "evaluator", "preset", "model_version", "category", "conversion", "turn", "score",
           "comment", "settings", "conversation", "session")


@dataclass(frozen=True)
class Score:
    """One evaluator's score for one assistant turn."""

    evaluator: str
    category: str
    conversion: str
    turn: int
    score: int  # 1..10
    preset: str
    model_version: str
    comment: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    conversation: list[dict[str, Any]] = field(default_factory=list)
    session: str = ""

    def __post_init__(self) -> None:
        if not self.evaluator.strip():
            raise ValueError("type the evaluator's name first")
        if len(self.evaluator) > MAX_NAME:
            raise ValueError(f"the evaluator's name is longer than {MAX_NAME} characters")
        if len(self.comment) > MAX_COMMENT:
            raise ValueError(f"the comment is longer than {MAX_COMMENT} characters")
        if isinstance(self.score, bool) or not isinstance(self.score, int) or not 1 <= self.score <= 10:
            raise ValueError("the score must be a whole number from 1 to 10")


@dataclass(frozen=True)
class CategorySummary:
    category: str
    n: int
    mean: float
    low: float  # 95 % t-interval of the mean; NaN with a single score
    high: float


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval of the mean; the interval is NaN for fewer than two values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


class ScoreStore(StudyStore):
    """SQLite file of chat scores and of study raters and ratings (StudyStore's methods). Thread-safe: nothing
    is shared between calls but the path."""

    SCHEMA = _SCORES_SCHEMA + StudyStore.SCHEMA

    def add(self, score: Score) -> int:
        """Insert one score; returns its id."""
        row = asdict(score)
        row["evaluator"] = score.evaluator.strip()
        row["settings"] = json.dumps(score.settings, sort_keys=True)
        row["conversation"] = json.dumps(score.conversation)
        names = [c for c in COLUMNS if c not in ("id", "created_at")]
        with closing(self._connect()) as conn, conn:
            cur = conn.execute(
                f"INSERT INTO scores (created_at, {', '.join(names)}) VALUES (?, {', '.join('?' * len(names))})",
                [time.time(), *(row[c] for c in names)],
            )
            return int(cur.lastrowid)

    def rows(self, *, model_version: str | None = None) -> list[dict[str, Any]]:
        """Every row (oldest first) as a dict of the `COLUMNS`; settings/conversation stay JSON text."""
        query, args = "SELECT * FROM scores", ()
        if model_version is not None:
            query, args = query + " WHERE model_version = ?", (model_version,)
        with closing(self._connect()) as conn:
            return [dict(r) for r in conn.execute(query + " ORDER BY id", args)]

    def summary(self, *, model_version: str | None = None) -> list[CategorySummary]:
        """Mean and 95 % t-interval of the score per category (sorted by category)."""
        by_cat: dict[str, list[float]] = {}
        for row in self.rows(model_version=model_version):
            by_cat.setdefault(row["category"], []).append(float(row["score"]))
        out = []
        for category in sorted(by_cat):
            mean, low, high = mean_interval(by_cat[category])
            out.append(CategorySummary(category, len(by_cat[category]), mean, low, high))
        return out

    def export_csv(self, path: str | Path) -> Path:
        """Write every row to a CSV file (header = `COLUMNS`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows())
        return path
