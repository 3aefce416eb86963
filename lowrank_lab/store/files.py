"""Files, written atomically: JSON, JSON lines, text, safetensors; the sweep lock; provenance.

Every write goes to a temporary file in the same folder and is renamed over the target, so a kill
at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor


class RunError(ValueError):
    """A result or adapter file that cannot be read; the message names the file and the key."""


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    _atomic(Path(path), lambda f: f.write(data))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line; a torn last line (killed mid-write) is skipped by ``read_jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: Path) -> list[dict]:
    records = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Tensors from a safetensors file (never a pickle), with a clear error for a broken file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None


@contextlib.contextmanager
def sweep_lock(sweep: Path) -> Iterator[None]:
    """Hold an exclusive lock on a sweep directory; a second sweep into it fails at once."""
    sweep.mkdir(parents=True, exist_ok=True)
    with open(sweep / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{sweep}: another sweep is writing into this directory") from None
        yield


# ---------------------------------------------------------------------------------------------
# Provenance


def provenance(device: str | None = None) -> dict[str, Any]:
    """Versions, git commit of this project and device: what is needed to trust a result."""
    import transformers

    from lowrank_lab import __version__

    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {
        "lowrank_lab": __version__,
        "git_commit": commit,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device and device.startswith("cuda") else platform.processor() or platform.machine(),
    }


