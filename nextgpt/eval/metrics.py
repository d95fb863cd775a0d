"""Metric helpers for the evaluation tables: caption n-gram scores, embedding-space distances, accuracies.

    caption_scores({"image": ({"0": ["a red circle"]}, {"0": "It is a red circle."})})
        -> {"image": {"BLEU-4": ..., "METEOR": ..., "CIDEr": ..., "unavailable": {}}}
    frechet_distance(generated, real)     # (N, D), (M, D) embeddings -> FID-style distance
    mean_cosine(media_embs, text_embs)    # (N, D), (N, D) -> mean row-wise cosine (CLIPSIM-style)
    attribute_accuracy(truths, preds, attribute_chance("image"))   # per attribute and "all", each a rate
    rate(17, 20, chance=0.25)             # {"rate": 0.85, "k": 17, "n": 20, "ci95": [0.64, 0.95], "chance": 0.25}

Every rate in a report is such a dict: the count behind it, its 95 % Wilson score interval (scipy's
`binomtest(...).proportion_ci(method="wilson")`) and the rate a blind guess would reach (None where no
guess is defined).

BLEU-4, METEOR and CIDEr are pycocoevalcap's (the COCO caption evaluation code): BLEU and CIDEr are pure
Python; METEOR runs its bundled Java jar, so it may be unavailable (no Java, a broken jar, a timeout), in
which case it is reported as None with the reason and the other scores are still returned. Text is
tokenized in Python the way COCO's PTB tokenizer treats this vocabulary (lower case, punctuation dropped),
which avoids a second Java process.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

METEOR_TIMEOUT_S = 300.0
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here (the message says why)."""


def tokenize(text: str) -> str:
    """Lower-case words separated by single spaces, punctuation dropped (as PTBTokenizer + COCO do)."""
    return " ".join(_WORD.findall(text.lower()))


def _prepare(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> tuple[dict, dict]:
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must have the same keys")
    if not hypotheses:
        raise ValueError("no captions to score")
    gts = {k: [tokenize(r) for r in refs] for k, refs in references.items()}
    res = {k: [tokenize(h)] for k, h in hypotheses.items()}
    return gts, res


def bleu4(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> float:
    """Corpus BLEU-4 (pycocoevalcap, 'closest' reference length), in [0, 1]."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _prepare(references, hypotheses)
    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(score[3])


def cider(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> float:
    """CIDEr-D (pycocoevalcap's `Cider`, x10 scale); document frequencies come from these references."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _prepare(references, hypotheses)
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def meteor(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str],
           timeout: float = METEOR_TIMEOUT_S) -> float:
    """METEOR 1.5 (pycocoevalcap's Java jar), in [0, 1]; raises MetricUnavailable with the reason."""
    return meteor_groups({"all": (references, hypotheses)}, timeout)["all"]


def meteor_groups(groups: Mapping[str, tuple[Mapping[str, Sequence[str]], Mapping[str, str]]],
                  timeout: float = METEOR_TIMEOUT_S) -> dict[str, float]:
    """METEOR of several groups of captions in one Java session; raises MetricUnavailable with the reason."""
    prepared = {name: _prepare(refs, hyps) for name, (refs, hyps) in groups.items()}
    # checked first: a Meteor whose Java process fails to start raises again from its __del__
    if shutil.which("java") is None:
        raise MetricUnavailable("METEOR needs Java: no `java` on PATH")
    try:
        from pycocoevalcap.meteor import meteor as meteor_module
    except ImportError as err:
        raise MetricUnavailable(f"METEOR needs pycocoevalcap: {err}") from None
    jar = Path(meteor_module.__file__).parent / meteor_module.METEOR_JAR
    if not jar.is_file():
        raise MetricUnavailable(f"METEOR's jar is missing: {jar}")
    scorer = meteor_module.Meteor()
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        scorer.meteor_p.kill()  # unblocks the wrapper's readline

    watchdog = threading.Timer(timeout, stop)
    watchdog.start()
    try:
        return {name: float(scorer.compute_score(gts, res)[0]) for name, (gts, res) in prepared.items()}
    except (ValueError, OSError) as err:  # the Java side died, answered garbage or was stopped
        scorer.lock = threading.Lock()  # the wrapper keeps its lock when it fails; its __del__ needs it
        if timed_out.is_set():
            raise MetricUnavailable(f"METEOR's Java process did not answer within {timeout:.0f} s") from None
        scorer.meteor_p.kill()
        stderr = scorer.meteor_p.stderr.read().decode(errors="replace").strip()[-300:]
        raise MetricUnavailable(f"METEOR's Java process failed ({type(err).__name__}: {err}) {stderr}".strip()) from None
    finally:
        watchdog.cancel()
        del scorer  # stops the Java process


def caption_scores(groups: Mapping[str, tuple[Mapping[str, Sequence[str]], Mapping[str, str]]], *,
                   use_meteor: bool = True) -> dict[str, dict[str, Any]]:
    """BLEU-4, METEOR and CIDEr per group of (references: several per key, hypotheses: one per key).

    Returns {group: {"BLEU-4", "METEOR", "CIDEr", "unavailable": {metric: reason}}}; an unavailable metric
    is None. METEOR is computed for every group in one Java session.
    """
    out = {name: {"BLEU-4": bleu4(refs, hyps), "METEOR": None, "CIDEr": cider(refs, hyps), "unavailable": {}}
           for name, (refs, hyps) in groups.items()}
    if not use_meteor:
        for scores in out.values():
            scores["unavailable"]["METEOR"] = "switched off (--no-meteor)"
        return out
    try:
        for name, score in meteor_groups(groups).items():
            out[name]["METEOR"] = score
    except MetricUnavailable as err:
        log.warning("METEOR unavailable: %s", err)
        for scores in out.values():
            scores["unavailable"]["METEOR"] = str(err)
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two embedding sets (N, D) and (M, D), as FID does:

        |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    Needs at least 2 rows per set. With fewer rows than dimensions the covariances are singular; like the
    reference FID code, eps * I is added when the matrix square root is not finite.
    """
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Frechet distance needs at least 2 items per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (D, D)
    with warnings.catch_warnings():  # singular products are expected with few items; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(cov_a)) * eps
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)  # tiny imaginary parts are numerical noise
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean), 0.0))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows of (N, D) and (N, D), in [-1, 1]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or not len(a):
        raise ValueError(f"expected two non-empty (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1).clip(1e-12)
    nb = np.linalg.norm(b, axis=1).clip(1e-12)
    return float(((a * b).sum(1) / (na * nb)).mean())


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of k successes in n trials (n >= 1)."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def rate(k: int, n: int, chance: float | None = None) -> dict[str, Any]:
    """A success rate with its count, 95 % Wilson interval and chance level; rate and interval None at n = 0."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    ci = list(wilson_interval(k, n)) if n else None
    return {"rate": k / n if n else None, "k": int(k), "n": int(n), "ci95": ci,
            "chance": None if chance is None else float(chance)}


def rate_of(flags: Sequence[bool], chance: float | Sequence[float] | None = None) -> dict[str, Any]:
    """`rate` of a list of outcomes; `chance` may be one level or one per outcome (then their mean)."""
    if chance is not None and not isinstance(chance, (int, float)):
        chance = float(np.mean(chance)) if len(chance) else None
    return rate(sum(bool(f) for f in flags), len(flags), chance)


def attribute_chance(modality: str) -> dict[str, float]:
    """A uniform guess of each attribute's word: 1 / number of words; "all": the product."""
    from nextgpt.world.vocab import ATTRIBUTES

    out = {name: 1.0 / len(words) for name, words in ATTRIBUTES[modality].items()}
    out["all"] = float(np.prod(list(out.values())))
    return out


def attribute_accuracy(truths: Sequence[Mapping[str, str]], preds: Sequence[Mapping[str, str | None] | None],
                       chance: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per attribute, the `rate` of items whose predicted word equals the true one, plus "all" (every
    attribute right). A missing prediction (None) counts as wrong for every attribute."""
    if len(truths) != len(preds):
        raise ValueError("truths and preds must have the same length")
    if not truths:
        return {}
    chance = chance or {}
    names = list(dict.fromkeys(k for t in truths for k in t))
    right = [{name: (pred or {}).get(name) == value for name, value in truth.items()}
             for truth, pred in zip(truths, preds)]
    out = {name: rate_of([r[name] for r in right if name in r], chance.get(name)) for name in names}
    out["all"] = rate_of([all(r.values()) for r in right], chance.get("all"))
    return out
