"""Where a figure comes from: the checkpoint's weight hash and the code's git commit.

    weight_hash(Path("checkpoints/nano"))   # 'sha256:3f2a...' over every *.safetensors file, by relative path
    git_commit()                             # '1a2b3c4...' ('+dirty' when tracked files differ), None outside git

Every report (eval, bench) records both, so a figure can be matched with the weights it measured; a test
compares the committed reports' hash with the shipped checkpoint's.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def weight_hash(folder: str | Path) -> str | None:
    """sha256 over (relative path, file sha256) of every safetensors file under `folder`; None if it has none.

    Only weights count: a rewritten model card, config or metrics file leaves the hash unchanged.
    """
    files = sorted(Path(folder).rglob("*.safetensors"))
    if not files:
        return None
    outer = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{path.relative_to(folder).as_posix()}\0{inner.hexdigest()}\n".encode())
    return "sha256:" + outer.hexdigest()


def git_commit(root: str | Path = REPO_ROOT) -> str | None:
    """HEAD's commit of the repository at `root`, '+dirty' when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def display_path(path: str | Path) -> str:
    """`path` relative to the repository when inside it (reports name no machine's folders), else as given."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
