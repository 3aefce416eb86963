"""Files, written atomically: JSON, JSON lines, text; the sweep lock; provenance.

Every write goes to a temporary file in the same folder and is renamed over the target, so a kill
at any moment leaves the old file or the new one, never half of one; the file gets the mode that
the umask gives any new file (0644 under 022). No torch here, so that figures and tables can be
written without it: tensor files are ``store.tensors``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RunError(ValueError):
    """A result or adapter file that cannot be read; the message names the file and the key."""


# errno of a write that ran out of room: no space left, over the file-size limit (ulimit -f), over quota
FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFull(Exception):
    """A file could not be written for want of room; what was written before it stays (every write is
    atomic), so a rerun after freeing space resumes. The CLI prints the message and exits with 1."""

    exit_code = 1

    def __init__(self, path: Path, err: OSError):
        self.path = Path(path)
        super().__init__(f"{path}: cannot write it ({err.strerror or err}); finished cells are kept: "
                         "free space (or raise the file-size limit) and rerun the same command to resume")


@contextlib.contextmanager
def _room_for(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno in FULL_ERRNOS:
            raise DiskFull(path, err) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call write(f) on a temporary file beside `path`, then rename it over `path`; ``DiskFull``
    naming `path` when the disk or the file-size limit leaves no room (the old file stays)."""
    with _room_for(path):
        _atomic_write(path, write)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0644 under umask 022)
        os.fchmod(fd, 0o666 & ~_umask())
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
    atomic_write(Path(path), lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line; a torn last line (killed mid-write, or cut by a full disk: ``DiskFull``) is
    skipped by ``read_jsonl``."""
    with _room_for(path), open(path, "a") as f:
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
    """Versions, git commit of this project and where it ran: what is needed to trust a result.

    `device` is the device the work ran on ("cpu", "cuda:0"); on CUDA the GPU's name and its
    driver's version are recorded, and for any torch the CUDA version it was built with
    (``torch_cuda``, None for a CPU build). ``git_dirty`` is True when a tracked file's content
    differs from the commit (a mode-only change, as a copy to another machine makes, is not)."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-c", "core.fileMode=false", *args], cwd=repo, capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {
        "lowrank_lab": _version("lowrank-lab"),
        "git_commit": commit,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torch_cuda": _torch_cuda(),
        "transformers": _version("transformers"),
        "device": device,
        "device_name": _device_name(device),
        "cuda_driver": _cuda_driver(device),
    }


def _is_cuda(device: str | None) -> bool:
    return bool(device) and device.startswith("cuda") and sys.modules.get("torch") is not None


def _device_name(device: str | None) -> str:
    # a CUDA device is only named by a process that trains or analyses on it, so torch is loaded
    if _is_cuda(device):
        return sys.modules["torch"].cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _torch_cuda() -> str | None:
    """The CUDA version the loaded torch was built with (None: a CPU build, or torch not loaded)."""
    torch = sys.modules.get("torch")
    return getattr(getattr(torch, "version", None), "cuda", None)


def _cuda_driver(device: str | None) -> str | None:
    """The NVIDIA driver's version on a CUDA device (from nvidia-smi), None elsewhere."""
    if not _is_cuda(device):
        return None
    index = str(sys.modules["torch"].device(device).index or 0)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", index],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
