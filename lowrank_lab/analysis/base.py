"""W0 as the analyses see it: a source of frozen weights and their thin SVDs, each computed once.

The workflow builds a ``W0Source`` from a reader that ``store`` gives (the base model's weights
by module path); analysis never loads a model itself. φ(W0, ΔW) (Fig. 8), Table 7 and the
intruders all use W0's SVD, so it is computed once per matrix for every run and table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

from lowrank_lab.maths.update import Update

SVD = tuple[Tensor, Tensor, Tensor]


def resolve_device(device: str = "auto") -> torch.device:
    """"auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def dense_svd(W: Tensor, device: torch.device) -> SVD:
    """Thin float64 SVD of W (U d×p, S (p,), Vh p×k) computed on `device`, returned on the CPU."""
    U, S, Vh = torch.linalg.svd(W.detach().to(device=device, dtype=torch.float64), full_matrices=False)
    return U.cpu(), S.cpu(), Vh.cpu()


class W0Source:
    """``self(update)`` → W0 (d×k) of the update's module; ``self.svd(update)`` → its SVD, computed
    once per module path. `read(path)` gives W0 by path; `svd_of(W0, update)` the decomposition
    (default: the thin float64 SVD on `device`, U d×p, S (p,), Vh p×k, returned on the CPU;
    external adapters of a large base pass a randomized top-n one). `device` is also where the
    analyses put their dense d×k work (intruders, Table 7's projections). With `keep_weights`
    False, W0 itself is not kept (a caller that analyses one matrix at a time drops it)."""

    def __init__(self, read: Callable[[str], Tensor], name: str,
                 svd_of: Callable[[Tensor, Update], SVD] | None = None, device: str | torch.device = "cpu",
                 keep_weights: bool = True):
        self.read, self.name, self.keep_weights = read, name, keep_weights
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.svd_of = svd_of or (lambda W, _: dense_svd(W, self.device))
        self._svds: dict[str, SVD] = {}
        self._weights: dict[str, Tensor] = {}
        self._lock = threading.RLock()  # runs are analysed in threads: one read and one SVD per path; svd reads W0 under it

    def __call__(self, update: Update) -> Tensor:
        """W0 of the update's module, as read (once per path, in the dtype it is stored in)."""
        return self.weight(update.path)

    def weight(self, path: str) -> Tensor:
        if not self.keep_weights:
            return self.read(path)
        if path not in self._weights:
            with self._lock:
                if path not in self._weights:
                    self._weights[path] = self.read(path)
        return self._weights[path]

    def svd(self, update: Update) -> SVD:
        if update.path not in self._svds:
            with self._lock:
                if update.path not in self._svds:
                    self._svds[update.path] = self.svd_of(self(update), update)
        return self._svds[update.path]
