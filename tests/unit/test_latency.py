"""Table 1's benchmark (issue 18): its variants compute what they claim (merged LoRA = unmerged LoRA,
the merged model is the plain architecture again), every variant is timed the same number of rounds,
and the table's overheads are against the base's median."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import torch

from lowrank_lab.model.lora import LoRALinear
from lowrank_lab.present.tables import latency_table

from test_bottleneck import tiny

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("bench_latency", ROOT / "benchmarks/bench_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_variants_compute_what_they_claim():
    b = bench()
    base = tiny("llama")
    models, params = b.build_variants(base, r=2, m=4, length=3)
    assert list(models) == list(b.VARIANTS)
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        out = {k: m(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits for k, m in models.items()}
    torch.testing.assert_close(out["lora_merged"], out["lora_unmerged"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out["lora_unmerged"], out["base"])  # B ≠ 0: the update is there
    assert not any(isinstance(m, LoRALinear) for m in models["lora_merged"].modules())  # folded into W0
    assert type(models["lora_merged"].model.layers[0].self_attn.q_proj) is torch.nn.Linear
    # q: 16 → 16, v: 16 → 8 (2 KV heads of 4), 2 layers, r = 2; houlsby 4·(2·16·4 + 4 + 16); prefix 2·2·3·8
    assert params == {"base": 0, "lora_merged": 2 * 2 * (16 + 16 + 16 + 8), "lora_unmerged": 224,
                      "houlsby": 4 * 148, "pfeiffer": 2 * 148, "prefix": 96}


def test_every_variant_is_timed_the_same_rounds_within_the_budget():
    b = bench()
    models, _ = b.build_variants(tiny("bert"), r=2, m=4, length=3)
    inputs = b._inputs(50, 2, 8, torch.device("cpu"))
    times, rounds = b.measure(models, inputs, False, torch.device("cpu"), warmup=1, repeats=4, budget_s=60.0)
    assert rounds == 4 and all(len(t) == 4 and min(t) > 0 for t in times.values())
    _, rounds = b.measure(models, inputs, False, torch.device("cpu"), warmup=1, repeats=50, budget_s=0.0)
    assert rounds == 3  # over the budget: the minimum of 3


def test_the_table_gives_each_variant_its_overhead_against_the_base():
    rows = [{"model": "encoder", "batch": 1, "seq": 128, "variant": v, "median_ms": ms, "min_ms": ms / 2, "repeats": 5,
             "adapter_parameters": p} for v, ms, p in (("base", 20.0, 0), ("houlsby", 25.0, 1000), ("prefix", 19.0, 10))]
    table = latency_table(pd.DataFrame(rows))
    assert table.loc[("encoder", "base"), "b=1, n=128"] == "20.0 ms"
    assert table.loc[("encoder", "houlsby"), "b=1, n=128"] == "25.0 ms (+25.0%)"
    assert table.loc[("encoder", "prefix"), "b=1, n=128"] == "19.0 ms (-5.0%)"
    assert table.loc[("encoder", "timed runs"), "b=1, n=128"] == "5"
    assert table.loc[("encoder", "houlsby"), "adapter parameters"] == "1000"
    fastest = latency_table(pd.DataFrame(rows), "min_ms")
    assert fastest.loc[("encoder", "houlsby"), "b=1, n=128"] == "12.5 ms (+25.0%)"
