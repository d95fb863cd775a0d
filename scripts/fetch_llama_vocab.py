"""Fetch LLaMA's own tokenizer (the one Vicuna v0 and the official NExT-GPT checkpoint use) into the cache.

    python scripts/fetch_llama_vocab.py        # -> $NEXTGPT_CACHE/llama-vocab/ggml-vocab-llama-spm.gguf

llama.cpp ships a vocabulary-only GGUF of it, with tokenization test vectors (.inp / .out) beside it, inside the
llama-cpp-python source distribution on PyPI. This downloads that sdist once (pip, no build) and extracts
those three files. It is LLaMA's tokenizer, under LLaMA's licence: it is never committed to this repository.
Idempotent; exits 0 with a message when the package index cannot be reached (the tests that need the file
then skip and say why).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt import files  # noqa: E402
from nextgpt.llm import LLAMA_VOCAB_FILE, llama_vocab_dir  # noqa: E402

SDIST = "llama-cpp-python==0.3.36"
MEMBERS = (LLAMA_VOCAB_FILE, LLAMA_VOCAB_FILE + ".inp", LLAMA_VOCAB_FILE + ".out")


def main() -> int:
    target = llama_vocab_dir()
    if all((target / m).is_file() for m in MEMBERS):
        print(f"LLaMA tokenizer already in {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
               SDIST, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            print(f"could not download {SDIST} ({done.stderr.strip().splitlines()[-1:] or 'no output'}): "
                  "the real-tokenizer tests will be skipped")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in MEMBERS and member.name.endswith("vendor/llama.cpp/models/" + name):
                    data = tar.extractfile(member).read()
                    files.write_bytes(target / name, data)
    missing = [m for m in MEMBERS if not (target / m).is_file()]
    print(f"LLaMA tokenizer in {target}" + (f" (missing: {missing})" if missing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
