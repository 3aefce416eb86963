"""Packed sweeps against one-cell-at-a-time training, on one GPU (issue: packed sweeps).

The same sweep (ranks × seeds, LoRA on q and v, SST-2) is trained several ways, each for the same
number of optimizer steps per cell:
  (a) PEFT + a plain bf16-autocast training loop, one cell after another;
  (b) lowrank-lab, one cell after another (packs of 1);
  (c) lowrank-lab packed: every cell in one forward pass;
  (d) as (c), with train.compile (torch.compile, one graph for every batch width);
  (e) as (c), with train.group_by_length = 64 (batches of similar length, aligned across the pack).
(a)–(d) see the same batches; (e) the same examples in another order.
It prints wall time, adapter-examples per second, peak memory, model FLOP utilisation (MFU, against
the H200's measured ~790 TFLOP/s in bf16) and the dev accuracy of each cell.

MFU counts the frozen base's forward (2·N·T) and backward through activations (2·N·T, no weight
gradients), N the parameters of the encoder's matrices, plus attention (4·T·w·d per layer forward,
twice that backward, at the batch width w), over the training steps after each run's first (which
holds compilation), timed without evaluations. T is counted two ways: the tokens processed (rows ×
padded batch width) and the real tokens (the sentences' own lengths).

Usage (GPU): python benchmarks/bench_packed_sweep.py --model PATH --glue PATH [--shape roberta-base]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.train.data import load_task
from lowrank_lab.model.base import Classifier
from lowrank_lab.store.models import load_base
from lowrank_lab.train.batches import encode, epoch_order
from lowrank_lab.train.loop import StepMeter, train_pack
from lowrank_lab.train.pack import build_pack

PEAK_TFLOPS = 790.0


def encoder_flops_per_token(config, seq: int) -> float:
    """Forward FLOPs per token of a BERT-like encoder: matrices 2·N and attention 4·seq·d per layer."""
    d, L, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    return L * (2 * (4 * d * d + 2 * d * ff) + 4 * seq * d)


def roberta_base_shape(tokenizer_dir: str, out: Path) -> str:
    """A randomly initialised encoder with RoBERTa-base's shape (12 layers, d = 768), saved locally."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def synced_clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peft_sequential(cells, task, train, dev, model_name, steps, device, meter):
    """(a) PEFT: one model per cell, a plain bf16 loop with fused AdamW and a linear schedule."""
    from peft import LoraConfig, get_peft_model

    results = []
    train, dev = train.to(device), dev.to(device)
    for cell in cells:
        torch.manual_seed(cell.train.seed)
        encoder, _ = load_base(model_name)
        model = Classifier(encoder, nn.Linear(encoder.config.hidden_size, task.num_labels), "mean")
        config = LoraConfig(r=cell.lora.r, lora_alpha=cell.lora.alpha, target_modules=["query", "value"],
                            modules_to_save=["head"], lora_dropout=0.0)
        model = get_peft_model(model, config).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cell.train.lr, weight_decay=cell.train.weight_decay, fused=device.type == "cuda")
        warm = max(1, int(0.06 * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, w=warm: min((s + 1) / w, max(0.0, (steps - s) / (steps - w))))
        order = epoch_order(len(train), cell.train.seed, 0)
        b = cell.train.batch_size
        for step in range(steps):
            if step == 1:
                clock = synced_clock(device)
            index = order[step * b:(step + 1) * b]
            inputs, labels = train.batch(index)
            if step:
                meter.tokens_padded += inputs["input_ids"].numel()
                meter.tokens_real += int(train.lengths[index].sum())
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(**inputs)
            loss = nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        meter.train_seconds += synced_clock(device) - clock
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(dev), 256):
                inputs, labels = dev.batch(torch.arange(s, min(s + 256, len(dev))))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    pred = model(**inputs).argmax(-1)
                correct += (pred == labels).sum().item()
        results.append(correct / len(dev))
    return results


def lowrank_lab_packs(cells, task, train, dev, tokenizer, model_name, pack, device, meter, **train_options):
    """(b)–(e) lowrank-lab's own loop (train.train_pack) over packs of `pack` cells."""
    cells = [replace(c, train=replace(c.train, **train_options)) for c in cells]
    results = []
    for start in range(0, len(cells), pack):
        p = build_pack(cells[start:start + pack], load_base(model_name)[0], task.num_labels, "mean")
        one = StepMeter()
        results += [s.best["accuracy"] for s in train_pack(p, task, train, dev, tokenizer, device, meter=one)]
        for key in ("tokens_padded", "tokens_real", "train_seconds"):
            setattr(meter, key, getattr(meter, key) + getattr(one, key))
    return results


def timed(fn, device):
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--glue", required=True)
    ap.add_argument("--shape", default=None, help="roberta-base: a random encoder of that shape instead")
    ap.add_argument("--ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--runs", default="a,b,c,d,e", help="which of a, b, c, d, e to run")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    model_name = args.model
    if args.shape == "roberta-base":
        model_name = roberta_base_shape(args.model, Path(tempfile.mkdtemp(prefix="roberta-base-shape-")))
    spec = ExperimentSpec(
        model=ModelSpec(name=model_name, pooling="mean", max_length=args.max_length),
        data=DataSpec(task="glue:SST-2", path=args.glue, max_train=None, max_eval=None),
        train=TrainSpec(batch_size=args.batch_size, max_steps=args.steps, device=args.device),
        sweep=SweepSpec(r=tuple(int(r) for r in args.ranks.split(",")), seeds=tuple(int(s) for s in args.seeds.split(",")),
                        alpha=(8.0,), lr=(5e-4,)),
    )
    cells = expand_sweep(spec)
    task = load_task(spec.data)
    _, tokenizer = load_base(model_name)
    train = encode(tokenizer, task.train, args.max_length, False)
    dev = encode(tokenizer, task.dev, args.max_length, False)
    config = load_base(model_name)[0].config
    rows = []
    K = len(cells)
    packed = functools.partial(lowrank_lab_packs, cells, task, train, dev, tokenizer, model_name)
    runs = {"a": ("PEFT, one cell after another", lambda m: peft_sequential(cells, task, train, dev, model_name, args.steps, device, m)),
            "b": ("lowrank-lab, one cell after another", lambda m: packed(1, device, m)),
            "c": (f"lowrank-lab packed (K={K})", lambda m: packed(K, device, m)),
            "d": (f"lowrank-lab packed (K={K}), compiled", lambda m: packed(K, device, m, compile=True)),
            "e": (f"lowrank-lab packed (K={K}), grouped by length", lambda m: packed(K, device, m, group_by_length=64))}
    for key in args.runs.split(","):
        name, fn = runs[key]
        meter = StepMeter()
        acc, seconds, peak = timed(lambda: fn(meter), device)  # noqa: B023
        examples = K * args.steps * args.batch_size
        # Attention's FLOPs grow with the batch width; count them at the mean padded width.
        width = meter.tokens_padded / (examples * (args.steps - 1) / args.steps)
        flops = {t: getattr(meter, f"tokens_{t}") * 2 * encoder_flops_per_token(config, width) for t in ("padded", "real")}
        mfu = {t: f / meter.train_seconds / (PEAK_TFLOPS * 1e12) for t, f in flops.items()}
        rows.append({"run": key, "method": name, "cells": K, "steps_per_cell": args.steps,
                     "seconds": seconds, "train_seconds": meter.train_seconds,
                     "adapter_examples_per_s": examples / seconds, "peak_gib": peak,
                     "mfu_padded": mfu["padded"], "mfu_real": mfu["real"], "acc_median": statistics.median(acc),
                     "acc_min": min(acc), "acc_max": max(acc)})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["seconds"] for r in rows if r["run"] == "a"), None)
    print(f"\nmodel {args.shape or 'MiniLM'}; SST-2; max_length {args.max_length}; batch {args.batch_size} per cell; "
          f"{args.steps} steps per cell; torch {torch.__version__}; {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}")
    print(f"command: {' '.join(sys.argv)}")
    print("| run | method | wall s | adapter-ex/s | speed-up vs (a) | peak GiB | training s | MFU: tokens processed / real | dev acc median [min, max] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{base / r['seconds']:.1f}×" if base else "–"
        print(f"| {r['run']} | {r['method']} | {r['seconds']:.1f} | {r['adapter_examples_per_s']:,.0f} | {speed} | "
              f"{r['peak_gib']:.1f} | {r['train_seconds']:.1f} | {100 * r['mfu_padded']:.1f}% / {100 * r['mfu_real']:.1f}% | "
              f"{r['acc_median']:.4f} [{r['acc_min']:.4f}, {r['acc_max']:.4f}] |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
