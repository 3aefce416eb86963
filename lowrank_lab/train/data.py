"""Tasks: labelled sentences (or sentence pairs) split into train and dev, with provenance and metrics.

``load_task(spec)`` turns a ``DataSpec`` into a ``Task`` of frozen ``Example``s; tokenisation and
batching belong to training, reading files to ``store.datasets``. Sources (``spec.task``):

- ``vader`` (the embedded default) = ``vader-movies``; also ``vader-tweets``, ``vader-amazon``,
  ``vader-nyt``: the VADER sentence-level ground truth (Hutto & Gilbert 2014, MIT), fetched once
  from the ``vaderSentiment==3.3.2`` sdist (see ``store.datasets``) or read from ``spec.path``.
  Binary sentiment: mean rating > 0.5 is positive (1), < -0.5 negative (0), the rest is dropped.
- ``glue:<TASK>`` (SST-2, MRPC, RTE, CoLA, STS-B, QNLI, MNLI, QQP): GLUE's own TSVs in
  ``spec.path/<TASK>/`` (train and dev; MNLI: dev matched), else the Hugging Face hub.
- ``file``: a CSV, TSV or JSONL file, or a folder with ``train.*`` and ``dev.*`` (or
  ``validation.*``, ``test.*``), with the columns named in the spec; with ``prompt_column`` and
  ``completion_column``, a completion task for decoders (``train.completion``).
- ``e2e``: E2E NLG in microsoft/LoRA's format at ``spec.path``, a generation task for decoders
  (``train.completion``: template, splits, caps).
- ``chat``, ``instruction``: conversations or instruction/input/output rows through Hugging Face
  ``datasets``, for decoders (``train.chat``: columns, splits, the chat template, assistant-only loss).

Decoders (``load_task(spec, causal=True)``) get classification tasks as prompt → label word
(``train.completion.as_completion``); the value objects and task kinds are in ``train.examples``.

Splits and caps are deterministic and independent of library versions: every row has a key (the
VADER id, else its 1-based row number) and is ranked by sha256(key). A source without a dev set
gives its lowest-ranked 20% to dev; ``max_train`` / ``max_eval`` keep the lowest-ranked N of a
split. Examples stay in source order. ``Task.source`` records files, checksums, counts, caps and
the label → id map of string labels.

Labels (``spec.label_kind``; VADER and GLUE tasks have their own kind, STS-B regression, the
others classification). All labels of a task, train and dev together, must be numbers or all be
names: a stray "n/a" in a numeric column is an error naming its file and row.

- ``regression``: every label a finite number; ``num_labels`` = 1.
- ``classification``: integers ≥ 0 are class ids as they are (``num_labels`` = largest + 1);
  other numbers in numeric order, names in sorted order, recorded in the label map. At least two
  distinct labels.
- ``auto``: regression when every label is a number and at least one has a fractional part
  (0.5, 3.75); classification otherwise, refused beyond 100 classes (a 0–1000 integer score is
  more likely a regression target: set the kind).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import pandas as pd

from lowrank_lab.spec import DataSpec, SpecError
# DataError is defined in store (which raises it first) and is the same class here.
from lowrank_lab.store.datasets import (VADER_FILES, VADER_SDIST, VADER_SDIST_SHA256, DataError, data_files,
                                        glue_files, read_table, read_vader, sha256_file)
from lowrank_lab.train.chat import CHAT_TASKS, load_chat_task
from lowrank_lab.train.completion import as_completion, load_completion_file, load_e2e
from lowrank_lab.train.examples import (DEV_FRACTION, LOWER_IS_BETTER, SPLIT_RULE, CompletionExample, Example, Task,
                                        dev_indices, hold_out, label_word_class, lowest_ranked, table_cells)

# The value objects and the decoder helpers are re-exported, so that callers need this module only.
__all__ = ["DEV_FRACTION", "GLUE_TASKS", "LOWER_IS_BETTER", "MAX_AUTO_CLASSES", "VADER_TASKS", "CompletionExample",
           "DataError", "Example", "Task", "as_completion", "label_word_class", "load_task"]
MAX_AUTO_CLASSES = 100  # label_kind="auto" refuses a classifier of more classes
DECODER_TASKS = ("e2e", *CHAT_TASKS)  # tasks with reference texts, for decoders only
VADER_TASKS = {"vader": "movies", **{f"vader-{source}": source for source in VADER_FILES}}


class _Row(NamedTuple):
    where: str  # the file (or hub split) it came from, for error messages
    row: int  # 1-based, header not counted
    key: str  # ranked by sha256 for splits and caps
    text: str
    pair: str | None
    label: str  # raw, as read; encoded once the label scheme of the whole task is known


def _rows(frame: pd.DataFrame, where: str, text: str, pair: str | None, label: str,
          keys: list[str] | None = None) -> list[_Row]:
    """Validate a table and pick its columns; every problem is a DataError naming ``where``."""
    rows = []
    for n, cells in enumerate(table_cells(frame, where, [c for c in (text, pair, label) if c is not None]), 1):
        for column in (text, pair):
            if column is not None and not (cells[column] or "").strip():
                raise DataError(f"{where} row {n}: empty text in column {column!r}")
        if not (cells[label] or "").strip():
            raise DataError(f"{where} row {n}: missing label in column {label!r}")
        key = str(n) if keys is None else keys[n - 1]
        rows.append(_Row(where, n, key, cells[text], cells[pair] if pair else None, cells[label].strip()))
    return rows


# ---------------------------------------------------------------------------------------------
# Labels, splits and caps: the same for every source


def _number(label: str) -> float | None:
    try:
        x = float(label)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _one_type(rows: list[_Row], numbers: list[float | None]) -> bool:
    """Whether the labels are numbers (else names); a label of the other type than most is an error."""
    numeric = 2 * sum(x is not None for x in numbers) >= len(numbers)
    odd = next((r for r, x in zip(rows, numbers) if (x is not None) != numeric), None)
    if odd is not None:
        kinds = ("not a number", "numbers") if numeric else ("a number", "names")
        raise DataError(f"{odd.where} row {odd.row}: label {odd.label!r} is {kinds[0]} but most labels are "
                        f"{kinds[1]}; labels must be all numbers or all names")
    return numeric


def _label_scheme(rows: list[_Row], names: tuple[str, ...] | None, kind: str,
                  where: str) -> tuple[Callable[[str], int | float], dict[str, int] | None, int]:
    """How raw label strings become targets: ``(encode, name → id map or None, num_labels)``.

    ``names`` fixes the classes in id order; otherwise ``kind`` (or, for "auto", the labels of all
    rows of the task) decides, by the rule in this module's docstring."""
    if names is not None:
        index = {name: i for i, name in enumerate(names)}
        return index.__getitem__, index, len(names)
    numbers = [_number(r.label) for r in rows]
    numeric = _one_type(rows, numbers)
    auto = kind == "auto"
    if auto:
        kind = "regression" if numeric and not all(x.is_integer() for x in numbers) else "classification"
    if kind == "regression":
        if not numeric:
            raise DataError(f"{rows[0].where} row {rows[0].row}: label {rows[0].label!r} is not a number; "
                            "data.label_kind='regression' needs numeric labels")
        return float, None, 1
    classes = sorted(set(numbers)) if numeric else sorted({r.label for r in rows})
    if len(classes) < 2:
        raise DataError(f"{where}: every label is {rows[0].label!r}; a classification task needs two or more")
    if numeric and all(x.is_integer() and x >= 0 for x in classes):
        encode, index, num_labels = (lambda v: int(float(v))), None, int(classes[-1]) + 1
    elif numeric:
        order = {x: n for n, x in enumerate(classes)}
        encode, num_labels = (lambda v: order[float(v)]), len(classes)
        index = {(str(int(x)) if x.is_integer() else str(x)): n for x, n in order.items()}
    else:
        index = {name: i for i, name in enumerate(classes)}
        encode, num_labels = index.__getitem__, len(classes)
    if auto and num_labels > MAX_AUTO_CLASSES:
        raise DataError(f"{where}: {num_labels} classes from the labels; set data.label_kind to 'classification' "
                        "if that is meant, or to 'regression'")
    return encode, index, num_labels


def _example(r: _Row, encode: Callable[[str], int | float]) -> Example:
    try:
        return Example(r.text, r.pair, encode(r.label))
    except (KeyError, ValueError):
        raise DataError(f"{r.where} row {r.row}: label {r.label!r} is not one of this task's labels") from None


def _known_kind(spec: DataSpec, name: str, kind: str) -> str:
    """A task with its own label kind (GLUE, VADER) keeps it; data.label_kind may only repeat it."""
    if spec.label_kind not in ("auto", kind):
        raise SpecError(f"data.label_kind={spec.label_kind!r}: {name} is a {kind} task")
    return kind


def _assemble(name: str, train: list[_Row], dev: list[_Row] | None, spec: DataSpec, source: dict,
              names: tuple[str, ...] | None = None, kind: str | None = None,
              metrics: tuple[str, ...] | None = None) -> Task:
    """The common tail: split off dev if there is none, encode labels, apply caps, record counts."""
    if dev is None:
        if len(train) < 2:
            raise DataError(f"{train[0].where}: one row; need two or more to split off a dev set")
        picked = dev_indices([r.key for r in train])
        train, dev = [r for i, r in enumerate(train) if i not in picked], [train[i] for i in sorted(picked)]
        source["split"] = SPLIT_RULE
    else:
        source["split"] = "as given"
    encode, index, num_labels = _label_scheme(train + dev, names, kind or spec.label_kind, train[0].where)
    splits = {}
    for split, rows, cap in (("train", train, spec.max_train), ("dev", dev, spec.max_eval)):
        examples = [_example(r, encode) for r in rows]  # all rows, so a bad label is found whatever the cap
        splits[split] = tuple(examples[i] for i in lowest_ranked([r.key for r in rows], cap))
    train_keys = [r.key for r in train]
    kept_keys = [train_keys[i] for i in lowest_ranked(train_keys, spec.max_train)]
    splits["train"], splits["validation"] = hold_out(splits["train"], kept_keys, spec.validation_size, train[0].where)
    if metrics is None:
        metrics = ("pearson", "spearman") if num_labels == 1 else ("accuracy",)
    held = {"validation_size": spec.validation_size} if spec.validation_size else {}
    source.update(rows={"train": len(train), "dev": len(dev)},
                  counts={k: len(v) for k, v in splits.items() if v or k != "validation"},
                  caps={"max_train": spec.max_train, "max_eval": spec.max_eval, **held}, labels=index)
    return Task(name, splits["train"], splits["dev"], num_labels, metrics, metrics[0], source,
                validation=splits["validation"])



# ---------------------------------------------------------------------------------------------
# VADER: binary sentiment from the mean human rating


def _load_vader(name: str, spec: DataSpec) -> Task:
    kind = _known_kind(spec, name, "classification")
    frame, path, digest = read_vader(VADER_TASKS[name], spec.path)
    rows, dropped = [], 0
    for r in _rows(frame, str(path), "text", None, "mean", keys=list(frame["id"])):
        mean = _number(r.label)
        if mean is None:
            raise DataError(f"{path} row {r.row}: mean rating {r.label!r} is not a number")
        if abs(mean) > 0.5:
            rows.append(r._replace(label="positive" if mean > 0 else "negative"))
        else:
            dropped += 1
    source = {"task": name, "files": {"train": {"path": str(path), "sha256": digest}},
              "sdist": {"name": VADER_SDIST, "sha256": VADER_SDIST_SHA256},
              "dropped": {"neutral (|mean| <= 0.5)": dropped}}
    return _assemble(name, rows, None, spec, source, names=("negative", "positive"), kind=kind)


# ---------------------------------------------------------------------------------------------
# GLUE: local TSVs in GLUE's own format, else the Hugging Face hub


@dataclass(frozen=True)
class _Glue:
    text: str  # TSV column names
    pair: str | None
    label: str
    names: tuple[str, ...] | None  # label strings in the hub's class-id order; None: regression
    metrics: tuple[str, ...]  # the first is the main one
    hub: tuple[str, str, str | None]  # nyu-mll/glue config, its text and pair columns
    columns: tuple[str, ...] | None = None  # for TSVs without a header
    hub_dev: str = "validation"  # the hub's split for GLUE's dev set


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
GLUE_TASKS = {
    "SST-2": _Glue("sentence", None, "label", _BINARY, ("accuracy",), ("sst2", "sentence", None)),
    "MRPC": _Glue("#1 String", "#2 String", "Quality", _BINARY, ("accuracy", "f1"),
                  ("mrpc", "sentence1", "sentence2")),
    "RTE": _Glue("sentence1", "sentence2", "label", _NLI, ("accuracy",), ("rte", "sentence1", "sentence2")),
    "CoLA": _Glue("sentence", None, "label", _BINARY, ("matthews",), ("cola", "sentence", None),
                  columns=("source", "label", "original_label", "sentence")),
    "STS-B": _Glue("sentence1", "sentence2", "score", None, ("pearson", "spearman"),
                   ("stsb", "sentence1", "sentence2")),
    "QNLI": _Glue("question", "sentence", "label", _NLI, ("accuracy",), ("qnli", "question", "sentence")),
    "MNLI": _Glue("sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"), ("accuracy",),
                  ("mnli", "premise", "hypothesis"), hub_dev="validation_matched"),
    "QQP": _Glue("question1", "question2", "is_duplicate", _BINARY, ("accuracy", "f1"),
                 ("qqp", "question1", "question2")),
}


def _hub_frame(task: str, fmt: _Glue, split: str) -> pd.DataFrame:
    """One split of nyu-mll/glue as a frame shaped like the local TSV (same columns, raw label strings)."""
    config, text, pair = fmt.hub
    try:
        import datasets  # optional; imported here so that nothing else needs it

        table = datasets.load_dataset("nyu-mll/glue", config, split=split).to_pandas()
    except Exception as err:  # missing package, offline, hub error: all have the same remedy
        raise DataError(f"glue:{task}: cannot load nyu-mll/glue/{config} from the hub ({type(err).__name__}); "
                        f"pass data.path pointing to a local GLUE folder holding {task}'s train and dev TSVs") from None
    frame = pd.DataFrame({fmt.text: table[text], fmt.label: table["label"]})
    if pair:
        frame[fmt.pair] = table[pair]
    frame[fmt.label] = [fmt.names[int(v)] if fmt.names else str(v) for v in frame[fmt.label]]
    return frame


def _load_glue(task: str, spec: DataSpec) -> Task:
    fmt = GLUE_TASKS[task]
    kind = _known_kind(spec, f"glue:{task}", "classification" if fmt.names else "regression")
    rows, source = {}, {"task": f"glue:{task}"}
    local = glue_files(spec.path, task) if spec.path is not None else {}
    for split, hub_split in (("train", "train"), ("dev", fmt.hub_dev)):
        if spec.path is None:
            where = f"nyu-mll/glue/{fmt.hub[0]}:{hub_split}"
            frame = _hub_frame(task, fmt, hub_split)
            source.setdefault("hub", {})[split] = where
        else:
            path = local[split]
            frame, where = read_table(path, columns=fmt.columns), str(path)
            source.setdefault("files", {})[split] = {"path": where, "sha256": sha256_file(path)}
        rows[split] = _rows(frame, where, fmt.text, fmt.pair, fmt.label)
    return _assemble(f"glue:{task}", rows["train"], rows["dev"], spec, source,
                     names=fmt.names, kind=kind, metrics=fmt.metrics)


# ---------------------------------------------------------------------------------------------
# Files: CSV, TSV or JSONL


def _load_file(spec: DataSpec) -> Task:
    if spec.path is None:
        raise SpecError("data.task='file' needs data.path (a CSV/TSV/JSONL file or a folder with train.*)")
    rows, source = {}, {"task": "file", "files": {}}
    for split, file in data_files(spec.path).items():
        if file is not None:
            rows[split] = _rows(read_table(file), str(file), spec.text_column, spec.text_pair_column,
                                spec.label_column)
            source["files"][split] = {"path": str(file), "sha256": sha256_file(file)}
    return _assemble("file", rows["train"], rows.get("dev"), spec, source)


def load_task(spec: DataSpec, causal: bool = False) -> Task:
    """The task ``spec.task`` with its train and dev examples, capped as the spec says.

    ``causal``: the model is a decoder, so a classification task comes as prompt → label word
    (``completion.as_completion``); without it, the decoder-only sources (e2e, prompt/completion files)
    are refused."""
    if not causal and (spec.task in DECODER_TASKS or (spec.task == "file" and spec.prompt_column is not None)):
        what = f"data.task={spec.task!r} is a {'generation' if spec.task == 'e2e' else spec.task} task" \
            if spec.task in DECODER_TASKS else \
            "data.prompt_column/completion_column make data.task='file' a completion task"
        raise SpecError(f"{what}: it needs a decoder model (a causal LM)")
    if spec.metrics and spec.task not in DECODER_TASKS:
        raise SpecError(f"data.metrics={list(spec.metrics)}: data.task={spec.task!r} has no reference texts to score "
                        f"generations against; text metrics are for {', '.join(DECODER_TASKS)}")
    labelled = spec.task not in DECODER_TASKS and spec.prompt_column is None
    if causal and labelled and (spec.label_kind == "regression" or spec.task.lower().replace("-", "") == "glue:stsb"):
        raise SpecError(f"data.task={spec.task!r} is a regression task: a decoder learns classes as label words; "
                        "use a classification task or an encoder model")
    task = _load_source(spec)
    if spec.validation_size and not task.validation:
        raise SpecError(f"data.validation_size: not implemented for data.task={spec.task!r}; unset it")
    return as_completion(task) if causal else task


def _load_source(spec: DataSpec) -> Task:
    task = spec.task
    if task in VADER_TASKS:
        return _load_vader(task, spec)
    if task.startswith("glue:"):
        # Accept "glue:sst2" as well as "glue:SST-2".
        canonical = {k.lower().replace("-", ""): k for k in GLUE_TASKS}.get(task[5:].lower().replace("-", ""))
        if canonical is None:
            raise SpecError(f"data.task={task!r}: GLUE tasks are {', '.join(GLUE_TASKS)}")
        return _load_glue(canonical, spec)
    if task == "file":
        return _load_file(spec) if spec.prompt_column is None else load_completion_file(spec)
    if task == "e2e":
        return load_e2e(spec)
    if task in CHAT_TASKS:
        return load_chat_task(spec)
    raise SpecError(f"data.task={task!r}: use vader, vader-<{'|'.join(VADER_FILES)}>, glue:<TASK>, file, e2e, "
                    "chat or instruction")
