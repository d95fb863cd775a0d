"""What a checkpoint's world is, and whether an upload belongs to it: `<checkpoint>/world.json`.

A checkpoint trained on a closed world (nano: `nextgpt/world`) ships world.json. Per modality it holds the
world's words, how to say them, and the statistics that tell an upload from outside that world:

    profile = WorldProfile.load("checkpoints/nano")            # None for a checkpoint without world.json
    profile.outside(Modality.IMAGE, feats)                     # feats (N, D) encoder embeddings -> [True, False]
    profile.notice(Modality.IMAGE, "nano")                     # 'This picture does not look like anything ...'
    profile.describe(Modality.AUDIO)                           # 'a low or high tone or buzz, steady or beeping'

The score is the class-conditional Mahalanobis distance of an upload's unit embedding to the world's
prototypes (Lee et al., 2018): one mean per class (e.g. "red circle") of world media embeddings and one
covariance shared by the classes, kept as its top principal directions plus one variance for all the others.
Similarity to the world's captions cannot tell: the encoder maps any input somewhere onto its world, and a
noise photo's best caption similarity is as high as a red circle's. How far an embedding lies from where world
media actually fall can. `scripts/calibrate_ood.py` fits the statistics on world media, takes the threshold from
the world's val split, measures it on the test split and on media from outside, and writes world.json.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nextgpt.config import MODALITY_INFO, Modality

log = logging.getLogger(__name__)

WORLD_FILE = "world.json"


def either(words: Sequence[str], last: str = "or") -> str:
    """('red', 'green', 'blue') -> 'red, green or blue' (`last`="and": 'red, green and blue')."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


def _pack(arr: np.ndarray) -> dict[str, Any]:
    """A float array as JSON: float16, little-endian, base64 (the statistics need no more precision)."""
    half = np.ascontiguousarray(arr, dtype="<f2")
    return {"shape": list(half.shape), "float16": base64.b64encode(half.tobytes()).decode("ascii")}


def _unpack(d: Mapping[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["float16"])
    return np.frombuffer(raw, dtype="<f2").reshape(d["shape"]).astype(np.float64)


@dataclass(frozen=True)
class ModalityCheck:
    """The statistics of one modality's world media and the distance above which an upload is outside."""

    classes: tuple[str, ...]  # one prototype per class, e.g. "red circle"
    means: np.ndarray = field(repr=False)  # (C, D) class means of unit embeddings
    basis: np.ndarray = field(repr=False)  # (D, k) top principal directions of the within-class covariance
    variances: np.ndarray = field(repr=False)  # (k,) the covariance's variance along each of them
    residual: float  # mean variance along the other D - k directions
    threshold: float = float("inf")  # distances above it are outside the world

    @classmethod
    def fit(cls, feats: np.ndarray, labels: Sequence[str], *, components: int = 32, shrinkage: float = 1e-2
            ) -> "ModalityCheck":
        """Class means and the shared within-class covariance of (N, D) world embeddings with their class labels.

        The covariance is shrunk towards its mean variance by `shrinkage` (a few hundred items estimate a
        D x D matrix poorly) and kept as `components` principal directions; the threshold is set by the caller.
        """
        x = _unit(feats)  # (N, D)
        classes = tuple(sorted(set(labels)))
        index = np.array([classes.index(label) for label in labels])
        means = np.stack([x[index == c].mean(0) for c in range(len(classes))])  # (C, D)
        centred = x - means[index]
        cov = centred.T @ centred / len(x)  # (D, D)
        cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(cov)) * np.trace(cov) / len(cov)
        values, vectors = np.linalg.eigh(cov)  # ascending
        values, vectors = values[::-1], vectors[:, ::-1]
        k = min(components, len(values) - 1)
        return cls(classes=classes, means=means, basis=vectors[:, :k].copy(), variances=values[:k].copy(),
                   residual=float(values[k:].mean()))

    def distances(self, feats: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) Mahalanobis distance to the nearest class prototype."""
        x = _unit(feats)
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"embeddings are {x.shape[1]}-d, the world statistics {self.means.shape[1]}-d")
        diff = x[:, None, :] - self.means[None]  # (N, C, D)
        along = diff @ self.basis  # (N, C, k)
        rest = np.clip((diff**2).sum(-1) - (along**2).sum(-1), 0.0, None)  # (N, C)
        squared = (along**2 / self.variances).sum(-1) + rest / self.residual
        return np.sqrt(squared.min(-1))

    def with_threshold(self, threshold: float) -> "ModalityCheck":
        return ModalityCheck(self.classes, self.means, self.basis, self.variances, self.residual, float(threshold))

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "classes": list(self.classes), "means": _pack(self.means),
                "basis": _pack(self.basis), "variances": [float(v) for v in self.variances],
                "residual": self.residual}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModalityCheck":
        check = cls(classes=tuple(d["classes"]), means=_unpack(d["means"]), basis=_unpack(d["basis"]),
                    variances=np.asarray(d["variances"], dtype=np.float64), residual=float(d["residual"]),
                    threshold=float(d["threshold"]))
        c, dim = check.means.shape
        if c != len(check.classes) or check.basis.shape != (dim, len(check.variances)):
            raise ValueError("means, basis and variances do not fit together")
        return check


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


def _unit(feats: Any) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class WorldModality:
    """One modality of the world: its words, how to say them, and (when calibrated) the outside check."""

    vocabulary: dict[str, tuple[str, ...]]  # attribute -> its words, e.g. {"colour": ("red", ...), ...}
    caption: str  # caption template, e.g. "a {colour} {shape}"
    gist: str  # a few words for notices, e.g. "coloured shapes on white"
    phrase: str  # a phrase whose {attribute} becomes its words, e.g. "one {shape} in {colour}, on white"
    check: ModalityCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vocabulary": {k: list(v) for k, v in self.vocabulary.items()}, "caption": self.caption,
                               "gist": self.gist, "phrase": self.phrase}
        if self.check is not None:
            out["check"] = self.check.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorldModality":
        return cls(vocabulary={k: tuple(v) for k, v in d["vocabulary"].items()}, caption=d["caption"],
                   gist=d["gist"], phrase=d["phrase"],
                   check=ModalityCheck.from_dict(d["check"]) if d.get("check") else None)


@dataclass(frozen=True)
class WorldProfile:
    """The closed world a checkpoint was trained on (see the module docstring)."""

    name: str  # e.g. "the nano world (nextgpt/world, version 1, seed 0)"
    modalities: dict[Modality, WorldModality]
    calibration: dict[str, Any] = field(default_factory=dict, repr=False)  # the measured figures, as written

    def describe(self, modality: Modality) -> str:
        """Every word of the modality's world in its phrase, e.g. 'a low or high tone or buzz, steady or beeping'."""
        part = self.modalities[modality]
        return part.phrase.format(**{k: either(v) for k, v in part.vocabulary.items()})

    def example(self, modality: Modality) -> str:
        """A caption of the world built from each attribute's first word, e.g. 'a red circle'."""
        part = self.modalities[modality]
        return part.caption.format(**{k: v[0] for k, v in part.vocabulary.items()})

    def words(self) -> list[str]:
        """Every word of the world, each once, in order of appearance."""
        seen: dict[str, None] = {}
        for part in self.modalities.values():
            for words in part.vocabulary.values():
                seen.update(dict.fromkeys(words))
        return list(seen)

    def calibrated(self, modality: Modality) -> bool:
        part = self.modalities.get(modality)
        return part is not None and part.check is not None and np.isfinite(part.check.threshold)

    def outside(self, modality: Modality, feats: np.ndarray) -> list[bool]:
        """Per embedding: whether it lies outside the world (False for every one where no check is calibrated)."""
        if not self.calibrated(modality):
            return [False] * len(np.atleast_2d(feats))
        check = self.modalities[modality].check
        assert check is not None
        return [bool(d > check.threshold) for d in check.distances(feats)]

    def notice(self, modality: Modality, model_name: str, which: int | None = None) -> str:
        """What the user is told about an upload from outside the world; `which` (1, 2, ...) counts the
        message's uploads of that modality when it has several."""
        noun = MODALITY_INFO[modality].spoken
        head = f"This {noun}" if which is None else f"The {_ordinal(which)} {noun}"
        return (f"{head} does not look like anything {model_name} was trained on "
                f"({self.modalities[modality].gist}); the answer may be wrong.")

    # ---- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modalities": {m.value: p.to_dict() for m, p in self.modalities.items()},
                "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorldProfile":
        return cls(name=d["name"], modalities={Modality(m): WorldModality.from_dict(p) for m, p in d["modalities"].items()},
                   calibration=dict(d.get("calibration", {})))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "WorldProfile | None":
        """`folder`/world.json, or None where there is none. A file that cannot be read is logged and skipped:
        the model then works as one without a profile (no notices), it never fails to load because of it."""
        path = Path(folder) / WORLD_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s cannot be read (%s): no world profile, so no notices about uploads", path, err)
            return None
