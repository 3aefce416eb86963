"""Tensor files: safetensors, written atomically (``files``), never a pickle."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from lowrank_lab.store.files import RunError, atomic_write


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(Path(path), lambda f: f.write(data))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Tensors from a safetensors file (never a pickle), with a clear error for a broken file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None
