"""Shared fixtures: a seeded generator, a tiny BERT in a local folder, a tiny text task."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LOWRANK_LAB_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))

POSITIVE = ["a wonderful film", "great acting and a moving story", "I loved every minute", "brilliant and funny",
            "a delight from start to finish", "superb, warm and clever", "the best movie this year", "truly great"]
NEGATIVE = ["a dull mess", "boring and far too long", "I hated it", "awful acting and a silly plot",
            "a tedious waste of time", "painfully bad", "the worst film this year", "flat, lifeless and dull"]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def make_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 16, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT (d = 16) with the embedded model's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lowrank_lab.store.models import embedded_model_dir

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir(verify=False))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def write_tiny_task(path: Path, n: int = 64, seed: int = 0) -> Path:
    """A CSV of n short movie-review-like sentences with binary labels."""
    rng = random.Random(seed)
    lines = ["sentence,label"]
    for i in range(n):
        label = i % 2
        words = rng.choice(POSITIVE if label else NEGATIVE)
        lines.append(f"\"{words} {rng.choice(['', 'indeed', 'really', 'overall'])}\",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_task(tmp_path) -> Path:
    return write_tiny_task(tmp_path / "task.csv")


@pytest.fixture(scope="session")
def analyzed(tmp_path_factory) -> Path:
    """The fixture sweep with every analysis table computed, once per session (tests/fixtures/make_sweep.py)."""
    spec = importlib.util.spec_from_file_location("make_sweep", Path(__file__).parent / "fixtures/make_sweep.py")
    make_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sweep)
    return make_sweep.analyzed_copy(tmp_path_factory.getbasetemp())


LR_GRID = (3e-3, 1e-2, 3e-2)
FULL_LR_GRID = (1e-4, 1e-3)


@pytest.fixture(scope="session")
def lr_analyzed(tmp_path_factory, tiny_bert) -> Path:
    """A rank × learning-rate sweep on the tiny BERT (2 target sets × 2 ranks × 3 learning rates × 2
    seeds, full fine-tuning × 2 learning rates × 2 seeds), trained here in seconds, with its results
    and learning-curve tables computed."""
    from lowrank_lab.spec import load_spec
    from lowrank_lab.train.sweep import run_sweep
    from lowrank_lab.workflow.sweep import compute_results

    root = tmp_path_factory.mktemp("lr-grid")
    task = write_tiny_task(root / "task.csv")
    spec = load_spec(None, [
        f"model.name={tiny_bert}", "model.pooling=mean", "model.max_length=16", "data.task=file",
        f"data.path={task}", f"sweep.out_dir={root}", "sweep.name=lr-grid", "sweep.r=[1,4]",
        "sweep.seeds=[0,1]", 'sweep.targets=["q,v","q,k,v,o"]', 'sweep.baselines=["full"]',
        f"sweep.lr={list(LR_GRID)}", f"sweep.full_lr={list(FULL_LR_GRID)}", "sweep.alpha=[4.0]",
        "train.epochs=2", "train.batch_size=8", "train.log_every=2", "train.device=cpu"])
    sweep = run_sweep(spec, echo=lambda *_: None)
    compute_results(sweep)
    return sweep


PEFT_BENIGN = ("is_gradient_checkpointing",)  # PEFT 0.21 on transformers 5: a deprecation, unrelated to the files


def peft_from_pretrained(base, adapter: Path):
    """PeftModel.from_pretrained(base, adapter) as a user calls it; the load_result of the same files
    loaded again (from_pretrained reports no unexpected keys), and the warnings of loading that
    matter (all but PEFT_BENIGN)."""
    import warnings

    import peft

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(base, str(adapter))
        result = model.load_adapter(str(adapter), adapter_name="probe")
        model.set_adapter("default")
    serious = [str(w.message) for w in caught if not any(b in str(w.message) for b in PEFT_BENIGN)]
    return model.eval(), result, serious


@pytest.fixture(scope="session")
def e2e_analyzed(tmp_path_factory) -> Path:
    """A decoder sweep on E2E-format data (tiny GPT-2, word tokenizer, two ranks), trained here in
    seconds, with its results table computed: its dev metrics are E2E's five (Table 3)."""
    import sys

    from lowrank_lab.spec import load_spec
    from lowrank_lab.train.sweep import run_sweep
    from lowrank_lab.workflow.sweep import compute_results

    sys.path.insert(0, str(Path(__file__).parent / "unit"))
    from test_decoder_data import write_e2e
    from test_decoder_train import save_decoder

    root = tmp_path_factory.mktemp("e2e")
    model, data = save_decoder(root / "gpt2", "gpt2"), write_e2e(root / "data")
    spec = load_spec(None, [
        f"model.name={model}", "model.max_length=32", "data.task=e2e", f"data.path={data}", f"sweep.out_dir={root}",
        "sweep.name=e2e", "sweep.r=[2,4]", "sweep.alpha=[4.0]", "sweep.lr=[2e-2]", "train.batch_size=3",
        "train.device=cpu"])
    sweep = run_sweep(spec, echo=lambda *_: None)
    compute_results(sweep)
    return sweep
