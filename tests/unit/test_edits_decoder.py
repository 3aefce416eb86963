"""truncate and mitigate on a tiny decoder sweep: the edits at k = r and λ = 1 are the trained
cells, and forgetting is the next-token loss on text never trained on against the base's own."""

from __future__ import annotations

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, write_tiny_task
from lowrank_lab.spec import load_spec
from lowrank_lab.store import runs
from lowrank_lab.store import tables as st
from lowrank_lab.train.sweep import run_sweep
from lowrank_lab.workflow.mitigate import compute_mitigation
from lowrank_lab.workflow.truncate import compute_truncation

from test_decoder_train import save_decoder  # noqa: E402  (the tiny word-level decoders)

GENERAL = [" ".join(reversed(s.split())) for s in POSITIVE + NEGATIVE]  # the words, never these sentences


@pytest.fixture(scope="module")
def decoder_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits-decoder")
    base = save_decoder(root / "llama", "llama")
    task = write_tiny_task(root / "task.csv", n=60)
    general = root / "general.csv"
    general.write_text("sentence,label\n" + "".join(f"\"{t}\",{i % 2}\n" for i, t in enumerate(GENERAL)))
    spec = load_spec(None, [
        f"model.name={base}", "model.max_length=32", "data.task=file", f"data.path={task}", "sweep.alpha=[4.0]",
        "train.max_steps=5", "train.batch_size=4", "sweep.lr=[2e-2]", "train.device=cpu", "sweep.r=[2]",
        "sweep.seeds=[0,1]", f"sweep.out_dir={root}", "sweep.name=d"])
    sweep = run_sweep(spec, echo=lambda *_: None)
    compute_truncation(sweep, echo=lambda *_: None)
    compute_mitigation(sweep, general="file", general_path=str(general), echo=lambda *_: None)
    return sweep, base


def test_decoder_truncation_at_r_and_lambda_one_are_the_trained_cells(decoder_sweep):
    sweep, _ = decoder_sweep
    trunc, mit = st.read_table(sweep, st.TRUNCATION), st.read_table(sweep, st.MITIGATION)
    for run in runs.load_sweep(sweep):
        best, metric = run.summary.best, run.summary.main_metric
        t = trunc[(trunc.cell == run.path.name) & (trunc.k_rule == "k")].set_index("k")
        assert t.loc[2, "value"] == best[metric] and t.loc[2, "dev_loss"] == pytest.approx(best["dev_loss"], rel=1e-5)
        m = mit[(mit.cell == run.path.name) & (mit.lam == 1.0)]
        assert (m.value == best[metric]).all()
        assert m.dev_loss.to_numpy() == pytest.approx(best["dev_loss"], rel=1e-5)


def test_forgetting_is_the_next_token_loss_against_the_base_models_own_loss(decoder_sweep):
    from lowrank_lab.store.models import load_model

    sweep, base = decoder_sweep
    mit = st.read_table(sweep, st.MITIGATION)
    loaded = load_model(str(base))
    batch = loaded.tokenizer(GENERAL, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        hf = float(loaded.module(**batch, labels=labels).loss)  # Hugging Face's mean over every target token
    assert mit.base_general_loss.to_numpy() == pytest.approx(hf, rel=1e-5)
    assert (mit.forgetting == mit.general_loss - mit.base_general_loss).all()
    assert (mit[mit.lam == 1.0].forgetting != 0).all()  # the adapters changed the loss on new text
