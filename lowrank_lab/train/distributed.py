"""Several processes, one sweep: ``torchrun --nproc-per-node N -m lowrank_lab rank-sweep SPEC``.

Each process (one GPU each) trains a share of the sweep's packs into the same sweep directory,
which must be on a file system that every process sees. A cell's own files are written only by
the process that trains it; the manifest only by rank 0, rebuilt from the cells' summaries, so
a process that dies loses no finished cell and a rerun trains exactly what is missing.

With ``sweep.data_parallel = true`` the processes instead train every pack together, each on a
slice of every batch, gradients averaged (data parallelism, for cells too large for one GPU's
share of the work); rank 0 alone writes.

On Ctrl-C or SIGTERM each process checkpoints the pack it trains (``train.interrupt``); under data
parallelism the processes agree, in the step's gradient all-reduce, to stop after the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: str) -> World:
    """The process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or one process.

    NCCL on GPUs, gloo on CPUs. The timeout is long because ranks meet only at the start and the end
    of a sweep, and one rank's packs may take hours longer than another's."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=48))
    return World(rank, size, local_rank)


def device_for(world: World, device: str) -> str:
    """Each process takes its own GPU: cuda:LOCAL_RANK when the spec says auto or cuda."""
    if world.size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def share(costs: list[float], world: World) -> list[int]:
    """Indices of the items this rank takes: longest first, each to the least-loaded rank (LPT)."""
    load = [0.0] * world.size
    mine = []
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        owner = min(range(world.size), key=lambda r: load[r])
        load[owner] += costs[i]
        if owner == world.rank:
            mine.append(i)
    return sorted(mine)


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average `tensors` in place across processes, in one flat buffer (one collective)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def close(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
