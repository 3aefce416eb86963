"""Unpadded packed training and buffered per-cell clipping against padded packing and PEFT (issue 17).

One command, one GPU, three tables, each change side by side:

  (1) MiniLM SST-2 sweep (ranks 1…64 × 3 seeds, LoRA on q, v): PEFT one cell after another (on a
      subset of the cells, its wall time extrapolated per cell), lowrank-lab packed padded, padded +
      fused clipping (train.fused_clip), unpadded (train.unpadded), unpadded + fused clipping, and
      that with each layer compiled (train.compile: model.varlen.compiled, attention eager). Wall
      time counts loading the model, building the pack, every step and the dev evaluation of every
      cell; speed-up against PEFT's (extrapolated) wall time; median dev accuracy.
  (2) RoBERTa-base shape (random encoder from a config): MFU on the real tokens, padded vs unpadded,
      at K = 21 (3 seeds) and K = 63 (9 seeds: more tokens per kernel launch).
  (3) Decoders built from LlamaConfig: SmolLM2-135M's shape and a Llama-1B shape, LoRA on all linear
      maps, ranks 1…64 × 3 seeds (K = 21), batch 8 per cell: PEFT one cell after another (subset,
      extrapolated) vs the packed variants, real tokens trained per second (summed over cells).
      Synthetic sequences (random token ids, lengths uniform in [max_length/4, max_length], the
      last quarter of each the completion).

MFU as benchmarks/bench_packed_sweep.py: frozen-base forward 2·N·T plus backward through the
activations 2·N·T, attention at the batch's mean width, against the H200's ~790 TFLOP/s in bf16,
T the real tokens; over the steps after each run's first, without evaluations.

Usage (GPU): python benchmarks/bench_unpadded.py --model .devcarry/minilm-fp16 --glue .devcarry/glue
  --variants picks the packed rows of every table; --no-dec-peft leaves table (3)'s PEFT row out.
CPU smoke run: add --device cpu --tiny --steps 3 --ranks 1,4 --seeds 0 --max-dev 32
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_packed_sweep import PEAK_TFLOPS, encoder_flops_per_token, lowrank_lab_packs, peft_sequential  # noqa: E402
from bench_packed_sweep import timed as _timed  # noqa: E402

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.store.models import load_base
from lowrank_lab.train.batches import Encoded
from lowrank_lab.train.causal import CausalDev
from lowrank_lab.train.data import load_task
from lowrank_lab.train.examples import Task
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import StepMeter, train_pack
from lowrank_lab.train.pack import build_pack

VARIANTS = {"padded": {}, "padded + fused clip": {"fused_clip": True}, "unpadded": {"unpadded": True},
            "unpadded + fused clip": {"unpadded": True, "fused_clip": True},
            # each layer compiled, attention left eager (model.varlen.compiled); compilation in the wall time
            "unpadded + fused clip + compile": {"unpadded": True, "fused_clip": True, "compile": True}}
DECODER_SHAPES = {  # LlamaConfig sizes
    "SmolLM2-135M": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "Llama-1B": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
}
TINY_DECODER = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, vocab_size=512)


def encoder_spec(args, model_name: str, seeds: str | None = None) -> ExperimentSpec:
    return ExperimentSpec(
        model=ModelSpec(name=model_name, pooling="mean", max_length=args.max_length),
        data=DataSpec(task="glue:SST-2", path=args.glue, max_train=None, max_eval=args.max_dev),
        train=TrainSpec(batch_size=args.batch_size, max_steps=args.steps, device=args.device),
        sweep=SweepSpec(r=tuple(map(int, args.ranks.split(","))), seeds=tuple(map(int, (seeds or args.seeds).split(","))),
                        alpha=(8.0,), lr=(5e-4,)))


def timed(fn, device):
    """bench_packed_sweep.timed, but a run that runs out of GPU memory is reported (wall NaN), not fatal."""
    try:
        return _timed(fn, device)
    except torch.cuda.OutOfMemoryError as err:
        print(f"out of GPU memory: {str(err).splitlines()[0]}", flush=True)
        torch.cuda.empty_cache()
        return [float("nan")], float("nan"), float("nan")


def subset(cells, n: int):
    """n cells spread over the sweep (PEFT's sample): every len/n-th."""
    step = max(1, len(cells) // n)
    return cells[::step][:n]


def mfu(meter: StepMeter, config, rows: int) -> float:
    """Real-token MFU of the steps `meter` timed (attention at the mean real length per sequence)."""
    width = meter.tokens_real / max(rows, 1)
    flops = meter.tokens_real * 2 * encoder_flops_per_token(config, width)
    return flops / max(meter.train_seconds, 1e-9) / (PEAK_TFLOPS * 1e12)


def encoder_table(args, device, model_name: str, with_peft: bool, seeds: str | None = None,
                  variants: str | None = None) -> list[dict]:
    """Table (1) (with PEFT) or (2): the variants of the packed loop on one sweep (`seeds` × ranks)."""
    spec = encoder_spec(args, model_name, seeds)
    cells = expand_sweep(spec)
    task = load_task(spec.data)
    encoder, tokenizer = load_base(model_name)
    config = encoder.config
    del encoder
    train = encode(tokenizer, task.train, args.max_length, False)
    dev = encode(tokenizer, task.dev, args.max_length, False)
    K, rows, out = len(cells), (args.steps - 1) * args.batch_size * len(cells), []
    if with_peft:
        sample = subset(cells, args.peft_cells)
        meter = StepMeter()
        acc, seconds, peak = timed(lambda: peft_sequential(sample, task, train, dev, model_name, args.steps, device,
                                                           meter), device)
        out.append({"method": f"PEFT, one cell after another (measured on {len(sample)} of {K} cells, "
                              f"wall time × {K}/{len(sample)})", "wall_s": seconds * K / len(sample), "peak_gib": peak,
                    "mfu_real": mfu(meter, config, (args.steps - 1) * args.batch_size * len(sample)), "acc": acc})
    for name, options in VARIANTS.items():
        if name not in (variants or args.variants).split(","):
            continue
        meter = StepMeter()
        acc, seconds, peak = timed(lambda o=options, m=meter: lowrank_lab_packs(
            cells, task, train, dev, tokenizer, model_name, K, device, m, **o), device)
        sampled = [acc[i] for i, c in enumerate(cells) if c in subset(cells, args.peft_cells)] if with_peft else []
        out.append({"method": f"lowrank-lab packed (K={K}), {name}", "wall_s": seconds, "peak_gib": peak,
                    "train_s": meter.train_seconds, "mfu_real": mfu(meter, config, rows),
                    "processed_per_real": meter.tokens_padded / max(meter.tokens_real, 1), "acc": acc,
                    "acc_peft_cells": sampled})
        print(json.dumps({k: v for k, v in out[-1].items() if k != "acc"}), flush=True)
    return out


def roberta_shape(tokenizer_dir: str, out: Path, tiny: bool) -> str:
    """A random encoder of RoBERTa-base's shape (12 layers, d = 768), or a tiny one, saved locally."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else \
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    config = RobertaConfig(vocab_size=tok.vocab_size, max_position_embeddings=514, pad_token_id=tok.pad_token_id, **sizes)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


# ---------------------------------------------------------------------------------------------
# Decoders


def synthetic_causal(n: int, max_length: int, vocab: int, seed: int) -> Encoded:
    """n random sequences, lengths uniform in [max_length/4, max_length], the last quarter the completion."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max_length // 4, max_length + 1, (n,), generator=gen)
    ids = torch.randint(3, vocab, (n, max_length), generator=gen)
    pos = torch.arange(max_length)[None, :]
    ids[pos >= lengths[:, None]] = 0
    labels = ids.masked_fill((pos < (lengths - lengths // 4)[:, None]) | (pos >= lengths[:, None]), -100)
    return Encoded(ids, None, lengths, labels)


def decoder_cells(args, name: str):
    spec = ExperimentSpec(model=ModelSpec(name=name, max_length=args.dec_max_length),
                          data=DataSpec(task="file", path="synthetic"),
                          train=TrainSpec(batch_size=args.dec_batch_size, max_steps=args.dec_steps,
                                          device=args.device),
                          sweep=SweepSpec(r=tuple(map(int, args.dec_ranks.split(","))), targets=("all-linear",), alpha=(16.0,),
                                          seeds=tuple(map(int, args.dec_seeds.split(","))),
                                          lr=(2e-4,)))
    return expand_sweep(spec)


def peft_causal(cells, lm, train: Encoded, steps: int, device, meter: StepMeter) -> None:
    """PEFT one cell after another on a causal LM: a plain bf16-autocast loop, HF's own LM loss."""
    from peft import LoraConfig, get_peft_model

    train = train.to(device)
    for cell in cells:
        torch.manual_seed(cell.train.seed)
        model = get_peft_model(copy.deepcopy(lm), LoraConfig(r=cell.lora.r, lora_alpha=cell.lora.alpha,
                                                            target_modules="all-linear", lora_dropout=0.0))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cell.train.lr, fused=device.type == "cuda")
        b = cell.train.batch_size
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cell.train.seed))
        for step in range(steps):
            if step == 1:
                clock = _clock(device)
            index = order[step * b:(step + 1) * b]
            inputs, labels = train.batch(index)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step:
                meter.tokens_real += int(train.lengths[index].sum())
        meter.train_seconds += _clock(device) - clock
        del model, opt


def _clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def packed_causal(cells, lm, train: Encoded, dev: CausalDev, device, meter: StepMeter, **options) -> None:
    """lowrank-lab's loop (train_pack) on one pack of all cells, one evaluation (completion loss)."""
    cells = [replace(c, train=replace(c.train, **options)) for c in cells]
    task = Task("synthetic", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
    pack = build_pack(cells, copy.deepcopy(lm), 0, "none", decoder=True)
    train_pack(pack, task, train, dev, None, device, meter=meter)


def decoder_table(args, device) -> list[dict]:
    from transformers import LlamaConfig, LlamaForCausalLM

    out = []
    for name in args.decoders.split(","):
        sizes = TINY_DECODER if args.tiny else DECODER_SHAPES[name]
        torch.manual_seed(0)
        with torch.device(device):  # random init on the GPU: seconds, not minutes, for 1B parameters
            lm = LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, **sizes))
        cells = decoder_cells(args, name)
        train = synthetic_causal(4096, args.dec_max_length, sizes["vocab_size"], 0)
        dev = CausalDev(synthetic_causal(64, args.dec_max_length, sizes["vocab_size"], 1))
        runs = {} if args.no_dec_peft else {"PEFT, one cell after another": None}
        runs |= {f"packed, {v}": VARIANTS[v] for v in args.variants.split(",")}
        for method, options in runs.items():
            meter = StepMeter()
            if options is None:
                sample = subset(cells, args.peft_cells)
                _, seconds, peak = timed(lambda s=sample, m=meter: peft_causal(s, lm, train, args.dec_steps, device, m),
                                         device)
                method += f" (measured on {len(sample)} of {len(cells)} cells, wall time × {len(cells)}/{len(sample)})"
                seconds *= len(cells) / len(sample)
            else:
                _, seconds, peak = timed(lambda o=options, m=meter: packed_causal(cells, lm, train, dev, device, m, **o),
                                         device)
            out.append({"model": name, "method": method, "K": len(cells), "wall_s": seconds, "peak_gib": peak,
                        "tokens_per_s": meter.tokens_real / max(meter.train_seconds, 1e-9)})
            print(json.dumps(out[-1]), flush=True)
        lm = None  # free the model before the next shape
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def print_tables(args, minilm, roberta, decoders) -> None:
    from lowrank_lab.model import varlen

    gpu = torch.cuda.is_available() and args.device != "cpu"
    attention = "gather + SDPA (CPU)" if not gpu else (
        f"gather + SDPA after the kernel failed: {varlen.kernel_failure}" if varlen.kernel_failure
        else "torch.nn.attention.varlen.varlen_attn (flash)")
    print(f"\ntorch {torch.__version__}; {torch.cuda.get_device_name() if gpu else 'CPU'}; unpadded attention: {attention}; "
          f"command: {' '.join(sys.argv)}")
    for title, rows in ((f"(1) MiniLM SST-2, {args.steps} steps per cell, batch {args.batch_size} per cell", minilm),
                        (f"(2) RoBERTa-base shape{' (tiny)' if args.tiny else ''}", roberta)):
        if not rows:
            continue
        peft = next((r["wall_s"] for r in rows if r["method"].startswith("PEFT")), None)
        print(f"\n{title}\n\n| method | wall s | speed-up vs PEFT | training s | processed / real tokens | "
              "MFU (real tokens) | peak GiB | dev acc median [min, max] | median on PEFT's cells |\n"
              "|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            speed = f"{peft / r['wall_s']:.1f}×" if peft else "–"
            train_s = f"{r['train_s']:.1f}" if "train_s" in r else "–"
            ratio = f"{r['processed_per_real']:.2f}" if "processed_per_real" in r else "–"
            print(f"| {r['method']} | {r['wall_s']:.1f} | {speed} | {train_s} | {ratio} | {100 * r['mfu_real']:.1f}% | "
                  f"{r['peak_gib']:.1f} | {statistics.median(r['acc']):.4f} [{min(r['acc']):.4f}, {max(r['acc']):.4f}] | "
                  f"{_sampled_median(r)} |")
    if decoders:
        print(f"\n(3) decoders{' (tiny)' if args.tiny else ''}, LoRA all-linear, ranks {args.dec_ranks}, batch "
              f"{args.dec_batch_size} per cell, max length {args.dec_max_length}, {args.dec_steps} steps\n\n"
              "| model | method | sweep wall s | real tokens/s (all cells) | speed-up vs PEFT | peak GiB |\n|---|---|---|---|---|---|")
        for r in decoders:
            peft = next((x["tokens_per_s"] for x in decoders if x["model"] == r["model"] and x["method"].startswith("PEFT")),
                        None)
            speed = f"{r['tokens_per_s'] / peft:.1f}×" if peft else "–"
            print(f"| {r['model']} | {r['method']} | {r['wall_s']:.1f} | {r['tokens_per_s']:,.0f} | {speed} | "
                  f"{r['peak_gib']:.1f} |")


def _sampled_median(row: dict) -> str:
    """Median dev accuracy on the cells PEFT trained (its own row: all of them), else "–"."""
    sampled = row["acc"] if row["method"].startswith("PEFT") else row.get("acc_peft_cells")
    return f"{statistics.median(sampled):.4f}" if sampled else "–"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="MiniLM folder (its tokenizer also serves the RoBERTa shape)")
    ap.add_argument("--glue", required=True)
    ap.add_argument("--tables", default="1,2,3")
    ap.add_argument("--ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per cell, tables (1) and (2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-dev", type=int, default=None, help="cap the dev sentences (CPU smoke runs)")
    ap.add_argument("--peft-cells", type=int, default=3, help="PEFT runs on this many cells, extrapolated")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="of the packed loop, in every table")
    ap.add_argument("--roberta-seeds", default="3,9", help="table (2): packs of ranks × this many seeds")
    ap.add_argument("--decoders", default="SmolLM2-135M,Llama-1B")
    ap.add_argument("--no-dec-peft", action="store_true", help="table (3) without its PEFT row (speed-up then \"–\")")
    ap.add_argument("--dec-seeds", default="0,1,2")
    ap.add_argument("--dec-ranks", default="1,2,4,8,16,32,64")
    ap.add_argument("--dec-steps", type=int, default=30)
    ap.add_argument("--dec-batch-size", type=int, default=8)
    ap.add_argument("--dec-max-length", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="tiny RoBERTa and decoder shapes (CPU smoke runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    tables = args.tables.split(",")
    minilm = encoder_table(args, device, args.model, with_peft=True) if "1" in tables else []
    roberta = []
    if "2" in tables:
        folder = roberta_shape(args.model, Path(tempfile.mkdtemp(prefix="roberta-shape-")), args.tiny)
        larger = ",".join(v for v in ("padded", "unpadded + fused clip", "unpadded + fused clip + compile")
                          if v in args.variants.split(","))
        for i, n_seeds in enumerate(map(int, args.roberta_seeds.split(","))):  # larger packs: more tokens per launch
            roberta += encoder_table(args, device, folder, with_peft=False, seeds=",".join(map(str, range(n_seeds))),
                                     variants=None if i == 0 else larger)
    decoders = decoder_table(args, device) if "3" in tables else []
    print_tables(args, minilm, roberta, decoders)
    if args.json:
        Path(args.json).write_text(json.dumps({"minilm": minilm, "roberta": roberta, "decoders": decoders}, indent=2))


if __name__ == "__main__":
    main()
