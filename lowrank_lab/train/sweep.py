"""A rank sweep: expand the spec into cells, pack them, train each pack, save every cell.

``run_sweep(spec)`` is what ``lowrank-lab rank-sweep`` calls. Finished cells are skipped on a
rerun; an interrupted pack (killed, or stopped by Ctrl-C / SIGTERM, which checkpoint first)
resumes from its last checkpoint; a cell whose loss becomes NaN is marked failed and the others
go on. Every path and record is ``store.layout``'s.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from lowrank_lab.store import checkpoints, files, layout, snapshots
from lowrank_lab.store.records import CellSummary, PackInfo, TrainableParameters
from lowrank_lab.spec import (CellSpec, ExperimentSpec, SpecError, expand_sweep, kind_order,
                              needs_model_kinds)
from lowrank_lab.store.wordnet import wordnet_reader
from lowrank_lab.train.causal import causal_dev, causal_encoded
from lowrank_lab.train.chat import render_task
from lowrank_lab.train.reporting import Reporters, check_reporters
from lowrank_lab.train.data import load_task
from lowrank_lab.train.distributed import World, close, device_for, init_world, share
from lowrank_lab.train.interrupt import Interrupted, StopRequest
from lowrank_lab.model.lora import base_shape
from lowrank_lab.model.base import find_targets
from lowrank_lab.store.models import config_model, default_pooling, load_model, model_kinds
from lowrank_lab.train.batches import encode, resolve_device
from lowrank_lab.train.loop import CellState, StepMeter, StepPlan, train_pack
from lowrank_lab.train.pack import Pack, build_pack, trainable_parameters
from lowrank_lab.train.plan import FROZEN_BASE, data_tokens, element_bytes, pack_id, size_text, sweep_plan
from lowrank_lab.train.saving import save_cell, save_snapshot
from lowrank_lab.train.progress import cell_progress, step_progress


def run_sweep(spec: ExperimentSpec, echo=print) -> Path:
    """Claim the sweep directory (``layout.claim_sweep``: paths, a rerun's spec, the lock; before
    any data or model is loaded) and train every cell of it that is not finished yet
    (``train_claimed``); return the sweep directory. Under torchrun rank 0 holds the lock."""
    with layout.claim_sweep(spec) as sweep:
        return train_claimed(spec, sweep, echo)


def train_claimed(spec: ExperimentSpec, sweep: Path, echo=print) -> Path:
    """Train every unfinished cell of the sweep directory `sweep`, which the caller has claimed.
    Under torchrun each process trains its share of the packs (see ``distributed``). On SIGINT or
    SIGTERM the pack in progress is checkpointed and ``Interrupted`` raised."""
    world = init_world(spec.train.device)
    try:
        return _run_sweep(spec, sweep, world, echo if world.is_main else (lambda *_: None))
    finally:
        close(world)


@dataclass
class Inputs:
    """What every pack of a sweep shares: the task, the tokenised splits, the frozen base (an
    encoder, or a causal LM when `decoder`), the base's provenance and what tokenising cut (`fitted`)."""

    task: object
    train: object
    dev: object
    base: torch.nn.Module
    tokenizer: object
    pooling: str
    decoder: bool = False
    provenance: dict | None = None
    fitted: dict | None = None
    validation: object = None  # data.validation_size: the held-out split (scored as dev is) the best is chosen on


def load_inputs(spec: ExperimentSpec, cells: Sequence[CellSpec], device: torch.device | None = None) -> Inputs:
    """Load and check the data and the model before anything is written: a bad task, model or
    rank fails here with a message that names it. A base that trains frozen in bf16 on a GPU is
    read straight into bf16 on `device` (``plan.element_bytes``)."""
    check_reporters(spec.train.report_to)
    straight = device is not None and element_bytes(device.type, cells) == 2
    loaded = load_model(spec.model.name, spec.model.revision, kind=spec.model.kind, random_init=spec.model.random_init,
                        dtype=torch.bfloat16 if straight else None, device=device if straight else None)
    base, tokenizer = loaded.module, loaded.tokenizer
    task = render_task(load_task(spec.data, causal=loaded.is_decoder), tokenizer)  # chat: by its template
    if "meteor" in task.metrics:
        wordnet_reader()  # METEOR's WordNet, checked before anything is written
    lora_cells = [c for c in cells if c.lora.method == "lora"]
    if lora_cells:
        kinds = tuple(sorted({k for c in lora_cells for k in c.lora.kinds}, key=kind_order))
        for label, path in find_targets(base, kinds).items():
            d, k = base_shape(base.get_submodule(path))
            too_big = [c.lora.r for c in lora_cells if c.lora.r > min(d, k)]
            if too_big:
                raise SpecError(f"sweep.r: r={max(too_big)} exceeds min(d, k) = {min(d, k)} of {label}")
    if loaded.is_decoder:
        train, truncated, dropped = causal_encoded(tokenizer, task.train, spec.model.max_length)
        dev = causal_dev(tokenizer, task, spec.model.max_length)
        fitted = {"max_length": spec.model.max_length, "truncated_train_prompts": truncated,
                  "truncated_dev_prompts": dev.truncated, "dropped_train": dropped}
        held = causal_dev(tokenizer, replace(task, dev=task.validation), spec.model.max_length) if task.validation else None
        return Inputs(task, train, dev, base, tokenizer, "none", True, loaded.provenance, fitted, validation=held)
    regression = task.num_labels == 1
    held = encode(tokenizer, task.validation, spec.model.max_length, regression) if task.validation else None
    return Inputs(task, encode(tokenizer, task.train, spec.model.max_length, regression),
                  encode(tokenizer, task.dev, spec.model.max_length, regression), base, tokenizer,
                  spec.model.pooling or default_pooling(spec.model.name), False, loaded.provenance, validation=held)


def _run_sweep(spec: ExperimentSpec, sweep: Path, world: World, echo) -> Path:
    cells = expand_sweep(spec, model_kinds=model_kinds(spec.model) if needs_model_kinds(spec) else None)
    names = [c.name for c in cells]
    device = resolve_device(device_for(world, spec.train.device))
    unfinished = [c for c in cells if layout.cell_entry(sweep, c.name).status != "done"]
    data_parallel = spec.sweep.data_parallel and world.size > 1
    if unfinished:  # the plan before the model loads: a user sees at once whether it fits
        _echo_plan(spec, unfinished, device, world, data_parallel, echo)
    inputs = load_inputs(spec, unfinished, device) if unfinished else None
    if world.is_main:
        model = {"model": inputs.provenance} if inputs is not None and inputs.provenance else {}
        layout.write_spec(sweep, spec, {**files.provenance(str(device)), **model})
        layout.update_manifest(sweep, names)
    world.barrier()
    todo = [c for c in cells if layout.cell_entry(sweep, c.name).status != "done"]
    echo(f"sweep {sweep}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
         f"{world.size} process(es), device {device}")
    mine = _my_packs(spec, todo, inputs, device, world, data_parallel, echo)
    overall = cell_progress(sum(map(len, mine)))
    queue = [(p, 0) for p in mine]  # (cells, times their pack was halved after running out of memory)
    try:
        with StopRequest() as stop:
            while queue:
                cells_of_pack, splits = queue.pop(0)
                halves = _run_or_split(sweep, cells_of_pack, splits, inputs, device, world, stop, echo, data_parallel)
                queue[:0] = [(h, splits + 1) for h in halves]
                if world.is_main:
                    layout.update_manifest(sweep, names)
                if not halves:
                    overall.update(len(cells_of_pack))
    except Interrupted as err:
        if world.is_main:
            layout.update_manifest(sweep, names, dict.fromkeys(err.cells, err.step))
        raise
    finally:
        overall.close()
    world.barrier()
    if world.is_main:
        manifest = layout.update_manifest(sweep, names)
        for name in manifest.names("failed"):
            echo(f"FAILED {name}: {manifest.cells[name].error}")
    return sweep


def _echo_plan(spec: ExperimentSpec, todo: list[CellSpec], device: torch.device, world: World, data_parallel: bool,
               echo) -> None:
    """The memory plan from the model's config (built on the meta device, no weight read); a config
    that cannot be read is left to the model's loading, whose message names it."""
    try:
        base = config_model(spec.model)
    except (OSError, ValueError):
        return
    for line in sweep_plan(spec, todo, base, device, world, data_parallel)[1].lines():
        echo(line)


def _my_packs(spec: ExperimentSpec, todo: list[CellSpec], inputs: Inputs | None, device: torch.device, world: World,
              data_parallel: bool, echo) -> list[list[CellSpec]]:
    """The packs of the unfinished cells, planned at the data's largest batch (``sweep_plan``); the
    share of them this process trains (all of them, under data parallelism)."""
    if not todo:
        return []
    tokens = data_tokens(inputs.train, spec.train.batch_size, spec.train.unpadded, inputs.decoder)
    packs, plan = sweep_plan(spec, todo, (inputs.base, inputs.decoder), device, world, data_parallel, tokens,
                             max(inputs.task.num_labels, 1))
    why = "sweep.pack" if spec.sweep.pack else ("free GPU memory and processes" if device.type == "cuda" else "processes")
    echo(f"{len(packs)} pack(s) of up to {max(map(len, packs))} cells (from {why}); at the data's largest batch "
         f"({tokens.tokens} tokens per cell) the estimated peak is {size_text(plan.peak_bytes)}")
    methods, alone = dict.fromkeys(c.lora.method for c in todo), ("full", "bitfit")
    echo(f"packed (K cells per pack through the batch dimension): {', '.join(m for m in methods if m not in alone)}; "
         f"cell by cell (they train the base's own weights): {', '.join(m for m in methods if m in alone) or 'none'}")
    return packs if data_parallel else [packs[i] for i in share([float(len(p)) for p in packs], world)]


def _run_or_split(sweep: Path, cells: list[CellSpec], splits: int, inputs: Inputs, device: torch.device,
                  world: World, stop: StopRequest, echo, data_parallel: bool) -> list[list[CellSpec]]:
    """Train one pack; [] when it finished, or its two halves when it ran out of memory (its
    checkpoint dropped, the halves start afresh). A single cell, or a data-parallel pack (every
    process would have to agree), that runs out of memory stops the sweep as before."""
    try:
        _run_pack(sweep, cells, inputs, device, world, stop, echo, data_parallel, splits)
        return []
    except torch.OutOfMemoryError as err:
        if len(cells) == 1 or data_parallel:
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
    gc.collect()  # the failed pack's tensors, once the traceback that held them is gone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    checkpoints.remove_checkpoint(layout.pack_dir(sweep, pack_id(cells)))
    halves = [cells[0::2], cells[1::2]]  # each keeps the mix of ranks and target sets
    echo(f"pack of {len(cells)} cells ({_listed([c.name for c in cells])}) ran out of memory ({reason}); "
         f"split into packs of {len(halves[0])} and {len(halves[1])}, retried")
    return halves


@dataclass
class PackRun:
    """One pack of a sweep, set up to train: its model, where its files go, and where it resumes."""

    pack: Pack
    id: str
    folder: Path  # the pack's checkpoint folder
    dirs: list[Path]  # its cells' folders
    total: int
    start_step: int = 0
    resume: dict | None = None
    states: list[CellState] | None = None
    splits: int = 0  # times the pack was halved after running out of memory


def _run_pack(sweep: Path, cells: list[CellSpec], inputs: Inputs, device: torch.device, world: World,
              stop: StopRequest | None = None, echo=print, data_parallel: bool = False, splits: int = 0) -> None:
    """Train one pack and save its cells; with `data_parallel`, every process trains it on a slice
    of each batch and only rank 0 writes. `splits`: how often the pack was halved after running
    out of memory (in each cell's summary)."""
    writer = world.is_main or not data_parallel
    run = _set_up_pack(sweep, cells, inputs, writer, echo, device)
    run.splits = splits
    states, meter, seconds = _train(run, inputs, device, world, stop, writer, data_parallel)
    if writer:
        _write_summaries(run, states, meter, seconds, inputs, device, world, data_parallel)
        checkpoints.remove_checkpoint(run.folder)


def _set_up_pack(sweep: Path, cells: list[CellSpec], inputs: Inputs, writer: bool, echo,
                 device: torch.device | None = None) -> PackRun:
    """The pack's model, restored from its checkpoint when there is one; else its cells start afresh."""
    pack = _build_pack(cells, inputs, device)
    pid = pack_id(cells)
    run = PackRun(pack, pid, layout.pack_dir(sweep, pid), [layout.cell_dir(sweep, c) for c in cells],
                  StepPlan.of(cells[0].train, len(inputs.train)).total)
    saved = checkpoints.load_checkpoint(run.folder)
    if saved is not None:
        run.start_step, run.resume, run.states = _restore(pack, saved)
        echo(f"resuming {_listed([c.name for c in cells])} from step {run.start_step}")
        if writer:  # evaluations after the checkpoint will be redone
            for d in run.dirs:
                layout.keep_metrics_until(d, run.start_step)
                snapshots.keep_snapshots_until(d, run.start_step)
    elif writer:
        for d, cell in zip(run.dirs, cells, strict=True):
            layout.start_cell(d, cell)
    return run


def _build_pack(cells: list[CellSpec], inputs: Inputs, device: torch.device | None = None) -> Pack:
    """``build_pack`` on a copy of the sweep's shared base (the adapters and prefixes it puts on the
    base change its modules). A frozen base already in the precision it trains in on `device` (float32
    on the CPU, bf16 read onto the GPU) is shared by every pack's copy: its weights are not copied."""
    base = inputs.base
    wanted = torch.bfloat16 if device is not None and element_bytes(device.type, cells) == 2 else torch.float32
    shared = device is not None and cells[0].lora.method in FROZEN_BASE and next(base.parameters()).dtype == wanted
    memo = {id(t): t for t in (*base.parameters(), *base.buffers())} if shared else {}
    return build_pack(cells, copy.deepcopy(base, memo), inputs.task.num_labels, inputs.pooling, inputs.decoder)


def _listed(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _train(run: PackRun, inputs: Inputs, device: torch.device, world: World, stop: StopRequest | None,
           writer: bool, data_parallel: bool) -> tuple[list[CellState], StepMeter, float]:
    """Train the pack from its start step, saving each cell's evaluations and best adapter (writer)."""
    pack, cells = run.pack, run.pack.cells
    # train.report_to: the same records as TensorBoard events (train.reporting)
    reporters = Reporters(cells[0].train.report_to if writer else (), run.dirs, cells, run.start_step)

    def on_eval(n: int, record: dict) -> None:
        saved = {"kind": "eval", **{k: v for k, v in record.items() if k != "best"}}
        layout.append_metrics(run.dirs[n], saved)
        reporters.log(n, saved)
        if record["best"]:
            save_cell(run.dirs[n], pack, n, cells[n].model.name)

    def on_log(n: int, record: dict) -> None:
        layout.append_metrics(run.dirs[n], record)
        reporters.log(n, record)

    def on_checkpoint(step, optimizer, schedule, st) -> None:
        _checkpoint(run.folder, pack, step, optimizer, schedule, st)

    def on_snapshot(step: int) -> None:
        for n, d in enumerate(run.dirs):
            save_snapshot(d, pack, n, step)

    bar = step_progress(run.total, run.start_step, f"pack of {len(cells)}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    meter = StepMeter()
    try:
        states = train_pack(pack, inputs.task, inputs.train, inputs.dev, inputs.tokenizer, device,
                            start_step=run.start_step, resume=run.resume, states=run.states,
                            on_eval=on_eval if writer else None, on_log=on_log if writer else None, on_checkpoint=on_checkpoint if writer else None,
                            on_snapshot=on_snapshot if writer else None, stop=stop, progress=bar,
                            shard=(world.rank, world.size) if data_parallel else (0, 1), meter=meter,
                            validation=inputs.validation)
    finally:
        reporters.close()
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return states, meter, time.perf_counter() - t0


def _write_summaries(run: PackRun, states: list[CellState], meter: StepMeter, seconds: float, inputs: Inputs,
                     device: torch.device, world: World, data_parallel: bool) -> None:
    """Each cell's summary.json: status, best evaluation, size, speed, provenance."""
    cells, task = run.pack.cells, inputs.task
    steps, b, K = run.total - run.start_step, cells[0].train.batch_size, len(cells)
    provenance = {**files.provenance(str(device)), **({"model": inputs.provenance} if inputs.provenance else {})}
    data = {**task.source, **({"fitted": inputs.fitted} if inputs.fitted else {})}
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    info = PackInfo(run.id, K, run.start_step, world.rank, world.size if data_parallel else 1, run.splits)
    for n, (cell, d, st) in enumerate(zip(cells, run.dirs, states, strict=True)):
        if run.pack.adapters is not None:  # provenance: the formula the count equals (Hu et al. 2021, §5.1)
            provenance = {**provenance, "trainable_formula": run.pack.adapters.formula(n)}
        layout.write_summary(d, CellSummary(
            cell=cell.name, status="failed" if st.failed or st.best is None else "done", error=st.failed,
            best=st.best, final=st.history[-1] if st.history else None, main_metric=task.main_metric, task=task.name,
            trainable_parameters=TrainableParameters(**trainable_parameters(run.pack, n)), pack=info,
            wall_seconds=seconds, steps=steps,
            examples_per_second=steps * b / seconds if seconds else None,
            pack_examples_per_second=steps * b * K / seconds if seconds else None,
            throughput=asdict(meter), peak_gpu_memory_gib=peak, data=data, provenance=provenance))


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
    checkpoints.save_checkpoint(folder, tensors, state)


def _restore(pack: Pack, saved) -> tuple[int, dict, list[CellState]]:
    tensors, state = saved
    with torch.no_grad():
        for i, p in enumerate(pack.trainable):
            p.copy_(tensors[f"param.{i}"])
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = value
    states = [CellState(best=s["best"], failed=s["failed"]) for s in state["states"]]
    resume = {"optimizer": {"state": opt_state, "param_groups": state["param_groups"]},
              "schedule": state["schedule"], "rng": tensors["rng"]}
    return state["step"], resume, states
