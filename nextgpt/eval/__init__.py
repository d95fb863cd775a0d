"""Evaluation and benchmarking (one module per command).

metrics  - caption scores (pycocoevalcap BLEU-4 / METEOR / CIDEr), Frechet distance, cosine, accuracies
evaluate - the paper's tables on the world's test split through `NextGPT.chat` (`python -m nextgpt eval`)
report   - report.md, report.json, items.jsonl.gz and PNG plots of an evaluation (matplotlib, imported on use)
bench    - speed and memory against the targets and the official demo's way (`python -m nextgpt bench`)
bench7b  - the 7B path with random weights at full or toy size (`python -m nextgpt bench --random-weights`)
official_way - the official demo's decoders, re-loaded for every item

Names are imported on first use, so `bench7b` runs where the evaluation's dependencies are not installed.
"""

import importlib

_EXPORTS = {"BenchConfig": "bench", "benchmark": "bench", "write_bench": "bench", "EvalConfig": "evaluate",
            "EvalReport": "evaluate", "evaluate": "evaluate", "write_report": "report"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    module = importlib.import_module(f"nextgpt.eval.{_EXPORTS[name]}")
    # the import set `nextgpt.eval.evaluate` to the submodule: the function of that name replaces it, as an
    # eager `from nextgpt.eval.evaluate import evaluate` would
    globals().update({n: getattr(module, n) for n, m in _EXPORTS.items() if m == _EXPORTS[name]})
    return globals()[name]
