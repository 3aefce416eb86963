"""``lowrank-lab mitigate SWEEP``: every LoRA cell's intruder directions scaled by λ
(``analysis.forgetting``), each cell's 2 definitions × 5 λ evaluated in one packed pass on the dev
split and on general text it never trained on (``train.variants``); four tables with sidecars."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lowrank_lab.analysis import forgetting as fg
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.store import tables as st
from lowrank_lab.train import variants as tv
from lowrank_lab.train.data import load_task
from lowrank_lab.workflow.edits import open_sweep

MAX_GENERAL = 400
CONVENTIONS = {
    "intruders": f"top {fg.TOP_K} left singular vectors with max |cos| < {fg.EPSILON} against every left singular "
                 "vector of W0; definition W0+dW: of W0 + ΔW (Shuttleworth et al. 2024); dW: of ΔW alone",
    "lam": "W_λ = W_tuned − (1 − λ)·Σ_j σ_j·y_j·z_jᵀ over the intruder triplets (of W0 + ΔW, or of ΔW), every "
           "adapted matrix of the cell; evaluated as exact factors in a packed LoRA layer",
    "forgetting": "decoder: mean next-token loss on the general sentences minus the base's; encoder: mean over "
                  "sentences of ‖e − e_base‖/‖e_base‖ of the pooled sentence vectors (embedding_shift)",
    "tradeoff": "medians over seeds with percentile bootstrap 95% intervals (2000 resamples); NaN when n = 1",
    "correlation": "Spearman's ρ across cells at λ = 1 of n_intruders (summed over matrices) and forgetting; "
                   "two-sided permutation p-value (10,000 shuffles)",
    "sign_tests": "paired two-sided sign test across cells of λ against λ = 1 (wins: λ's number larger)",
}


def default_general(task: str) -> str:
    """General English the cell never trained on: VADER's NYT sentences (Amazon reviews when it trained on NYT)."""
    return "vader-amazon" if task == "vader-nyt" else "vader-nyt"


def general_texts(task: str, path: str | None, limit: int, trained_on: DataSpec) -> list[str]:
    """Up to `limit` sentences of the task `task` (a data.task name; train and dev splits together)."""
    if task == trained_on.task and (path or None) == (trained_on.path or None):
        raise SpecError(f"--general {task}: the sweep trained on it; pick text the adapters never saw")
    source = load_task(DataSpec(task=task, path=path, max_train=None, max_eval=None))
    return [e.text for e in (*source.train, *source.dev)][:limit]


def compute_mitigation(sweep: Path, base: str | None = None, general: str | None = None,
                       general_path: str | None = None, max_general: int = MAX_GENERAL,
                       lambdas: Sequence[float] = fg.LAMBDAS, device: str = "cpu", batch_size: int = 64,
                       ranks: Sequence[int] | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Write mitigation, mitigation_tradeoff, mitigation_correlation and mitigation_sign_tests; with
    `ranks`, of the LoRA cells of those ranks only (each cell costs 2·len(lambdas) evaluations)."""
    opened = open_sweep(sweep, base, device)
    inputs, W0 = opened.inputs, opened.W0
    general = general or default_general(opened.spec.data.task)
    texts = general_texts(general, general_path, max_general, opened.spec.data)
    encoded = tv.general_encoded(inputs.tokenizer, texts, opened.spec.model.max_length, inputs.decoder)
    lora = [run for run in sa.lora_runs(opened.runs) if ranks is None or run.spec.lora.r in ranks]
    if not lora:
        raise SpecError(f"--r {list(ranks)}: the sweep has no finished LoRA cell of these ranks")
    cells = []
    for i, run in enumerate(lora):
        variants, rows = fg.mitigation_variants(run.updates, W0, lambda u: W0.svd(u)[0], opened.head(run), lambdas)
        pack = tv.variant_pack(inputs.base, variants, run.spec, inputs.pooling, inputs.decoder)
        results = tv.evaluate_variants(pack, inputs.task, inputs.dev, inputs.tokenizer, opened.device, batch_size)
        scores = tv.general_scores(pack, inputs.base, encoded, opened.device, batch_size)
        cells.append((sa.run_columns(run), rows, results, scores))
        echo(f"[{i + 1}/{len(lora)}] {run.path.name}: {len(variants)} variants, "
             f"{rows[0]['n_intruders']} intruders (W0+dW) in one pass")
    table = fg.mitigation_table(cells, opened.metric)
    options = {"base_model": opened.spec.model.name, "metric": opened.metric, "general": general,
               "general_path": general_path, "general_sentences": len(texts), "lambdas": list(lambdas),
               "top_k": fg.TOP_K, "epsilon": fg.EPSILON, "device": str(opened.device),
               "ranks": None if ranks is None else list(ranks)}
    frames = ((st.MITIGATION, table), (st.MITIGATION_TRADEOFF, fg.tradeoff_table(table)),
              (st.MITIGATION_CORRELATION, fg.correlation_table(table)), (st.MITIGATION_SIGN_TESTS, fg.lambda_sign_tests(table)))
    return [st.write_table(opened.sweep, name, frame, options, CONVENTIONS) for name, frame in frames]
