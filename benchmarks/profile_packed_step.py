"""Where one packed training step spends its time, and which change pays (issue: packed sweeps).

One pack of K cells (ranks 1…64 × seeds, LoRA on q and v) takes the same real SST-2 batches under
each variant; the batches are built and moved to the GPU before timing, so only the step is timed:

  autocast        float32 base, bf16 autocast (what train_pack did)
  bf16            the frozen base stored in bf16, no autocast (adapters and heads stay float32)
  +compile        torch.compile of the model (default mode, the width dynamic), widths rounded
                  up to a multiple of 8
  +graphs         torch.compile mode="reduce-overhead" (CUDA graphs, one per width), same widths
  @grouped        batches grouped by length (train.group_by_length = 64), aligned across the pack
  +unpadded       train.unpadded: the real tokens of all cells in one stream (model.varlen), attention
                  per sentence (flash varlen kernel)
  +fusedclip      train.fused_clip: per-cell clipping over one gradient buffer per shape

Prints ms per step split into forward+backward / clipping / optimizer (CUDA events), MFU on the
tokens processed (rows × padded width) and on the real tokens, peak memory, the seconds spent
compiling, and (with --profile) the profiler's top kernels of chosen variants.

Usage (GPU): python benchmarks/profile_packed_step.py --model PATH --glue PATH [--shape roberta-base]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_packed_sweep import PEAK_TFLOPS, encoder_flops_per_token, roberta_base_shape  # noqa: E402

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.train.data import load_task
from lowrank_lab.store.models import load_base
from lowrank_lab.model import varlen
from lowrank_lab.train.batches import encode, epoch_order
from lowrank_lab.train.loop import loss_per_cell
from lowrank_lab.train.pack import GradBuffers, build_pack, clip_per_cell, make_optimizer

VARIANTS = ("autocast", "bf16", "bf16+compile", "bf16+graphs", "autocast@grouped", "bf16+compile@grouped",
            "bf16+graphs@grouped", "bf16+fusedclip", "bf16+unpadded", "bf16+unpadded+fusedclip")


def batches(train, cells, b, steps, multiple, group, device, unpadded=False):
    """(inputs, labels, real tokens, layout) of each step; layout None unless `unpadded`
    (then inputs["input_ids"] is the K·T stream and "processed" tokens are K·T)."""
    out = []
    train = train.to(device)
    orders = [epoch_order(len(train), c.train.seed, 0, train.lengths, b, group) for c in cells]
    for s in range(steps):
        index = torch.cat([o[s * b:(s + 1) * b] for o in orders])
        if unpadded:
            inputs, labels, layout = train.varlen_batch(index, len(cells))
        else:
            (inputs, labels), layout = train.batch(index, multiple), None
        out.append((inputs, labels, int(train.lengths[index].sum()), layout))
    return out


def run_variant(name, cells, encoder, data, K, device, warmup):
    pack = build_pack(cells, encoder, 2, "mean")
    model = pack.model.to(device).train()
    bf16 = name.startswith("bf16")
    if bf16:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    fwd = model
    if "compile" in name:
        fwd = torch.compile(model)
    elif "graphs" in name:
        fwd = torch.compile(model, mode="reduce-overhead")
    opt = make_optimizer(pack, device)
    grads = GradBuffers(pack) if "fusedclip" in name else None

    def step(inputs, labels, layout, ev=None):
        if fwd is not model:  # one graph for every padded width
            for t in inputs.values():
                torch._dynamo.mark_dynamic(t, 1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not bf16):
            logits = fwd(**inputs) if layout is None else varlen.classifier_logits(model, inputs, layout)
        loss_per_cell(logits, labels, K, False).sum().backward()
        if ev:
            ev[1].record()
        if grads is not None:
            grads.clip(1.0)
        else:
            clip_per_cell(pack, 1.0)
        if ev:
            ev[2].record()
        opt.step()
        if grads is not None:
            grads.zero()
        else:
            opt.zero_grad(set_to_none=True)

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for inputs, labels, _, layout in data[:warmup]:
        step(inputs, labels, layout)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    parts, total_ev = [], [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    timed = data[warmup:]
    total_ev[0].record()
    for inputs, labels, _, layout in timed:
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        ev[0].record()
        step(inputs, labels, layout, ev)
        ev[3].record()
        parts.append(ev)
    total_ev[1].record()
    torch.cuda.synchronize()
    ms = total_ev[0].elapsed_time(total_ev[1]) / len(timed)
    split = [statistics.mean(e[i].elapsed_time(e[i + 1]) for e in parts) for i in range(3)]
    padded = sum(x[0]["input_ids"].numel() for x in timed) / len(timed)  # unpadded: the K·T stream
    real = sum(x[2] for x in timed) / len(timed)
    peak = torch.cuda.max_memory_allocated() / 2**30
    return pack, fwd, step, {"ms": ms, "split": split, "padded": padded, "real": real, "peak": peak,
                             "compile_s": compile_s}


def top_kernels(step, data, rows=18):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for inputs, labels, _, layout in data:
            step(inputs, labels, layout)
        torch.cuda.synchronize()
    try:
        return prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70)
    except Exception:  # older spellings
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--glue", required=True)
    ap.add_argument("--shape", default=None)
    ap.add_argument("--ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--profile", default="", help="comma list of variants to profile")
    args = ap.parse_args()
    device = torch.device("cuda")
    model_name = args.model
    if args.shape == "roberta-base":
        model_name = roberta_base_shape(args.model, Path(tempfile.mkdtemp(prefix="roberta-base-shape-")))
    spec = ExperimentSpec(model=ModelSpec(name=model_name, pooling="mean", max_length=args.max_length),
                          data=DataSpec(task="glue:SST-2", path=args.glue, max_train=None, max_eval=None),
                          train=TrainSpec(batch_size=args.batch_size),
                          sweep=SweepSpec(r=tuple(map(int, args.ranks.split(","))),
                                          seeds=tuple(map(int, args.seeds.split(","))), alpha=(8.0,), lr=(5e-4,)))
    cells = expand_sweep(spec)
    K = len(cells)
    task = load_task(spec.data)
    encoder, tokenizer = load_base(model_name)
    train = encode(tokenizer, task.train, args.max_length, False)
    flops_token = 2 * encoder_flops_per_token(encoder.config, args.max_length)
    print(f"{args.shape or 'MiniLM'}: K={K}, batch {args.batch_size} per cell, max_length {args.max_length}, "
          f"attention {encoder.config._attn_implementation}; torch {torch.__version__}; {torch.cuda.get_device_name()}")
    print("| variant | ms/step | fwd+bwd | clip | optim | tokens/step (real) | MFU padded | MFU real | peak GiB | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        name, _, order = variant.partition("@")
        multiple = 8 if ("compile" in name or "graphs" in name) else 1
        data = batches(train, cells, args.batch_size, args.warmup + args.steps, multiple,
                       64 if order == "grouped" else 0, device, unpadded="unpadded" in name)
        torch._dynamo.reset()
        pack, fwd, step, r = run_variant(name, cells, load_base(model_name)[0], data, K, device, args.warmup)
        mfu = lambda tokens: tokens * flops_token / (r["ms"] / 1e3) / (PEAK_TFLOPS * 1e12)  # noqa: E731
        print(f"| {variant} | {r['ms']:.1f} | {r['split'][0]:.1f} | {r['split'][1]:.1f} | {r['split'][2]:.1f} | "
              f"{r['padded']:,.0f} ({r['real']:,.0f}) | {100 * mfu(r['padded']):.1f}% | {100 * mfu(r['real']):.1f}% | "
              f"{r['peak']:.1f} | {r['compile_s']:.1f} |", flush=True)
        if variant in args.profile.split(","):
            print(f"\ntop kernels, {variant}:\n" + top_kernels(step, data[args.warmup:args.warmup + 5]) + "\n", flush=True)
        del pack, fwd, step, data
        torch.cuda.empty_cache()
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
