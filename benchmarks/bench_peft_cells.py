"""PEFT one cell after another against lowrank-lab's packed sweep, every cell measured (issue 27).

One command, both sides in one run, each side in its own child process (so that each one's peak
memory is its own: GPU memory allocated by torch on a GPU, the process's peak resident memory above
what it held before building the model on the CPU):

  PEFT     for every cell of the sweep (or, with --peft-cells per-rank, the first seed of each rank:
           stated in the table), one after another: build the base, wrap it (LoraConfig all-linear,
           the cell's r and α, float32 adapters on the frozen base), AdamW (fused on a GPU) with the
           same learning rate, weight decay, warm-up and linear decay and per-cell clipping at 1.0 as
           lowrank-lab, the same batches in the same order (train.batches.epoch_order), bf16 autocast
           on a GPU, then the completion loss on the dev split.
  packed   lowrank-lab's loop (train.pack.build_pack + train.loop.train_pack, its own evaluation at the
           end) on every cell, in the packs the memory plan sizes (one pack of all cells where they
           fit; on a GPU train.plan.fit_pack_size against the free memory), a pack that runs out of
           memory halved and retried as rank-sweep does; padded or unpadded (--unpadded), with or
           without activation checkpointing (--checkpointing off,on gives one packed row each); the
           plan's peak (train.plan.memory_plan at the data's largest batch) against the measured one.

Wall time counts building the base (random weights from the shape's config, on the device: the shapes
are benchmarks/configs/*), building the pack or the PEFT model, every step and the evaluation; not
Python's start and imports. Tokens are real tokens trained (the steps after the first of each cell or
pack: the first is timed with the rest). Data: synthetic sequences (bench_unpadded.synthetic_causal:
random ids, lengths uniform in [L/4, L], the last quarter of each the completion).

Usage (GPU): python benchmarks/bench_peft_cells.py --shape llama-3-8b --ranks 1,2,4,8,16,32,64 \\
                 --seeds 0,1,2 --steps 30 --batch-size 4 --max-length 512 --unpadded --peft-cells per-rank
CPU: python benchmarks/bench_peft_cells.py --shape tiny --device cpu --ranks 1,4,16 --seeds 0,1 --steps 6
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_unpadded import TINY_DECODER, synthetic_causal  # noqa: E402

from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.train.batches import epoch_order
from lowrank_lab.train.causal import CausalDev
from lowrank_lab.train.examples import Task
from lowrank_lab.train.loop import train_pack
from lowrank_lab.train.optim import lr_lambda
from lowrank_lab.train.pack import build_pack
from lowrank_lab.train.plan import Shape, budget_bytes, data_tokens, fit_pack_size, memory_plan, plan_packs

CONFIGS = Path(__file__).parent / "configs"
TASK = Task("synthetic", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")


SMALL_DECODER = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=688, vocab_size=8000)  # a CPU shape whose activations outweigh the noise


def shape_config(shape: str):
    from transformers import LlamaConfig

    if shape in ("tiny", "small"):
        return LlamaConfig(max_position_embeddings=2048, **(TINY_DECODER if shape == "tiny" else SMALL_DECODER))
    return LlamaConfig.from_dict(json.loads((CONFIGS / shape / "config.json").read_text()))


def build_base(args, device):
    """The base of the shape with random weights (seed 0) built on the device, in bf16 on a GPU."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        return LlamaForCausalLM._from_config(shape_config(args.shape), dtype=dtype).eval()


def sweep_cells(args):
    spec = ExperimentSpec(model=ModelSpec(name=args.shape, max_length=args.max_length),
                          data=DataSpec(task="file", path="synthetic"),
                          train=TrainSpec(batch_size=args.batch_size, max_steps=args.steps, device=args.device,
                                          unpadded=args.unpadded),
                          sweep=SweepSpec(r=tuple(map(int, args.ranks.split(","))), targets=("all-linear",),
                                          seeds=tuple(map(int, args.seeds.split(","))), alpha=(16.0,), lr=(2e-4,)))
    return expand_sweep(spec)


def splits(args, vocab: int):
    return synthetic_causal(args.examples, args.max_length, vocab, 0), synthetic_causal(args.dev, args.max_length, vocab, 1)


def clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_bytes(device, rss_before: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before


def rss_now() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def peft_cell(args, cell, train, dev, device) -> dict:
    """One cell trained with PEFT as a user would, timed from building the base to its dev loss."""
    from peft import LoraConfig, get_peft_model

    t0 = clock(device)
    lm = build_base(args, device)
    scale = scaling_factor(cell.lora.alpha, cell.lora.r, cell.lora.scaling_rule)
    model = get_peft_model(lm, LoraConfig(r=cell.lora.r, lora_alpha=scale * cell.lora.r, target_modules="all-linear",
                                          lora_dropout=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cell.lr, weight_decay=cell.train.weight_decay, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.steps, cell.train.warmup_ratio))
    b, tokens = cell.train.batch_size, 0
    order = epoch_order(len(train), cell.train.resolved_data_seed, 0, train.lengths, b, 0)
    model.train()
    for step in range(args.steps):
        index = order[step * b:(step + 1) * b]
        inputs, labels = train.batch(index)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**inputs, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cell.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(train.lengths[index].sum())
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        inputs, labels = dev.batch(torch.arange(len(dev)))
        dev_loss = float(model(**inputs, labels=labels, use_cache=False).loss)
    return {"cell": cell.name, "r": cell.lora.r, "seed": cell.train.seed, "wall_s": clock(device) - t0,
            "tokens": tokens, "dev_loss": dev_loss}


def peft_side(args, device) -> dict:
    cells = sweep_cells(args)
    if args.peft_cells == "per-rank":
        cells = [c for c in cells if c.train.seed == cells[0].train.seed]
    rss = rss_now()
    train, dev = (s.to(device) for s in splits(args, shape_config(args.shape).vocab_size))
    rows = []
    for cell in cells:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(peft_cell(args, cell, train, dev, device))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"side": "peft", "cells": rows, "peak_bytes": peak_bytes(device, rss)}


def packed_side(args, device, checkpointing: bool) -> dict:
    """The packs the memory plan sizes (all cells in one when they fit, train.plan.fit_pack_size on
    a GPU), each trained in turn; a pack that runs out of memory is halved and retried, as rank-sweep does."""
    cells = [replace(c, train=replace(c.train, gradient_checkpointing=checkpointing)) for c in sweep_cells(args)]
    rss = rss_now()
    train, dev = splits(args, shape_config(args.shape).vocab_size)
    tokens = data_tokens(train, args.batch_size, args.unpadded, True)
    t0 = clock(device)
    base = build_base(args, device)
    free = torch.cuda.mem_get_info()[0] + torch.cuda.memory_allocated() if device.type == "cuda" else None
    size = fit_pack_size(cells, base, Shape.of(base.config, True), tokens, device.type, 0, budget_bytes(free), len(cells))
    queue, done, splits_seen, losses = plan_packs(cells, size), [], 0, {}
    plan = memory_plan(queue, base, True, tokens, device.type, 0, budget_bytes(free))
    while queue:
        cells_of_pack = queue.pop(0)
        try:
            pack = build_pack(cells_of_pack, copy.deepcopy(base, {id(t): t for t in base.parameters()}), 0, "none",
                              decoder=True)
            states = train_pack(pack, TASK, train, CausalDev(dev), None, device)
        except torch.OutOfMemoryError:
            if len(cells_of_pack) == 1:
                raise
            pack = states = None
            queue[:0], splits_seen = [cells_of_pack[0::2], cells_of_pack[1::2]], splits_seen + 1
            torch.cuda.empty_cache()
            continue
        losses.update({c.name: s.best["completion_loss"] for c, s in zip(cells_of_pack, states, strict=True)})
        done.append(len(cells_of_pack))
        del pack, states
    wall = clock(device) - t0
    trained = [int(sum(train.lengths[epoch_order(len(train), c.train.resolved_data_seed, 0, train.lengths,
                                                 args.batch_size, 0)[:args.steps * args.batch_size]]))
               for c in cells]
    return {"side": "packed", "checkpointing": checkpointing, "K": len(cells), "packs": done,
            "out_of_memory_splits": splits_seen, "wall_s": wall, "tokens": trained, "cells": [c.name for c in cells],
            "dev_loss": [losses[c.name] for c in cells], "planned_bytes": plan.peak_bytes,
            "peak_bytes": peak_bytes(device, rss)}


def run_child(side: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv, "--side", side], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the {side} side failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(args, peft: dict, packed: list[dict]) -> None:
    gib = 2**30
    gpu = args.device != "cpu" and torch.cuda.is_available()
    import peft as peft_package
    import transformers

    print(f"\n{args.shape} shape (random weights), LoRA all-linear, ranks {args.ranks} × seeds {args.seeds}, "
          f"{args.steps} steps, batch {args.batch_size} per cell, max length {args.max_length}, "
          f"{'unpadded' if args.unpadded else 'padded'}; {torch.cuda.get_device_name() if gpu else 'CPU'}; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, peft {peft_package.__version__}")
    which = ("every cell" if args.peft_cells == "all" else
             f"one cell per rank (seed {peft['cells'][0]['seed']}), {len(peft['cells'])} of {packed[0]['K']}")
    print(f"PEFT on {which}, one after another; packed: all {packed[0]['K']} cells in the packs the memory plan sizes\n")
    print("| cell | PEFT wall s | PEFT tokens/s | " + " | ".join(
        f"packed{' + ckpt' if p['checkpointing'] else ''} tokens/s (all cells) | ratio" for p in packed) + " |")
    print("|---|---|---|" + "---|---|" * len(packed))
    for row in peft["cells"]:
        rate = row["tokens"] / row["wall_s"]
        cells = [f"{sum(p['tokens']) / p['wall_s']:,.0f} | {sum(p['tokens']) / p['wall_s'] / rate:.2f}×" for p in packed]
        print(f"| {row['cell']} | {row['wall_s']:.2f} | {rate:,.0f} | " + " | ".join(cells) + " |")
    peft_wall = sum(r["wall_s"] for r in peft["cells"])
    scale = packed[0]["K"] / len(peft["cells"])
    print(f"\n| side | wall s | peak {'GPU' if gpu else 'host'} memory GiB | planned peak GiB | measured / planned |")
    print("|---|---|---|---|---|")
    print(f"| PEFT, {len(peft['cells'])} cells one after another | {peft_wall:.2f} | {peft['peak_bytes'] / gib:.3f} | – | – |")
    for p in packed:
        packs = f"packs of {', '.join(map(str, p['packs']))}" + (f", {p['out_of_memory_splits']} split(s) after running "
                                                                 "out of memory" if p["out_of_memory_splits"] else "")
        print(f"| packed{' + checkpointing' if p['checkpointing'] else ''}, K = {p['K']} ({packs}) | {p['wall_s']:.2f} | "
              f"{p['peak_bytes'] / gib:.3f} | {p['planned_bytes'] / gib:.3f} | {p['peak_bytes'] / p['planned_bytes']:.2f} |")
    if scale == 1:
        print(f"\nsweep speed-up (PEFT wall / packed wall): "
              + ", ".join(f"{peft_wall / p['wall_s']:.2f}×" for p in packed))
    else:
        print("\nPEFT ran on one cell per rank: no sweep speed-up is computed (it would be extrapolated)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny", help="tiny, small, or a folder name under benchmarks/configs")
    ap.add_argument("--ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--examples", type=int, default=2048)
    ap.add_argument("--dev", type=int, default=32)
    ap.add_argument("--unpadded", action="store_true")
    ap.add_argument("--checkpointing", default="off", help="off, on or off,on: one packed row each")
    ap.add_argument("--peft-cells", default="all", choices=("all", "per-rank"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.side is not None:  # a child: one side, its result as the last line of stdout
        import peft  # noqa: F401  imported before the memory baseline: their modules are not the model's
        from transformers import LlamaForCausalLM  # noqa: F401
        if args.side == "peft":
            out = peft_side(args, device)
        else:
            out = packed_side(args, device, args.side == "packed-ckpt")
        print(json.dumps(out))
        return
    argv = [a for a in sys.argv[1:]]
    peft = run_child("peft", argv)
    packed = [run_child("packed-ckpt" if c == "on" else "packed", argv) for c in args.checkpointing.split(",")]
    print_table(args, peft, packed)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "peft": peft, "packed": packed}, indent=2))


if __name__ == "__main__":
    main()
