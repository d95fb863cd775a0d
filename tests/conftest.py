"""Shared tiny fixtures: everything here is small enough for 2 CPU cores and random-weight by design."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nextgpt.config import NextGPTConfig, ProjectorConfig

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for an app launched by a test)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_world(root: Path, splits: tuple[str, ...], n: int, n_dialogues: int, n_tasks: int = 0) -> Path:
    """A small world at `root`: `n` items per modality, `n_dialogues` dialogues and `n_tasks` task records per task
    row in each split (seed 0)."""
    from nextgpt.world.records import make_split

    for split in splits:
        make_split(root, split, n=n, seed=0, n_dialogues=n_dialogues, workers=2, n_tasks=n_tasks)
    return root


def run_nextgpt(*args: str, cwd: Path = ROOT, timeout: int = 900) -> tuple[dict, str]:
    """`python -m nextgpt ...` in a new process, as a user runs it: must exit 0; returns its last JSON line
    and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nextgpt", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need a CUDA GPU and those marked `weights7b` the real nextgpt-7b weights in
    NEXTGPT_7B_DIR: where either is missing they are skipped, and the summary says why."""
    weights = os.environ.get("NEXTGPT_7B_DIR")
    missing = {
        "gpu": None if torch.cuda.is_available() else "needs a CUDA GPU",
        "weights7b": None if weights and Path(weights).is_dir() else
        "needs the real nextgpt-7b weights: set NEXTGPT_7B_DIR to the folder of the README's 7B section",
    }
    for item in items:
        reasons = [reason for marker, reason in missing.items() if reason and item.get_closest_marker(marker)]
        if reasons:
            item.add_marker(pytest.mark.skip(reason="; ".join(reasons)))


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from two, and on a shared 2-core machine two threads contend
    (~10x slower). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2's tokenizer without the added tokens (the tests that change it take a copy)."""
    from nextgpt.tiny import smol_tokenizer

    return smol_tokenizer()


@pytest.fixture()
def tiny_llm():
    """(cfg, llm, tokenizer): the tiny preset's random 2-layer Llama with the real tokenizer and the added tokens."""
    from nextgpt.tiny import tiny_config, tiny_llm

    cfg = tiny_config()
    return (cfg, *tiny_llm(cfg))


@pytest.fixture()
def tiny_model():
    """A whole NextGPT of the tiny preset on random components: encoder, LLM, projectors, decoders."""
    from nextgpt.tiny import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def llama_tokenizer():
    """LLaMA's own tokenizer (Vicuna v0's), fetched by `make llama-vocab` into the cache; skipped when absent."""
    from nextgpt.llm import LLAMA_VOCAB_FILE, llama_vocab_dir, load_llama_v0_tokenizer

    if not (llama_vocab_dir() / LLAMA_VOCAB_FILE).is_file():
        pytest.skip(f"LLaMA tokenizer not fetched ({llama_vocab_dir() / LLAMA_VOCAB_FILE}): run make llama-vocab")
    return load_llama_v0_tokenizer()


def tiny_7b_config() -> NextGPTConfig:
    """The nextgpt-7b layout (vicuna_v0 prompt, 38 added tokens, 4/24/8 signal tokens) at toy widths."""
    big = NextGPTConfig.from_name("nextgpt-7b")
    llm = dataclasses.replace(big.llm, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                              intermediate_size=64, max_context=512)
    proj = ProjectorConfig(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    return big.replace(llm=llm, encoder=NextGPTConfig.from_name("tiny").encoder, projector=proj)
