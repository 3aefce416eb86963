"""Table 1's shape (Hu et al. 2021, §3): the inference latency that adapters add and LoRA does not.

One forward pass (no gradient) of the embedded encoder (all-MiniLM-L6-v2) and decoder (SmolLM2-135M,
the full causal LM with its LM head) at batch 1, 16, 32 and sequence 128, 256 (random token ids, no
padding), or of the paper's GPT-2 medium shape with random weights (``--models gpt2-medium``, with
``--pairs 32x512 16x256 1x128`` for Table 1's columns), for six variants side by side in one run:

    base            the pretrained model
    lora_merged     LoRA on q,v at r = 8, ΔW folded into W0 (W0 + ΔW; the plain architecture again)
    lora_unmerged   the same LoRA kept as a branch: h = W0·x + s·B·A·x at every adapted matrix
    houlsby         bottleneck adapters after attention and after the MLP (m = 16)
    pfeiffer        a bottleneck adapter after the MLP only (m = 16)
    prefix          prefix tuning, l_p = 16 virtual key/value tokens per layer

Each variant is a copy of the base with the adapter as lowrank-lab trains it (``model.lora``,
``model.bottleneck``, ``model.prefix``; one adapter each). After `--warmup` untimed calls per
variant, `--repeats` rounds time every variant once each, in a rotated order, so that drift in the
machine's speed falls on all of them alike; the table holds the median per variant and its overhead
against the base's median, in percent. When one round of a configuration would take more than
`--budget-s` / repeats, fewer repeats are run (at least 3) and the table says how many. The paper
averaged 100 trials of GPT-2 medium on an NVIDIA Quadro RTX8000 (its Table 1 is printed beside).

Usage (the CPU, one thread):
  OMP_NUM_THREADS=1 python benchmarks/bench_latency.py --out figures/results/latency-cpu
  python benchmarks/bench_latency.py --device cuda --repeats 100 --out gpu-runs/latency-gpu
  python benchmarks/bench_latency.py --device cuda --models gpt2-medium --pairs 32x512 16x256 1x128 --repeats 100 ...
Writes latency.csv (one row per model × batch × sequence × variant) and latency.json (settings)
under --out; ``figures/table1_latency.py`` renders them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lowrank_lab.model.base import find_targets
from lowrank_lab.model.bottleneck import ACTIVATIONS, PLACEMENTS, inject_bottleneck
from lowrank_lab.model.lora import inject
from lowrank_lab.model.prefix import attach_prefix
from lowrank_lab.present.registry import TABLE1_PAPER
from lowrank_lab.present.tables import latency_table, render
from lowrank_lab.store.models import load_model

VARIANTS = ("base", "lora_merged", "lora_unmerged", "houlsby", "pfeiffer", "prefix")
MODELS = {"encoder": "embedded", "decoder": "embedded-causal", "gpt2-medium": None}  # None: random weights


def _base(kind: str) -> tuple[nn.Module, bool, str]:
    """(model in float32, is a decoder, its name). "gpt2-medium" is the paper's Table 1 model shape
    (24 layers, d = 1024, 16 heads, 355M parameters) with random weights: latency does not depend on them."""
    if MODELS[kind] is None:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_embd=1024, n_layer=24, n_head=16)).float(), True, "gpt2-medium (random weights)"
    loaded = load_model(MODELS[kind])
    return loaded.module.float(), loaded.is_decoder, loaded.name


def _configs(kind: str, args) -> list[tuple[int, int]]:
    """(batch, sequence) pairs: --pairs as given, else --batch × --seq (the decoder's --decoder-batch)."""
    if args.pairs:
        return [tuple(int(x) for x in pair.split("x")) for pair in args.pairs]
    batches = args.decoder_batch if kind != "encoder" and args.decoder_batch else args.batch
    return [(b, n) for b in batches for n in args.seq]


def _lora(model: nn.Module, r: int, merged: bool) -> int:
    """LoRA on q,v (B random, so that merging changes W0); merged: W0 ← W0 + ΔW and the wrappers
    replaced by their base layers. Returns the adapter's parameters."""
    gen = torch.Generator().manual_seed(0)
    paths = list(find_targets(model, ("q", "v")).values())
    layers = inject(model, paths, [[r]] * len(paths), [1.0])
    with torch.no_grad():
        for layer in layers.values():
            layer.reset_adapter(0, "kaiming", gen)
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.01)
    count = sum(layer.A.numel() + layer.B.numel() for layer in layers.values())
    if merged:
        for path, layer in layers.items():
            layer.merge()
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.base)
    return count


def _bottleneck(model: nn.Module, method: str, m: int) -> int:
    paths = list(find_targets(model, PLACEMENTS[method]).values())
    layers = inject_bottleneck(model, paths, [m], ACTIVATIONS[method])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in layers.values():
            layer.reset_adapter(0, gen)
            layer.up.copy_(torch.randn(layer.up.shape, generator=gen) * 0.01)  # a trained adapter is not 0
    return sum(p.numel() for layer in layers.values() for p in (layer.down, layer.down_bias, layer.up, layer.up_bias))


def build_variants(base: nn.Module, r: int, m: int, length: int) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """{variant: model} (each a copy of `base`, eval mode) and {variant: adapter parameters}."""
    models, params = {}, {}
    for name in VARIANTS:
        model = copy.deepcopy(base).eval()
        if name.startswith("lora"):
            params[name] = _lora(model, r, merged=name == "lora_merged")
        elif name in PLACEMENTS:
            params[name] = _bottleneck(model, name, m)
        elif name == "prefix":
            prefix = attach_prefix(model.base_model, 1, length)
            prefix.reset_prefix(0, torch.Generator().manual_seed(0))
            params[name] = prefix.prompt.numel()
        else:
            params[name] = 0
        models[name] = model
    return models, params


def _inputs(vocab: int, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 1000 + seq)
    ids = torch.randint(min(100, vocab - 1), vocab, (batch, seq), generator=gen)  # past the special tokens
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _timed(model: nn.Module, inputs: dict, decoder: bool, device: torch.device) -> float:
    extra = {"use_cache": False} if decoder else {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    model(**inputs, **extra)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000.0


@torch.inference_mode()
def measure(models: dict[str, nn.Module], inputs: dict, decoder: bool, device: torch.device, warmup: int,
            repeats: int, budget_s: float) -> tuple[dict[str, list[float]], int]:
    """{variant: latencies in ms} over the rounds, and the number of rounds run."""
    first = {}
    for name, model in models.items():
        for _ in range(warmup):
            first[name] = _timed(model, inputs, decoder, device)
    per_round = sum(first.values()) / 1000.0
    rounds = max(3, min(repeats, int(budget_s / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for k in range(rounds):
        for name in names[k % len(names):] + names[: k % len(names)]:  # rotated: drift hits every variant
            times[name].append(_timed(models[name], inputs, decoder, device))
    return times, rounds


def run_model(kind: str, args, device: torch.device, echo=print) -> list[dict]:
    base, decoder, model_name = _base(kind)
    models, params = build_variants(base, args.r, args.bottleneck, args.prefix_length)
    for model in models.values():
        model.to(device, getattr(torch, args.dtype))
    rows = []
    for batch, seq in _configs(kind, args):
        inputs = _inputs(base.config.vocab_size, batch, seq, device)
        times, rounds = measure(models, inputs, decoder, device, args.warmup, args.repeats, args.budget_s)
        for name in VARIANTS:
            t = times[name]
            q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
            rows.append({"model": kind, "model_name": model_name, "batch": batch, "seq": seq, "variant": name,
                         "median_ms": statistics.median(t), "q1_ms": q[0], "q3_ms": q[2], "min_ms": min(t),
                         "repeats": rounds, "adapter_parameters": params[name]})
        base_ms = statistics.median(times["base"])
        echo(f"{kind} b={batch} n={seq}: base {base_ms:.1f} ms, " + ", ".join(
            f"{n} {100 * (statistics.median(times[n]) / base_ms - 1):+.1f}%" for n in VARIANTS[1:]) + f" ({rounds} rounds)")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["encoder", "decoder"], choices=list(MODELS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 32])
    p.add_argument("--decoder-batch", nargs="+", type=int, default=None, help="the decoder's batch sizes (default: --batch)")
    p.add_argument("--seq", nargs="+", type=int, default=[128, 256])
    p.add_argument("--pairs", nargs="+", default=None, help="batch×sequence pairs instead, e.g. 32x512 16x256 1x128")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=60.0, help="seconds of timed rounds per configuration, at most")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and activations")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--bottleneck", type=int, default=16)
    p.add_argument("--prefix-length", type=int, default=16)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = [row for kind in args.models for row in run_model(kind, args, device)]
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "latency.csv", index=False)
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                "processor": platform.processor(), "device_name": torch.cuda.get_device_name(device)
                if device.type == "cuda" else platform.processor() or "cpu"}
    (args.out / "latency.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(render(latency_table(frame), "md"))
    print("\nThe paper (Hu et al. 2021, Table 1; GPT-2 medium, NVIDIA Quadro RTX8000, mean ± sd of 100 trials, ms):\n")
    print(render(TABLE1_PAPER, "md"))


if __name__ == "__main__":
    main()
