"""Atomic writes: a file (or folder) appears under its final name complete, or not at all.

    write_json(run_dir / "summary.json", summary)
    save_tensors({"weight": w}, folder / "part.safetensors")
    with atomic_path(cache / "media.npy") as tmp:  # any writer: it fills `tmp`, the rename publishes it
        np.save(tmp, array)
    with atomic_folder(run_dir / "state") as tmp:  # a whole folder, swapped in for the previous one
        ...

Every writer goes to a temporary name beside the target (same file system, so the rename is atomic) and is
renamed over it only once it has finished; a crash leaves at most a ``*.tmp<pid>`` file behind, never a torn
file under the final name. The lowest floor of the package: it imports nothing of the project.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write; renamed onto `path` when the block ends cleanly,
    removed when it raises. The temporary name keeps the target's suffix (writers that add one see it there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `folder`; when the block ends cleanly it replaces `folder` (the previous
    one is moved to ``<folder>.old`` for the instant between the two renames: see `readable_folder`)."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def readable_folder(folder: str | Path, marker: str) -> Path | None:
    """`folder` if it holds `marker`, else the ``.old`` copy a crash between `atomic_folder`'s two renames left
    (if it holds `marker`), else None."""
    for candidate in (Path(folder), Path(folder).with_name(Path(folder).name + ".old")):
        if (candidate / marker).is_file():
            return candidate
    return None


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """JSON with a final newline."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_tensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of (detached, contiguous, CPU) tensors."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
