"""Tests for lowrank_lab.data: metrics against closed forms, every GLUE format, files, and VADER.

The VADER tests download the vaderSentiment sdist from PyPI once (about 5 s) into a temporary cache.
"""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lowrank_lab.store import datasets
from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.train.data import DataError, Example, load_task
from lowrank_lab.maths.metrics import compute_metrics

FIXTURE_GLUE = Path(__file__).parents[1] / "fixtures" / "data" / "glue"
# CI gets a copy of shared/ beside the clone; it is not part of the repository.
SHARED_GLUE = (Path(__file__).parents[2] / ".." / "shared" / "data" / "glue").resolve()
ALL = {"max_train": None, "max_eval": None}


# ---------------------------------------------------------------------------------------------
# Metrics


def test_accuracy_and_f1_on_a_hand_counted_case():
    # TP = 2 (rows 0, 4), FP = 1 (row 1), FN = 1 (row 3), TN = 2: F1 = 4 / (4 + 1 + 1).
    p, y = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 1, 1, 0])
    out = compute_metrics(("accuracy", "f1"), p, y)
    assert out == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(4 / 6)}
    assert all(type(v) is float for v in out.values())


def test_f1_is_zero_when_class_1_is_never_predicted_nor_present():
    assert compute_metrics(("f1",), np.zeros(4, int), np.zeros(4, int)) == {"f1": 0.0}


def test_matthews_binary_matches_the_closed_form():
    # TP = 2, TN = 2, FP = 1, FN = 1: (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 3 / 9.
    p, y = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 1, 1, 0])
    assert compute_metrics(("matthews",), p, y)["matthews"] == pytest.approx(1 / 3)
    assert compute_metrics(("matthews",), y, y)["matthews"] == pytest.approx(1.0)
    assert compute_metrics(("matthews",), 1 - y, y)["matthews"] == pytest.approx(-1.0)


def test_matthews_multiclass_is_the_correlation_of_one_hot_indicators():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    x_c, y_c = (np.eye(3)[v] - np.eye(3)[v].mean(0) for v in (p, y))  # Gorodkin 2004, as covariances
    expected = (x_c * y_c).sum() / np.sqrt((x_c**2).sum() * (y_c**2).sum())
    assert compute_metrics(("matthews",), p, y)["matthews"] == pytest.approx(expected)


def test_matthews_is_zero_for_constant_predictions():
    assert compute_metrics(("matthews",), np.ones(5, int), np.array([0, 1, 0, 1, 1]))["matthews"] == 0.0


def test_pearson_and_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300).round(1)  # rounding makes ties, which Spearman ranks by average
    p = (y + rng.normal(size=300)).round(1)
    out = compute_metrics(("pearson", "spearman"), p, y)
    assert out["pearson"] == pytest.approx(scipy.stats.pearsonr(p, y)[0], abs=1e-12)
    assert out["spearman"] == pytest.approx(scipy.stats.spearmanr(p, y)[0], abs=1e-12)


def test_pearson_and_spearman_are_nan_for_constant_predictions():
    out = compute_metrics(("pearson", "spearman"), np.full(4, 0.1), np.array([0.0, 1.0, 2.0, 3.0]))
    assert np.isnan(out["pearson"]) and np.isnan(out["spearman"])


def test_logits_are_reduced_by_argmax_and_a_single_column_is_squeezed():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0], [0.0, 1.0, 0.0]])
    assert compute_metrics(("accuracy",), logits, np.array([0, 2, 0]))["accuracy"] == pytest.approx(2 / 3)
    column = np.array([[1.0], [2.0], [4.0]])
    assert compute_metrics(("pearson",), column, np.array([1.0, 2.0, 4.0]))["pearson"] == pytest.approx(1.0)


def test_compute_metrics_rejects_unknown_metrics_and_mismatched_shapes():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(("auc",), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="must be n non-empty rows"):
        compute_metrics(("accuracy",), np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------------------------------
# GLUE, from fixture TSVs in each task's own format

GLUE_CASES = {
    # task: (train labels, dev labels, num_labels, metrics, train has pairs)
    "SST-2": ([1, 0, 1, 0], [1, 0], 2, ("accuracy",), False),
    "MRPC": ([1, 0, 1], [0, 1], 2, ("accuracy", "f1"), True),
    "RTE": ([0, 1, 0], [1, 0], 2, ("accuracy",), True),
    "CoLA": ([1, 0, 1, 0], [1, 0], 2, ("matthews",), False),
    "STS-B": ([5.0, 0.0, 3.8], [4.25, 0.4], 1, ("pearson", "spearman"), True),
    "QNLI": ([0, 1], [0, 1], 2, ("accuracy",), True),
    "MNLI": ([0, 2, 1], [2, 0, 1], 3, ("accuracy",), True),
    "QQP": ([1, 0], [1, 0], 2, ("accuracy", "f1"), True),
}


@pytest.mark.parametrize("name", GLUE_CASES)
def test_glue_fixture_reads_each_task_format(name):
    train_labels, dev_labels, num_labels, metrics, paired = GLUE_CASES[name]
    task = load_task(DataSpec(task=f"glue:{name}", path=str(FIXTURE_GLUE)))
    assert task.name == f"glue:{name}"
    assert [e.label for e in task.train] == train_labels
    assert [e.label for e in task.dev] == dev_labels
    assert (task.num_labels, task.metrics, task.main_metric) == (num_labels, metrics, metrics[0])
    assert all((e.text_pair is not None) == paired for e in task.train + task.dev)
    assert all(isinstance(e.label, float if num_labels == 1 else int) for e in task.train)
    dev_file = "dev_matched.tsv" if name == "MNLI" else "dev.tsv"
    assert task.source["files"]["dev"] == {
        "path": str(FIXTURE_GLUE / name / dev_file),
        "sha256": hashlib.sha256((FIXTURE_GLUE / name / dev_file).read_bytes()).hexdigest()}
    assert task.source["split"] == "as given"
    assert task.source["counts"] == {"train": len(train_labels), "dev": len(dev_labels)}


def test_glue_keeps_stray_quotes_and_reads_headerless_cola_and_mrpc_with_bom():
    sst2 = load_task(DataSpec(task="glue:SST-2", path=str(FIXTURE_GLUE)))
    assert sst2.train[1] == Example('the plot never " lands and the jokes fall flat ', None, 0)
    cola = load_task(DataSpec(task="glue:CoLA", path=str(FIXTURE_GLUE)))
    assert cola.train[2] == Example('She said "hello" to everyone.', None, 1)
    mrpc = load_task(DataSpec(task="glue:MRPC", path=str(FIXTURE_GLUE)))
    assert mrpc.dev[0] == Example("The train left at noon .", "Tickets cost twelve dollars .", 0)
    assert mrpc.source["labels"] == {"0": 0, "1": 1}


def test_glue_task_names_are_matched_loosely_and_unknown_ones_are_spec_errors():
    assert load_task(DataSpec(task="glue:stsb", path=str(FIXTURE_GLUE))).name == "glue:STS-B"
    with pytest.raises(SpecError, match="GLUE tasks are"):
        load_task(DataSpec(task="glue:WNLI", path=str(FIXTURE_GLUE)))
    with pytest.raises(SpecError, match="data.task='imdb'"):
        load_task(DataSpec(task="imdb"))


def test_glue_missing_file_and_unknown_label_name_the_file_and_row(tmp_path):
    with pytest.raises(DataError, match=r"RTE/train\.tsv: no such file"):
        load_task(DataSpec(task="glue:RTE", path=str(tmp_path)))
    shutil.copytree(FIXTURE_GLUE / "RTE", tmp_path / "RTE")
    dev = tmp_path / "RTE" / "dev.tsv"
    dev.write_text(dev.read_text().replace("not_entailment", "contradiction"))
    with pytest.raises(DataError, match=r"RTE/dev\.tsv row 1: label 'contradiction'"):
        load_task(DataSpec(task="glue:RTE", path=str(tmp_path)))


def test_glue_without_path_and_without_datasets_says_to_pass_a_local_folder(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="pass data.path pointing to a local GLUE folder"):
        load_task(DataSpec(task="glue:SST-2"))


def test_glue_from_the_hub_maps_class_ids_through_the_label_names(monkeypatch):
    splits = {"train": pd.DataFrame({"sentence1": ["a b", "c d"], "sentence2": ["a", "e"], "label": [0, 1]}),
              "validation": pd.DataFrame({"sentence1": ["f g"], "sentence2": ["h"], "label": [1]})}
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return types.SimpleNamespace(to_pandas=lambda: splits[split])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = load_task(DataSpec(task="glue:RTE"))
    assert calls == [("nyu-mll/glue", "rte", "train"), ("nyu-mll/glue", "rte", "validation")]
    assert task.train == (Example("a b", "a", 0), Example("c d", "e", 1))
    assert task.dev == (Example("f g", "h", 1),)
    assert task.source["hub"] == {"train": "nyu-mll/glue/rte:train", "dev": "nyu-mll/glue/rte:validation"}


# ---------------------------------------------------------------------------------------------
# GLUE, the real files (shared/ sits beside the repository; skipped where it does not)

REAL_GLUE = {  # train rows, dev rows, train label counts (from the folder's README)
    "SST-2": (67349, 872, {0: 29780, 1: 37569}),
    "MRPC": (3668, 408, {1: 2474, 0: 1194}),
    "RTE": (2490, 277, {0: 1249, 1: 1241}),
    "CoLA": (8551, 1043, {1: 6023, 0: 2528}),
    "STS-B": (5749, 1500, None),
}


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="no shared GLUE folder beside the repository")
@pytest.mark.parametrize("name", REAL_GLUE)
def test_real_glue_counts_match_the_readme(name):
    n_train, n_dev, counts = REAL_GLUE[name]
    task = load_task(DataSpec(task=f"glue:{name}", path=str(SHARED_GLUE), **ALL))
    assert (len(task.train), len(task.dev)) == (n_train, n_dev)
    if counts is None:
        assert task.num_labels == 1 and all(0.0 <= e.label <= 5.0 for e in task.train + task.dev)
    else:
        assert collections.Counter(e.label for e in task.train) == counts
    assert all(e.text.strip() and "\t" not in e.text for e in task.train + task.dev)


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="no shared GLUE folder beside the repository")
def test_real_glue_default_caps_and_qnli_without_train_is_an_error():
    task = load_task(DataSpec(task="glue:SST-2", path=str(SHARED_GLUE)))
    assert (len(task.train), len(task.dev)) == (DataSpec().max_train, DataSpec().max_eval)
    assert task.source["rows"] == {"train": 67349, "dev": 872}
    with pytest.raises(DataError, match=r"QNLI/train\.tsv: no such file"):
        load_task(DataSpec(task="glue:QNLI", path=str(SHARED_GLUE)))


# ---------------------------------------------------------------------------------------------
# Files: CSV, TSV, JSONL


def write_csv(path: Path, rows: list[tuple], header=("sentence", "label")) -> Path:
    pd.DataFrame(rows, columns=header).to_csv(path, index=False)
    return path


def smallest_sha256(keys: list[str], n: int) -> set[str]:
    return set(sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())[:n])


def test_single_csv_is_split_80_20_by_sha256_of_the_row_number(tmp_path):
    rows = [(f"sentence, number {i}", "pos" if i % 2 else "neg") for i in range(1, 11)]
    path = write_csv(tmp_path / "d.csv", rows)
    task = load_task(DataSpec(task="file", path=str(path)))
    dev_rows = smallest_sha256([str(i) for i in range(1, 11)], 2)
    assert [e.text for e in task.dev] == [f"sentence, number {i}" for i in range(1, 11) if str(i) in dev_rows]
    assert [e.text for e in task.train] == [f"sentence, number {i}" for i in range(1, 11) if str(i) not in dev_rows]
    assert task.source["labels"] == {"neg": 0, "pos": 1}
    assert (task.num_labels, task.metrics) == (2, ("accuracy",))
    assert task == load_task(DataSpec(task="file", path=str(path)))


def test_caps_keep_the_lowest_ranked_rows_in_source_order(tmp_path):
    path = write_csv(tmp_path / "d.csv", [(f"s{i}", i % 2) for i in range(1, 41)])
    full = load_task(DataSpec(task="file", path=str(path), **ALL))
    capped = load_task(DataSpec(task="file", path=str(path), max_train=5, max_eval=3))
    assert (len(capped.train), len(capped.dev)) == (5, 3)
    train_keys = [e.text[1:] for e in full.train]
    assert [e.text[1:] for e in capped.train] == [k for k in train_keys if k in smallest_sha256(train_keys, 5)]
    assert set(capped.dev) <= set(full.dev)
    assert capped.source["rows"] == {"train": 32, "dev": 8} and capped.source["counts"] == {"train": 5, "dev": 3}
    assert capped.source["caps"] == {"max_train": 5, "max_eval": 3}


def test_folder_with_jsonl_train_and_validation_and_text_pairs(tmp_path):
    records = [{"q": f"question {i}", "a": f"answer {i}", "y": i % 3} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps({"q": "why", "a": "because", "y": 2}))
    spec = DataSpec(task="file", path=str(tmp_path), text_column="q", text_pair_column="a", label_column="y")
    task = load_task(spec)
    assert task.train[4] == Example("question 4", "answer 4", 1)
    assert task.dev == (Example("why", "because", 2),)
    assert task.num_labels == 3 and task.source["labels"] is None
    assert set(task.source["files"]) == {"train", "dev"}


@pytest.mark.parametrize("labels, num_labels, expected, mapping", [
    (["0.5", "1.25", "3"], 1, [0.5, 1.25, 3.0], None),  # a fractional part: regression
    (["1.0", "0.0", "2.0"], 3, [1, 0, 2], None),  # integer-valued floats are class ids
    (["-1", "1", "-1"], 2, [0, 1, 0], {"-1": 0, "1": 1}),  # negative integers: sorted order
    (["spam", "ham", "eggs"], 3, [2, 1, 0], {"eggs": 0, "ham": 1, "spam": 2}),
])
def test_file_labels_become_class_ids_or_regression_targets(tmp_path, labels, num_labels, expected, mapping):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{v}\n" for i, v in enumerate(labels)))
    (tmp_path / "dev.tsv").write_text(f"sentence\tlabel\nd\t{labels[0]}\n")
    task = load_task(DataSpec(task="file", path=str(tmp_path)))
    assert [e.label for e in task.train] == expected and task.num_labels == num_labels
    assert task.source["labels"] == mapping
    assert task.metrics == (("pearson", "spearman") if num_labels == 1 else ("accuracy",))


@pytest.mark.parametrize("content, message", [
    ("text,label\na,1\nb,0\n", r"no column 'sentence'; columns present: \['text', 'label'\]"),
    ("sentence,label\nfine,1\n  ,0\n", r"row 2: empty text in column 'sentence'"),
    ("sentence,label\nfine,1\nno label,\n", r"row 2: missing label in column 'label'"),
    ("sentence,label\n", "no rows"),
    ("sentence,label\na,x\nb,x\n", "every label is 'x'"),
    ("sentence,label\nonly one,1\n", "need two or more to split"),
])
def test_file_errors_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=f"d.csv.*{message}"):
        load_task(DataSpec(task="file", path=str(path)))


def test_file_errors_for_paths_and_json(tmp_path):
    with pytest.raises(DataError, match="missing.csv: no such file"):
        load_task(DataSpec(task="file", path=str(tmp_path / "missing.csv")))
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        load_task(DataSpec(task="file", path=str(tmp_path / "notes.md")))
    with pytest.raises(DataError, match="no train.csv, train.tsv or train.jsonl"):
        load_task(DataSpec(task="file", path=str(tmp_path)))
    (tmp_path / "train.jsonl").write_text('{"sentence": "a", "label": 1}\n{"sentence": "b", label: 0}\n')
    with pytest.raises(DataError, match=r"train.jsonl line 2: not valid JSON"):
        load_task(DataSpec(task="file", path=str(tmp_path)))
    (tmp_path / "train.jsonl").write_text('\n{"sentence": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"train.jsonl line 3: expected a JSON object, got list"):
        load_task(DataSpec(task="file", path=str(tmp_path)))
    with pytest.raises(SpecError, match="needs data.path"):
        load_task(DataSpec(task="file"))


# ---------------------------------------------------------------------------------------------
# VADER: one real download into a temporary cache, shared by the tests below

VADER_COUNTS = {  # binary rows (train + dev) and neutral rows dropped; 23,703 sentences in all
    "vader-movies": (10043, 562), "vader-tweets": (3362, 838),
    "vader-amazon": (2943, 765), "vader-nyt": (2788, 2402)}


@pytest.fixture(scope="module")
def vader_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOWRANK_LAB_CACHE", str(root))
        task = load_task(DataSpec())  # the default task: downloads and extracts
    return root, task


def use_cache(monkeypatch, root: Path) -> Path:
    """Point the cache at ``root`` and take pip offline: any download now fails at once."""
    monkeypatch.setenv("LOWRANK_LAB_CACHE", str(root))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return root / "vader"


def test_vader_default_task_has_the_default_caps_of_balanced_snippets(vader_cache, monkeypatch):
    use_cache(monkeypatch, vader_cache[0])
    _, task = vader_cache
    uncapped = load_task(DataSpec(max_train=None, max_eval=None))
    assert set(task.train) <= set(uncapped.train) and set(task.dev) <= set(uncapped.dev)
    assert (task.name, len(task.train), len(task.dev)) == ("vader", DataSpec().max_train, DataSpec().max_eval)
    assert task.source["rows"] == {"train": 8034, "dev": 2009}  # 20% of 10,043 binary snippets
    assert (task.num_labels, task.metrics, task.source["labels"]) == (2, ("accuracy",), {"negative": 0, "positive": 1})
    assert 0.45 < np.mean([e.label for e in task.train]) < 0.55
    assert task.source["sdist"]["sha256"] == datasets.VADER_SDIST_SHA256
    rock = ("The Rock is destined to be the 21st Century's new ''Conan'' and that he's going to make a splash even "
            "greater than Arnold Schwarzenegger, Jean Claud Van Damme or Steven Segal.")  # id 1, mean 2.27
    assert uncapped.train[0] == Example(rock, None, 1)


def test_vader_for_a_decoder_is_prompt_to_label_word_with_the_same_examples(vader_cache, monkeypatch):
    use_cache(monkeypatch, vader_cache[0])
    encoder_task, task = vader_cache[1], load_task(DataSpec(), causal=True)
    assert (task.kind, task.label_words, task.main_metric) == ("completion", (" negative", " positive"), "accuracy")
    assert len(task.train) == len(encoder_task.train) and task.source["rows"] == encoder_task.source["rows"]
    for e, c in zip(encoder_task.dev, task.dev):
        assert (c.prompt, c.completion) == (f"Review: {e.text}\nSentiment:", task.label_words[e.label])


def test_vader_sources_load_from_the_cache_offline(vader_cache, monkeypatch):
    folder = use_cache(monkeypatch, vader_cache[0])
    manifest = json.loads((folder / "checksums.json").read_text())
    assert manifest["sdist_sha256"] == datasets.VADER_SDIST_SHA256
    for name, (binary, dropped) in VADER_COUNTS.items():
        task = load_task(DataSpec(task=name, **ALL))
        assert len(task.train) + len(task.dev) == binary and len(task.dev) == round(0.2 * binary)
        assert task.source["dropped"] == {"neutral (|mean| <= 0.5)": dropped}
        path = Path(task.source["files"]["train"]["path"])
        assert task.source["files"]["train"]["sha256"] == manifest["sha256"][path.name]
        assert manifest["sha256"][path.name] == datasets.VADER_FILES[name.removeprefix("vader-")][1]
        assert all("\r" not in e.text for e in task.train)  # CRLF line ends are not part of the text
    assert sum(b + d for b, d in VADER_COUNTS.values()) == 23703
    movies = load_task(DataSpec(task="vader-movies", **ALL))
    assert collections.Counter(e.label for e in movies.train + movies.dev) == {0: 5061, 1: 4982}


def test_vader_tampered_cache_file_is_detected_and_re_extracted_from_the_sdist(vader_cache, monkeypatch, tmp_path):
    shutil.copytree(vader_cache[0], tmp_path / "c")
    folder = use_cache(monkeypatch, tmp_path / "c")
    with (folder / datasets.VADER_FILES["movies"][0]).open("a") as f:
        f.write("\r\n99999\t3.0\tAn extra line that was never rated.")
    with pytest.raises(DataError, match="movieReviewSnippets_GroundTruth.txt: sha256 .* is not the pinned c8293b0d"):
        load_task(DataSpec(task="vader"))
    (folder / "checksums.json").unlink()  # what the message says to do; the cached sdist is re-extracted
    assert load_task(DataSpec(task="vader")).train == vader_cache[1].train


def test_vader_from_a_folder_given_as_data_path(vader_cache, monkeypatch, tmp_path):
    use_cache(monkeypatch, tmp_path / "empty-cache")
    name = datasets.VADER_FILES["tweets"][0]
    shutil.copy(vader_cache[0] / "vader" / name, tmp_path / name)
    task = load_task(DataSpec(task="vader-tweets", path=str(tmp_path), max_train=None, max_eval=None))
    assert len(task.train) + len(task.dev) == VADER_COUNTS["vader-tweets"][0]
    with pytest.raises(DataError, match="amazonReviewSnippets_GroundTruth.txt: sha256 missing"):
        load_task(DataSpec(task="vader-amazon", path=str(tmp_path)))
    assert not (tmp_path / "empty-cache").exists()  # nothing was fetched


def test_vader_sdist_with_the_wrong_checksum_is_rejected(monkeypatch, tmp_path):
    folder = use_cache(monkeypatch, tmp_path)
    folder.mkdir()
    (folder / datasets.VADER_SDIST).write_bytes(b"not the sdist")
    with pytest.raises(DataError, match="is not the pinned 5d7c06e0"):
        load_task(DataSpec(task="vader"))


def test_vader_offline_first_use_says_what_to_run_by_hand(monkeypatch, tmp_path):
    use_cache(monkeypatch, tmp_path)
    with pytest.raises(DataError, match=r"cannot download .* pip download .* copy vaderSentiment-3.3.2.tar.gz into"):
        load_task(DataSpec(task="vader-tweets"))


# ---------------------------------------------------------------------------------------------
# Label kinds: explicit, inferred by the stated rule, and refused when the labels do not fit


def write_labels(folder: Path, labels: list) -> DataSpec:
    """train.tsv with these labels, dev.tsv with the first two."""
    for name, split in (("train", labels), ("dev", labels[:2])):
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{v}\n" for i, v in enumerate(split)))
    return DataSpec(task="file", path=str(folder))


def test_a_numeric_label_column_with_one_stray_value_names_the_file_row_and_value(tmp_path):
    labels = [i % 2 for i in range(30)]
    labels[6] = "n/a"
    with pytest.raises(DataError, match=r"train\.tsv row 7: label 'n/a' is not a number but most labels are numbers"):
        load_task(write_labels(tmp_path, labels))


def test_mixed_label_types_are_refused(tmp_path):
    rows = [{"sentence": f"s{i}", "label": y} for i, y in enumerate([1, "positive", True, "negative"])]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl row 1: label '1' is a number but most labels are names"):
        load_task(DataSpec(task="file", path=str(tmp_path / "d.jsonl")))


def test_a_single_numeric_class_is_refused(tmp_path):
    with pytest.raises(DataError, match="every label is '1'; a classification task needs two or more"):
        load_task(write_labels(tmp_path, ["1", "1", "1"]))


@pytest.mark.parametrize("kind, labels, num_labels, expected, mapping", [
    ("regression", ["1", "0", "2"], 1, [1.0, 0.0, 2.0], None),
    ("classification", ["0.5", "1.5", "0.5"], 2, [0, 1, 0], {"0.5": 0, "1.5": 1}),
    ("classification", ["3", "1", "3"], 4, [3, 1, 3], None),
    ("auto", ["0.5", "2", "1"], 1, [0.5, 2.0, 1.0], None),
])
def test_label_kind_set_in_the_spec_overrides_the_inference(tmp_path, kind, labels, num_labels, expected, mapping):
    spec = replace(write_labels(tmp_path, labels), label_kind=kind)
    task = load_task(spec)
    assert [e.label for e in task.train] == expected and task.num_labels == num_labels
    assert task.source["labels"] == mapping


def test_regression_needs_numbers_and_auto_refuses_a_hundred_odd_classes(tmp_path):
    with pytest.raises(DataError, match=r"train\.tsv row 1: label 'pos' is not a number; data.label_kind='regression'"):
        load_task(replace(write_labels(tmp_path, ["pos", "neg", "pos"]), label_kind="regression"))
    scores = [str(i) for i in range(150)]
    with pytest.raises(DataError, match="150 classes from the labels; set data.label_kind"):
        load_task(write_labels(tmp_path, scores))
    assert load_task(replace(write_labels(tmp_path, scores), label_kind="classification")).num_labels == 150
    assert load_task(replace(write_labels(tmp_path, scores), label_kind="regression")).num_labels == 1


def test_glue_and_vader_keep_their_known_label_kinds(tmp_path):
    assert load_task(DataSpec(task="glue:STS-B", path=str(FIXTURE_GLUE), label_kind="regression")).num_labels == 1
    with pytest.raises(SpecError, match="data.label_kind='classification': glue:STS-B is a regression task"):
        load_task(DataSpec(task="glue:STS-B", path=str(FIXTURE_GLUE), label_kind="classification"))
    with pytest.raises(SpecError, match="glue:SST-2 is a classification task"):
        load_task(DataSpec(task="glue:SST-2", path=str(FIXTURE_GLUE), label_kind="regression"))
    with pytest.raises(SpecError, match="vader is a classification task"):
        load_task(DataSpec(task="vader", label_kind="regression"))
    with pytest.raises(SpecError, match="data.label_kind='ordinal'"):
        DataSpec(label_kind="ordinal")
    shutil.copytree(FIXTURE_GLUE / "STS-B", tmp_path / "STS-B")
    dev = tmp_path / "STS-B" / "dev.tsv"
    lines = dev.read_text().splitlines()
    dev.write_text("\n".join(lines[:-1] + ["\t".join(lines[-1].split("\t")[:-1] + ["n/a"])]) + "\n")
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv row \d+: label 'n/a' is not a number"):
        load_task(DataSpec(task="glue:STS-B", path=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# Files that are not UTF-8; which code reads files


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.tsv"])
def test_a_data_file_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, name):
    sep = {"d.csv": ",", "d.tsv": "\t"}.get(name)
    text = ('{"sentence": "caf\xe9", "label": 1}\n' if sep is None else f"sentence{sep}label\ncaf\xe9{sep}1\n")
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{name}: not UTF-8 text") as err:
        load_task(DataSpec(task="file", path=str(tmp_path / name)))
    assert "\n" not in str(err.value)


def test_data_errors_are_one_class_raised_by_store_and_train():
    from lowrank_lab.errors import is_user_error

    assert DataError is datasets.DataError
    assert is_user_error(datasets.DataError("x"))
