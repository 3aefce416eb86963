"""Decoder tasks: classification tasks as prompt → label word, prompt/completion files, and E2E NLG.

A decoder learns a task as text that follows a prompt (the paper's GPT-3 runs, §5.5; E2E on GPT-2, §5.4):

- ``as_completion(task)``: a classification task (VADER, GLUE, a labelled file) becomes a completion task
  whose prompt is the task's template (``TEMPLATES``) and whose completion is the class's label word,
  e.g. ``"Review: <text>\\nSentiment:"`` → ``" positive"``. Its metrics are the source task's own
  classification metrics on the class of the greedy completion (``examples.label_word_class``), then the
  completion loss and perplexity. Regression (STS-B) has no label words and is refused.
- ``load_completion_file(spec)``: ``data.task="file"`` with ``prompt_column`` and ``completion_column``.
- ``load_e2e(spec)``: ``data.task="e2e"``, a folder in microsoft/LoRA's format (``MR||reference`` lines).
  Prompt = ``E2E_TEMPLATE`` filled with the meaning representation as written (``name : Alimentum |
  area : city centre``), completion = ``" " + reference``. Train: every reference its own example; dev:
  one example per distinct MR (in file order) with all its references (the first is its completion, for
  the dev loss). Splits: train.txt / valid.txt (else test.txt); without train.txt, trains on valid.txt
  and evaluates on test.txt, and ``source["split_note"]`` says so. Caps: ``max_train`` counts training
  references, ``max_eval`` dev MRs, each the lowest-ranked by sha256 of the line number / the MR.
"""

from __future__ import annotations

from dataclasses import replace

from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.store.datasets import DataError, data_files, e2e_files, read_e2e, read_table, sha256_file
from lowrank_lab.train.examples import (COMPLETION_METRICS, GENERATION_METRICS, SPLIT_RULE, CompletionExample, Task,
                                        dev_indices, hold_out, lowest_ranked, table_cells)

E2E_TEMPLATE = "Meaning representation: {mr}\nSentence:"
E2E_SPLIT_NOTE = "trained on validation, evaluated on test (no train split)"

_SENTIMENT = ("Review: {text}\nSentiment:", (" negative", " positive"))
_NLI2 = " yes", " no"  # GLUE's entailment, not_entailment
# Task name → (prompt template over {text} and {pair}, label words in class-id order).
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "vader": _SENTIMENT,
    "glue:SST-2": _SENTIMENT,
    "glue:CoLA": ("Sentence: {text}\nIs this sentence grammatical?\nAnswer:", (" no", " yes")),
    "glue:MRPC": ("Sentence 1: {text}\nSentence 2: {pair}\nDo they mean the same?\nAnswer:", (" no", " yes")),
    "glue:QQP": ("Question 1: {text}\nQuestion 2: {pair}\nDo they ask the same?\nAnswer:", (" no", " yes")),
    "glue:RTE": ("Premise: {text}\nHypothesis: {pair}\nDoes the premise entail the hypothesis?\nAnswer:", _NLI2),
    "glue:QNLI": ("Question: {text}\nSentence: {pair}\nDoes the sentence answer the question?\nAnswer:", _NLI2),
    # GPT-3 on MNLI (paper §5.5): entailment, neutral, contradiction.
    "glue:MNLI": ("Premise: {text}\nHypothesis: {pair}\nDoes the premise entail the hypothesis?\nAnswer:",
                  (" yes", " maybe", " no")),
}
# Any other classification task (a labelled file): the label names (or class ids) as words.
GENERIC_TEMPLATE = ("Text: {text}\nLabel:", "Text: {text}\nSecond text: {pair}\nLabel:")


def _template(task: Task) -> tuple[str, tuple[str, ...]]:
    base = "vader" if task.name.startswith("vader") else task.name
    if base in TEMPLATES:
        return TEMPLATES[base]
    names = {i: str(i) for i in range(task.num_labels)}
    names.update({i: name for name, i in (task.source.get("labels") or {}).items()})
    paired = any(e.text_pair is not None for e in task.train)
    return GENERIC_TEMPLATE[paired], tuple(f" {names[i]}" for i in range(task.num_labels))


def as_completion(task: Task) -> Task:
    """A classification ``task`` as prompt → label word (see the module docstring); completion and
    generation tasks are returned as they are."""
    if task.causal:
        return task
    if task.kind == "regression":
        raise SpecError(f"data.task={task.name!r} is a regression task: a decoder learns classes as label "
                        "words; use a classification task or an encoder model")
    template, words = _template(task)

    def convert(examples) -> tuple[CompletionExample, ...]:
        return tuple(CompletionExample(template.format(text=e.text, pair=e.text_pair), words[e.label])
                     for e in examples)

    source = {**task.source, "format": {"kind": "completion", "template": template, "label_words": list(words)}}
    return replace(task, train=convert(task.train), dev=convert(task.dev), validation=convert(task.validation),
                   num_labels=len(words),
                   metrics=task.metrics + COMPLETION_METRICS, kind="completion", label_words=words, source=source)


def _cap(examples: list, keys: list[str], cap: int | None) -> tuple:
    return tuple(examples[i] for i in lowest_ranked(keys, cap))


def load_completion_file(spec: DataSpec) -> Task:
    """``data.task="file"`` with prompt and completion columns: a completion task (no label words)."""
    if spec.path is None:
        raise SpecError("data.task='file' needs data.path (a CSV/TSV/JSONL file or a folder with train.*)")
    columns = [spec.prompt_column, spec.completion_column]
    splits, source = {}, {"task": "file", "files": {}}
    for split, file in data_files(spec.path).items():
        if file is None:
            continue
        examples = []
        for n, cells in enumerate(table_cells(read_table(file), str(file), columns), 1):
            for column, kind in zip(columns, ("prompt", "completion")):
                if not (cells[column] or "").strip():
                    raise DataError(f"{file} row {n}: empty {kind} in column {column!r}")
            examples.append(CompletionExample(cells[spec.prompt_column], cells[spec.completion_column]))
        splits[split] = examples
        source["files"][split] = {"path": str(file), "sha256": sha256_file(file)}
    train = splits["train"]
    keys = [str(n) for n in range(1, len(train) + 1)]  # the row number, as for labelled files
    if "dev" not in splits:
        if len(train) < 2:
            raise DataError(f"{source['files']['train']['path']}: one row; need two or more to split off a dev set")
        picked = dev_indices(keys)
        splits["dev"] = [train[i] for i in sorted(picked)]
        kept = [i for i in range(len(train)) if i not in picked]
        train, keys = [train[i] for i in kept], [keys[i] for i in kept]
        source["split"] = SPLIT_RULE
    else:
        source["split"] = "as given"
    dev = splits["dev"]
    return _finish("file", _cap(train, keys, spec.max_train),
                   _cap(dev, [str(n) for n in range(1, len(dev) + 1)], spec.max_eval),
                   {"train": len(train), "dev": len(dev)}, spec, source, "completion")


def _finish(name: str, train: tuple, dev: tuple, rows: dict, spec: DataSpec, source: dict, kind: str) -> Task:
    # data.validation_size: held out of the capped training pairs, ranked by their position in them
    train, validation = hold_out(train, [str(i) for i in range(len(train))], spec.validation_size, name)
    held = {"validation_size": spec.validation_size} if spec.validation_size else {}
    source.update(rows=rows, counts={"train": len(train), "dev": len(dev), **({"validation": len(validation)} if validation else {})},
                  caps={"max_train": spec.max_train, "max_eval": spec.max_eval, **held}, labels=None)
    metrics = COMPLETION_METRICS
    if kind == "generation":  # E2E: the five NLG metrics unless data.metrics names others
        metrics = (*spec.metrics, *COMPLETION_METRICS) if spec.metrics else GENERATION_METRICS
    return Task(name, train, dev, 0, metrics, metrics[0], source, kind=kind, validation=validation)


def load_e2e(spec: DataSpec) -> Task:
    """``data.task="e2e"``: E2E NLG from a local folder in microsoft/LoRA's format (module docstring)."""
    if spec.path is None:
        raise SpecError("data.task='e2e' needs data.path: a folder with microsoft/LoRA's E2E files "
                        "(train.txt, valid.txt, test.txt)")
    files = e2e_files(spec.path)
    if "train" in files:
        use = {"train": files["train"], "dev": files.get("valid", files.get("test"))}
    else:
        use = {"train": files["valid"], "dev": files["test"]}
    source = {"task": "e2e", "files": {s: {"path": str(p), "sha256": sha256_file(p)} for s, p in use.items()},
              "split": f"train = {use['train'].name}, dev = {use['dev'].name}", "template": E2E_TEMPLATE}
    if "train" not in files:
        source["split_note"] = E2E_SPLIT_NOTE
    lines = read_e2e(use["train"])
    train = [CompletionExample(E2E_TEMPLATE.format(mr=mr), f" {ref}") for _, mr, ref in lines]
    grouped: dict[str, list[str]] = {}
    for _, mr, ref in read_e2e(use["dev"]):
        grouped.setdefault(mr, []).append(ref)
    dev = [CompletionExample(E2E_TEMPLATE.format(mr=mr), f" {refs[0]}", tuple(refs)) for mr, refs in grouped.items()]
    return _finish("e2e", _cap(train, [str(n) for n, _, _ in lines], spec.max_train),
                   _cap(dev, list(grouped), spec.max_eval), {"train": len(train), "dev": len(dev)},
                   spec, source, "generation")
