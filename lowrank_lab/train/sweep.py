"""A rank sweep: expand the spec into cells, pack them, train each pack, save every cell.

``run_sweep(spec)`` is what ``lowrank-lab rank-sweep`` calls. Finished cells are skipped on a
rerun; an interrupted pack resumes from its last checkpoint; a cell whose loss becomes NaN is
marked failed and the others go on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lowrank_lab.store import files
from lowrank_lab.store import peft_format
from lowrank_lab.store import runs
from lowrank_lab.spec import CellSpec, ExperimentSpec, SpecError, expand_sweep, spec_to_dict
from lowrank_lab.train.data import load_task
from lowrank_lab.train.distributed import World, close, device_for, init_world, share
from lowrank_lab.model.lora import base_shape
from lowrank_lab.model.base import default_pooling, find_targets, load_base, resolve_model_path
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.train.loop import (CellState, Pack, StepMeter, build_pack, cell_slices, encode, resolve_device, train_pack,
                    trainable_parameters)


def _pack_key(cell: CellSpec) -> tuple:
    """Cells with equal keys can share one forward pass: same model, data and optimisation."""
    return (cell.lora.method, cell.lora.dropout, replace(cell.train, seed=0, data_seed=None))


def plan_packs(cells: Sequence[CellSpec], pack_size: int) -> list[list[CellSpec]]:
    """Group cells into packs of at most `pack_size`; full fine-tuning and BitFit train alone.

    Cells that can share a pack are dealt out round-robin over as few packs as fit, so every pack
    gets the same mix of ranks and target sets and the packs take about equally long (which is
    what lets several GPUs finish together)."""
    groups: dict[tuple, list[CellSpec]] = {}
    for cell in cells:
        groups.setdefault(_pack_key(cell), []).append(cell)
    packs = []
    for key, members in groups.items():
        n_packs = len(members) if key[0] in ("full", "bitfit") else math.ceil(len(members) / pack_size)
        packs += [members[i::n_packs] for i in range(n_packs)]
    return packs


def pack_id(cells: Sequence[CellSpec]) -> str:
    return hashlib.sha1("\n".join(c.name for c in cells).encode()).hexdigest()[:12]


def activation_bytes_per_cell(config, batch_size: int, max_length: int) -> int:
    """Activation memory one cell adds to a pack in bf16, for a BERT-like encoder: per token and
    layer about 34·d + 5·heads·L bytes (Korthikanti et al. 2022, Eq. 1, without sequence
    parallelism). On the H200 this slightly overestimates what we measured (MiniLM: ~160 MB per
    cell at batch 32 × 64 tokens against 207 MB predicted)."""
    d, heads, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    return batch_size * max_length * layers * (34 * d + 5 * heads * max_length)


def auto_pack_size(spec: ExperimentSpec, n_lora: int, world_size: int, encoder=None,
                   free_bytes: int | None = None) -> int:
    """sweep.pack, else the LoRA cells split evenly over the processes, capped by what fits in
    80% of the free accelerator memory (`free_bytes`, when known) and at 128 per pack."""
    if spec.sweep.pack is not None:
        return spec.sweep.pack
    size = min(math.ceil(max(n_lora, 1) / world_size), 128)
    if free_bytes is not None and encoder is not None:
        per_cell = activation_bytes_per_cell(encoder.config, spec.train.batch_size, spec.model.max_length)
        size = min(size, int(0.8 * free_bytes // per_cell))
    return max(1, size)


def cell_status(sweep: Path, cell: CellSpec) -> dict:
    """A cell's state from its own files: done/failed (summary.json), running (started) or pending."""
    folder = runs.cell_dir(sweep, cell)
    if (folder / "summary.json").exists():
        summary = files.read_json(folder / "summary.json")
        best = summary.get("best") or {}
        return {"status": summary["status"], "error": summary.get("error"),
                "best": best.get(summary.get("main_metric")), "pack": summary["pack"]["id"]}
    return {"status": "running" if (folder / "config.json").exists() else "pending"}


def write_manifest(sweep: Path, cells: Sequence[CellSpec]) -> dict:
    """The sweep's index, rebuilt from the cells' own files (rank 0 alone writes it)."""
    manifest = {"cells": {c.name: cell_status(sweep, c) for c in cells}}
    files.write_json(sweep / "manifest.json", manifest)
    return manifest


def _check_same_spec(sweep: Path, spec: ExperimentSpec) -> None:
    """A rerun must mean the same experiment; only the sweep axes may grow."""
    path = sweep / "spec.json"
    if not path.exists():
        return
    old, new = files.read_json(path), spec_to_dict(spec)
    for section in ("model", "data", "train"):
        if old.get(section) != new[section]:
            raise SpecError(f"{path}: this sweep directory was made with a different [{section}]; "
                            "use another sweep.name or out_dir")


def run_sweep(spec: ExperimentSpec, echo=print) -> Path:
    """Train every cell of the sweep that is not finished yet; return the sweep directory.

    Under torchrun each process trains its share of the packs (see ``distributed``)."""
    world = init_world(spec.train.device)
    try:
        return _run_sweep(spec, world, echo if world.is_main else (lambda *_: None))
    finally:
        close(world)


@dataclass
class Inputs:
    """What every pack of a sweep shares: the task, the tokenised splits, the frozen base."""

    task: object
    train: object
    dev: object
    encoder: torch.nn.Module
    tokenizer: object
    pooling: str


def load_inputs(spec: ExperimentSpec, cells: Sequence[CellSpec]) -> Inputs:
    """Load and check the data and the model before anything is written: a bad task, model or
    rank fails here with a message that names it."""
    task = load_task(spec.data)
    encoder, tokenizer = load_base(spec.model.name, spec.model.revision)
    lora_cells = [c for c in cells if c.lora.method == "lora"]
    if lora_cells:
        kinds = tuple(sorted({k for c in lora_cells for k in c.lora.kinds}, key="qkvo".index))
        for label, path in find_targets(encoder, kinds).items():
            d, k = base_shape(encoder.get_submodule(path))
            too_big = [c.lora.r for c in lora_cells if c.lora.r > min(d, k)]
            if too_big:
                raise SpecError(f"sweep.r: r={max(too_big)} exceeds min(d, k) = {min(d, k)} of {label}")
    regression = task.num_labels == 1
    return Inputs(task, encode(tokenizer, task.train, spec.model.max_length, regression),
                  encode(tokenizer, task.dev, spec.model.max_length, regression), encoder, tokenizer,
                  spec.model.pooling or default_pooling(spec.model.name))


def _run_sweep(spec: ExperimentSpec, world: World, echo) -> Path:
    cells = expand_sweep(spec)
    sweep = runs.sweep_dir(spec)
    device = resolve_device(device_for(world, spec.train.device))
    _check_same_spec(sweep, spec)
    unfinished = [c for c in cells if cell_status(sweep, c)["status"] != "done"]
    inputs = load_inputs(spec, unfinished) if unfinished else None
    with files.sweep_lock(sweep) if world.is_main else contextlib.nullcontext():
        if world.is_main:
            files.write_json(sweep / "spec.json", {**spec_to_dict(spec), "provenance": files.provenance(str(device))})
            write_manifest(sweep, cells)
        world.barrier()
        todo = [c for c in cells if cell_status(sweep, c)["status"] != "done"]
        echo(f"sweep {sweep}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
             f"{world.size} process(es), device {device}")
        n_lora = sum(c.lora.method == "lora" for c in todo)
        data_parallel = spec.sweep.data_parallel and world.size > 1
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        size = auto_pack_size(spec, n_lora, 1 if data_parallel else world.size,
                              inputs.encoder if inputs else None, free)
        packs = plan_packs(todo, size)
        if todo:
            why = "sweep.pack" if spec.sweep.pack else ("free GPU memory and processes" if free else "processes")
            echo(f"{len(packs)} pack(s) of up to {size} cells (from {why})")
        mine = packs if data_parallel else [packs[i] for i in share([float(len(p)) for p in packs], world)]
        overall = tqdm(total=sum(map(len, mine)), desc="sweep", unit="cell", disable=_quiet(), position=0)
        for cells_of_pack in mine:
            _run_pack(sweep, cells_of_pack, inputs, device, world, data_parallel)
            if world.is_main:
                write_manifest(sweep, cells)
            overall.update(len(cells_of_pack))
        overall.close()
        world.barrier()
        if world.is_main:
            manifest = write_manifest(sweep, cells)
            for name, entry in manifest["cells"].items():
                if entry["status"] == "failed":
                    echo(f"FAILED {name}: {entry.get('error')}")
    return sweep


def failed_cells(sweep: Path) -> list[str]:
    """Names of the cells the manifest marks failed (NaN loss, no finite evaluation)."""
    manifest = files.read_json(Path(sweep) / "manifest.json")
    return [name for name, entry in manifest["cells"].items() if entry["status"] == "failed"]


def _quiet() -> bool | None:
    """Progress bars on a terminal, off in CI or with LOWRANK_LAB_PROGRESS=0."""
    if os.environ.get("LOWRANK_LAB_PROGRESS") == "0" or os.environ.get("CI"):
        return True
    return None if sys.stderr.isatty() else True


def _run_pack(sweep: Path, cells: list[CellSpec], inputs: Inputs, device: torch.device, world: World,
              data_parallel: bool = False) -> None:
    """Train one pack and save its cells; with `data_parallel`, every process trains it on a slice
    of each batch and only rank 0 writes."""
    writer = world.is_main or not data_parallel
    task, train_set, dev_set, tokenizer = inputs.task, inputs.train, inputs.dev, inputs.tokenizer
    pack = build_pack(cells, copy.deepcopy(inputs.encoder), task.num_labels, inputs.pooling)
    pid = pack_id(cells)
    ckpt_dir = sweep / "packs" / pid
    dirs = [runs.cell_dir(sweep, c) for c in cells]
    start_step, resume, states = 0, None, None
    saved = runs.load_checkpoint(ckpt_dir)
    if saved is not None:
        start_step, resume, states = _restore(pack, saved, dirs)
    elif writer:
        for d, cell in zip(dirs, cells, strict=True):
            runs.write_cell_config(d, cell)
            for stale in ("metrics.jsonl", "summary.json"):
                (d / stale).unlink(missing_ok=True)

    def on_eval(n: int, record: dict) -> None:
        files.append_jsonl(dirs[n] / "metrics.jsonl", {k: v for k, v in record.items() if k != "best"})
        if record["best"]:
            save_cell(dirs[n], pack, n, resolve_model_path(cells[n].model.name))

    def on_checkpoint(step, optimizer, schedule, st) -> None:
        _checkpoint(ckpt_dir, pack, step, optimizer, schedule, st)

    spec = cells[0].train
    total = spec.max_steps or max(1, len(train_set) // spec.batch_size) * spec.epochs
    bar = tqdm(total=total, initial=start_step, desc=f"pack of {len(cells)}", unit="step",
               disable=_quiet(), position=1, leave=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    meter = StepMeter()
    states = train_pack(pack, task, train_set, dev_set, tokenizer, device, start_step=start_step,
                        resume=resume, states=states, on_eval=on_eval if writer else None,
                        on_checkpoint=on_checkpoint if writer else None, progress=bar,
                        shard=(world.rank, world.size) if data_parallel else (0, 1), meter=meter)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    bar.close()
    if not writer:
        return
    steps = total - start_step
    provenance = files.provenance(str(device))
    for n, (cell, d, st) in enumerate(zip(cells, dirs, states, strict=True)):
        status = "failed" if st.failed or st.best is None else "done"
        summary = {
            "cell": cell.name, "status": status, "error": st.failed, "best": st.best,
            "main_metric": task.main_metric, "task": task.name,
            "trainable_parameters": trainable_parameters(pack, n),
            "pack": {"id": pid, "size": len(cells), "resumed_at_step": start_step, "rank": world.rank,
                     "data_parallel_processes": world.size if data_parallel else 1},
            "wall_seconds": seconds, "steps": steps,
            "examples_per_second": steps * spec.batch_size / seconds if seconds else None,
            "pack_examples_per_second": steps * spec.batch_size * len(cells) / seconds if seconds else None,
            "throughput": asdict(meter),
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "data": task.source, "provenance": provenance,
        }
        files.write_json(d / "summary.json", summary)
    for f in ("state.json", "state.safetensors"):
        (ckpt_dir / f).unlink(missing_ok=True)


def save_cell(folder: Path, pack: Pack, n: int, base_model: str) -> None:
    """Save cell n as it is now: a PEFT adapter (LoRA) or its trained weights (full, BitFit)."""
    cell = pack.cells[n]
    tensors = {k: v.detach().float().cpu().clone() for k, v in cell_slices(pack, n).items()}
    head = {"weight": tensors.pop("head.weight"), "bias": tensors.pop("head.bias")}
    if cell.lora.method != "lora":
        weights = {k.removeprefix("model."): v for k, v in tensors.items()}
        files.write_tensors(folder / "weights.safetensors", {**weights, **{f"head.{k}": v for k, v in head.items()}})
        return
    updates = []
    for path, layer in pack.layers.items():
        if layer.ranks[n]:
            updates.append(LowRankUpdate(pack.labels[path], path, tensors[f"{path}.lora_A"],
                                         tensors[f"{path}.lora_B"], float(layer.scaling[n]),
                                         layer.fan_in_fan_out))
    lora = cell.lora
    peft_format.save_adapter(folder / "adapter", updates, base_model=base_model, revision=cell.model.revision,
                      alpha=lora.alpha, scaling_rule=lora.scaling_rule, init=lora.init,
                      dropout=lora.dropout, head=head)


def _checkpoint(folder: Path, pack: Pack, step: int, optimizer, schedule, states: list[CellState]) -> None:
    tensors = {f"param.{i}": p.detach() for i, p in enumerate(pack.trainable)}
    tensors["rng"] = torch.get_rng_state()
    opt = optimizer.state_dict()
    for i, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    state = {"step": step, "param_groups": opt["param_groups"], "schedule": schedule.state_dict(),
             "states": [{"best": s.best, "failed": s.failed} for s in states],
             "cells": [c.name for c in pack.cells]}
    runs.save_checkpoint(folder, tensors, state)


def _restore(pack: Pack, saved, dirs: list[Path]) -> tuple[int, dict, list[CellState]]:
    tensors, state = saved
    with torch.no_grad():
        for i, p in enumerate(pack.trainable):
            p.copy_(tensors[f"param.{i}"])
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = value
    step = state["step"]
    for d in dirs:  # evaluations after the checkpoint will be redone
        records = [r for r in files.read_jsonl(d / "metrics.jsonl") if r["step"] <= step]
        files.write_jsonl(d / "metrics.jsonl", records)
    states = [CellState(best=s["best"], failed=s["failed"]) for s in state["states"]]
    resume = {"optimizer": {"state": opt_state, "param_groups": state["param_groups"]},
              "schedule": state["schedule"], "rng": tensors["rng"]}
    return step, resume, states
