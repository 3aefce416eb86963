"""Where one packed decoder step spends its time, kernel by kernel (issue 27, item 4: to run on a GPU).

One pack of K cells (ranks × seeds, LoRA on all linear maps) of a Llama-shaped decoder with random
weights (benchmarks/configs/<shape>/config.json, built in bf16 on the GPU) takes the same synthetic
batches (bench_unpadded.synthetic_causal) through lowrank-lab's own step (train.loop: set-up, loss,
backward, per-cell clipping, AdamW). After --warmup steps, --steps steps are timed (CUDA events) and
then profiled (torch.profiler): the kernels are summed into groups by name (GEMMs of the frozen base
and of LoRA's batched products, attention, the LM head's cross-entropy, the optimizer, elementwise
and the rest), and the table of the top kernels by self device time is printed.

Real-token MFU counts, per step (T real tokens, C of them scored, r_t the pack's padded rank of
target t with its d_t × k_t matrix, L layers, w the mean sequence length):
  frozen base   4·N·T      N the parameters of the layers' linear maps: forward 2·N·T, backward to
                           the activations 2·N·T (no weight gradient)
  LoRA          6·T·Σ_t r_t·(d_t + k_t)   forward 2·, backward 4· (the input's and A's, B's gradients)
  attention     6·L·T·w·d_q               causal: QKᵀ and PV forward (2·2·T·w·d_q / 2), backward twice that
  LM head       4·C·V·d                   forward and the hidden state's gradient
against --peak-tflops (default 989: the H100 SXM's and H200's dense bf16 peak, NVIDIA's data sheet).

Nothing here is measured until it runs on a GPU; on the CPU (--device cpu --shape tiny) it checks
that the script runs (CPU kernels, no MFU claimed).

Usage (GPU): python benchmarks/profile_decoder_step.py --shape llama-3-8b --ranks 1,2,4,8,16,32,64 \\
                 --seeds 0,1,2 --batch-size 4 --max-length 512
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_peft_cells import build_base, sweep_cells  # noqa: E402
from bench_unpadded import synthetic_causal  # noqa: E402

from lowrank_lab.train import loop
from lowrank_lab.train.causal import CausalDev
from lowrank_lab.train.examples import Task
from lowrank_lab.train.pack import build_pack

TASK = Task("synthetic", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
GROUPS = (("attention", r"flash|fmha|attention|sdpa|softmax"), ("cross-entropy", r"log_softmax|nll_loss|cross_entropy"),
          ("optimizer", r"adam|foreach|multi_tensor"), ("GEMM", r"gemm|sm90|cutlass|cublas|matmul|addmm|bmm|\bmm\b"),
          ("elementwise", r"elementwise|vectorized|unrolled|reduce|copy|cat|index|triton"))


def step_flops(pack, layout_tokens: int, scored: int, mean_length: float) -> float:
    """The module docstring's count for one step."""
    config = pack.model.config
    linears = [m for name, m in pack.model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)]
    N = sum(m.weight.numel() for m in linears)
    lora = sum(layer.A.shape[1] * (layer.d + layer.k) for layer in pack.layers.values())
    d_q = config.num_attention_heads * (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    T = layout_tokens
    return (4 * N * T + 6 * T * lora + 6 * config.num_hidden_layers * T * mean_length * d_q
            + 4 * scored * config.vocab_size * config.hidden_size)


def grouped(events) -> dict[str, float]:
    out = defaultdict(float)
    for e in events:
        name = e.key.lower()
        group = next((g for g, pattern in GROUPS if re.search(pattern, name)), "other")
        out[group] += getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cpu_time_total", 0.0)
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3-8b")
    ap.add_argument("--ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    args.unpadded, args.examples = True, 4096
    device = torch.device(args.device)
    cells = [replace(c, train=replace(c.train, unpadded=True, fused_clip=True, compile=args.compile,
                                      gradient_checkpointing=args.checkpointing, max_steps=10**6))
             for c in sweep_cells(args)]
    base = build_base(args, device)
    train = synthetic_causal(args.examples, args.max_length, base.config.vocab_size, 0)
    pack = build_pack(cells, base, 0, "none", decoder=True)
    t = loop._set_up(pack, TASK, train, CausalDev(train), device, None, None, (0, 1), None)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup):
        loop._step(t, step, False)
    timer = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else None
    tokens = scored = 0
    if cuda:
        timer[0].record()
    for step in range(args.warmup, args.warmup + args.steps):
        before = t.meter.tokens_real
        loop._step(t, step, False)
        tokens += t.meter.tokens_real - before
    if cuda:
        timer[1].record()
        torch.cuda.synchronize()
    seconds = timer[0].elapsed_time(timer[1]) / 1e3 if cuda else float("nan")
    scored = int((train.labels != -100).float().mean(1).mean() * tokens)  # completion share of the real tokens
    flops = step_flops(pack, tokens, scored, tokens / (args.steps * args.batch_size * len(cells)))
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for step in range(args.warmup + args.steps, args.warmup + 2 * args.steps):
            loop._step(t, step, False)
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    groups = grouped(events)
    total = sum(groups.values()) or 1.0
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{args.shape}: K = {len(cells)}, batch {args.batch_size} per cell, max length {args.max_length}, unpadded, "
          f"fused clip{', checkpointing' if args.checkpointing else ''}{', compiled layers' if args.compile else ''}; "
          f"{name}; torch {torch.__version__}")
    if cuda:
        print(f"{1e3 * seconds / args.steps:.1f} ms/step, {tokens / seconds:,.0f} real tokens/s, real-token MFU "
              f"{100 * flops / seconds / (args.peak_tflops * 1e12):.1f}% of {args.peak_tflops:.0f} TFLOP/s, peak "
              f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print("\n| kernel group | share of the profiled time (device; CPU time on the CPU) |\n|---|---|")
    for group, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {100 * us / total:.1f}% |")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print("\n" + events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=80))
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
