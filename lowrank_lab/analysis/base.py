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


class W0Source:
    """``self(update)`` → W0 (d×k) of the update's module; ``self.svd(update)`` → its SVD, computed
    once per module path. `read(path)` gives W0 by path; `svd_of(W0, update)` the decomposition
    (default: the thin float64 SVD, U d×p, S (p,), Vh p×k; external adapters of a large base pass
    a randomized top-n one)."""

    def __init__(self, read: Callable[[str], Tensor], name: str,
                 svd_of: Callable[[Tensor, Update], SVD] | None = None):
        self.read, self.name = read, name
        self.svd_of = svd_of or (lambda W, _: torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False))
        self._svds: dict[str, SVD] = {}
        self._lock = threading.Lock()  # runs are analysed in threads; one SVD per path, not one per thread

    def __call__(self, update: Update) -> Tensor:
        return self.read(update.path)

    def svd(self, update: Update) -> SVD:
        if update.path not in self._svds:
            with self._lock:
                if update.path not in self._svds:
                    self._svds[update.path] = self.svd_of(self(update), update)
        return self._svds[update.path]
