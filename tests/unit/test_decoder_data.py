"""Decoder data: completion files, E2E in microsoft/LoRA's format, classification tasks as label words,
and tokenisation with the prompt masked (a tiny word-level tokenizer built here, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.train.completion import E2E_SPLIT_NOTE, E2E_TEMPLATE, as_completion
from lowrank_lab.train.data import CompletionExample, DataError, Example, Task, label_word_class, load_task
from lowrank_lab.train.tokenize import IGNORE, encode_completions, encode_prompts

FIXTURE_GLUE = Path(__file__).parents[1] / "fixtures" / "data" / "glue"
ALL = {"max_train": None, "max_eval": None}


def completion_spec(path, **kwargs) -> DataSpec:
    return DataSpec(task="file", path=str(path), prompt_column="prompt", completion_column="completion",
                    **{**ALL, **kwargs})


# ---------------------------------------------------------------------------------------------
# Task kinds


def test_task_kind_defaults_follow_num_labels_and_encoder_tasks_are_unchanged():
    assert Task("t", (), (), 2, ("accuracy",), "accuracy", {}).kind == "classification"
    assert Task("t", (), (), 1, ("pearson",), "pearson", {}).kind == "regression"
    assert CompletionExample("p", " c").references == ()
    task = load_task(DataSpec(task="glue:SST-2", path=str(FIXTURE_GLUE), **ALL))
    assert task.kind == "classification" and not task.causal and isinstance(task.train[0], Example)
    with pytest.raises(ValueError, match="Task.kind='chat'"):
        Task("t", (), (), 0, ("bleu",), "bleu", {}, kind="chat")


# ---------------------------------------------------------------------------------------------
# Prompt/completion files


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_completion_file_in_each_format_keeps_text_as_written(tmp_path, suffix):
    rows = [(f"Q{i}: what is {i}+{i}?", f" {2 * i}") for i in range(10)]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    else:
        sep = "," if suffix == ".csv" else "\t"
        path.write_text(f"prompt{sep}completion\n" + "".join(f'"{p}"{sep}"{c}"\n' if sep == "," else f"{p}\t{c}\n"
                                                             for p, c in rows))
    task = load_task(completion_spec(path), causal=True)
    assert (task.kind, task.label_words, task.metrics) == ("completion", (), ("completion_loss", "perplexity"))
    assert set(task.train) | set(task.dev) == {CompletionExample(p, c) for p, c in rows}
    assert (len(task.train), len(task.dev)) == (8, 2) and task.source["split"].startswith("dev = the 20%")


def test_completion_folder_with_dev_file_and_caps(tmp_path):
    for split, n in (("train", 30), ("dev", 12)):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps({"p": f"{split} {i}", "c": f" {i}"}) + "\n" for i in range(n)))
    spec = DataSpec(task="file", path=str(tmp_path), prompt_column="p", completion_column="c", max_train=7, max_eval=5)
    task = load_task(spec, causal=True)
    assert (len(task.train), len(task.dev), task.source["split"]) == (7, 5, "as given")
    assert task.source["rows"] == {"train": 30, "dev": 12} and task.source["counts"] == {"train": 7, "dev": 5}
    assert load_task(spec, causal=True) == task  # deterministic caps
    assert all(e.prompt.startswith("train") for e in task.train)


@pytest.mark.parametrize("content,message", [
    ("prompt,answer\nhi, there\n", r"data.csv: no column 'completion'; columns present: \['prompt', 'answer'\]"),
    ("prompt,completion\nhi,there\n ,x\n", r"data.csv row 2: empty prompt in column 'prompt'"),
    ("prompt,completion\nhi,there\nyo,\n", r"data.csv row 2: empty completion in column 'completion'"),
])
def test_completion_file_errors_name_file_row_and_column(tmp_path, content, message):
    (tmp_path / "data.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        load_task(completion_spec(tmp_path / "data.csv"), causal=True)


def test_completion_file_not_utf8_and_spec_errors(tmp_path):
    (tmp_path / "data.csv").write_bytes("prompt,completion\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="data.csv: not UTF-8"):
        load_task(completion_spec(tmp_path / "data.csv"), causal=True)
    with pytest.raises(SpecError, match="data.prompt_column is set alone"):
        DataSpec(task="file", prompt_column="prompt")
    with pytest.raises(SpecError, match="completion task: it needs a decoder"):
        load_task(completion_spec(tmp_path / "data.csv"))


# ---------------------------------------------------------------------------------------------
# E2E


MRS = ["name : Alimentum | area : city centre", "name : Aromi | eatType : pub", "name : Cotto | food : Thai"]


def write_e2e(folder: Path, splits=("valid", "test"), refs: int = 3) -> Path:
    folder.mkdir(exist_ok=True)
    for split in splits:
        lines = [f"{mr}||{split} reference {j} for {mr.split(' : ')[1].split(' |')[0]} . \n"
                 for mr in MRS for j in range(refs)]
        (folder / f"{split}.txt").write_text("".join(lines))
    return folder


def test_e2e_without_train_trains_on_valid_evaluates_on_test_grouped_by_mr(tmp_path):
    task = load_task(DataSpec(task="e2e", path=str(write_e2e(tmp_path / "e2e")), **ALL), causal=True)
    assert task.kind == "generation" and task.metrics[:5] == ("bleu", "nist", "meteor", "rouge_l", "cider") and task.main_metric == "bleu"
    assert task.source["split_note"] == E2E_SPLIT_NOTE == "trained on validation, evaluated on test (no train split)"
    assert task.source["files"]["train"]["path"].endswith("valid.txt")
    assert len(task.train) == 9 and len(task.dev) == 3  # each reference its own training example; one per MR
    first = task.train[0]
    assert first == CompletionExample(E2E_TEMPLATE.format(mr=MRS[0]), " valid reference 0 for Alimentum .")
    assert task.dev[1].prompt == f"Meaning representation: {MRS[1]}\nSentence:"
    assert task.dev[1].references == tuple(f"test reference {j} for Aromi ." for j in range(3))
    assert task.dev[1].completion == " " + task.dev[1].references[0]


def test_e2e_with_train_uses_valid_as_dev_and_caps_count_references_and_mrs(tmp_path):
    folder = write_e2e(tmp_path / "e2e", ("train", "valid", "test"))
    task = load_task(DataSpec(task="e2e", path=str(folder), max_train=4, max_eval=2), causal=True)
    assert "split_note" not in task.source and task.source["split"] == "train = train.txt, dev = valid.txt"
    assert (len(task.train), len(task.dev)) == (4, 2) and task.source["rows"] == {"train": 9, "dev": 3}
    assert all(len(e.references) == 3 for e in task.dev)


def test_e2e_errors(tmp_path):
    with pytest.raises(SpecError, match="data.task='e2e' needs data.path"):
        load_task(DataSpec(task="e2e"), causal=True)
    with pytest.raises(SpecError, match="data.task='e2e' is a generation task: it needs a decoder"):
        load_task(DataSpec(task="e2e", path=str(tmp_path)))
    with pytest.raises(DataError, match="need two of train.txt, valid.txt, test.txt"):
        load_task(DataSpec(task="e2e", path=str(tmp_path)), causal=True)
    write_e2e(tmp_path)
    (tmp_path / "test.txt").write_text(f"{MRS[0]}||fine . \n{MRS[1]} no separator\n")
    with pytest.raises(DataError, match=r"test.txt line 2: no '\|\|' between meaning representation and reference"):
        load_task(DataSpec(task="e2e", path=str(tmp_path)), causal=True)
    (tmp_path / "test.txt").write_text(f"{MRS[0]}||  \n")
    with pytest.raises(DataError, match="test.txt line 1: empty reference"):
        load_task(DataSpec(task="e2e", path=str(tmp_path)), causal=True)
    (tmp_path / "test.txt").write_bytes(f"{MRS[0]}||caf\xe9 . \n".encode("latin-1"))
    with pytest.raises(DataError, match="test.txt: not UTF-8"):
        load_task(DataSpec(task="e2e", path=str(tmp_path)), causal=True)


@pytest.mark.skipif(not (Path(__file__).parents[2] / ".." / "shared" / "data" / "e2e" / "valid.txt").exists(),
                    reason="the shared E2E copy is not beside this clone")
def test_e2e_shared_copy_has_the_official_counts():
    path = (Path(__file__).parents[2] / ".." / "shared" / "data" / "e2e").resolve()
    task = load_task(DataSpec(task="e2e", path=str(path), **ALL), causal=True)
    assert task.source["rows"] == {"train": 4672, "dev": 630}  # 4,672 dev references; 630 test MRs
    assert sum(len(e.references) for e in task.dev) == 4693


# ---------------------------------------------------------------------------------------------
# Classification tasks as label words


@pytest.mark.parametrize("name,words", [
    ("SST-2", (" negative", " positive")), ("CoLA", (" no", " yes")), ("RTE", (" yes", " no")),
    ("MRPC", (" no", " yes")), ("QNLI", (" yes", " no")), ("MNLI", (" yes", " maybe", " no"))])
def test_glue_tasks_for_a_decoder_are_label_words_of_the_same_examples(name, words):
    spec = DataSpec(task=f"glue:{name}", path=str(FIXTURE_GLUE), **ALL)
    encoder, decoder = load_task(spec), load_task(spec, causal=True)
    assert (decoder.kind, decoder.label_words, decoder.num_labels) == ("completion", words, len(words))
    assert decoder.metrics == encoder.metrics + ("completion_loss", "perplexity")
    assert decoder.main_metric == encoder.main_metric
    for e, c in zip(encoder.train + encoder.dev, decoder.train + decoder.dev):
        assert c.completion == words[e.label] and e.text in c.prompt and c.prompt.endswith(":")
        assert e.text_pair is None or e.text_pair in c.prompt
        assert label_word_class(words, c.completion) == e.label
    assert decoder.source["format"]["label_words"] == list(words)


def test_vader_template_and_generic_labelled_file(tmp_path):
    vader = Task("vader-tweets", (Example("so good", None, 1),), (Example("awful", None, 0),), 2, ("accuracy",),
                 "accuracy", {"labels": {"negative": 0, "positive": 1}})
    assert as_completion(vader).dev == (CompletionExample("Review: awful\nSentiment:", " negative"),)
    (tmp_path / "data.csv").write_text("sentence,label\n" + "".join(f"s{i},{'ham' if i % 2 else 'spam'}\n"
                                                                 for i in range(10)))
    task = load_task(DataSpec(task="file", path=str(tmp_path / "data.csv")), causal=True)
    assert task.label_words == (" ham", " spam")
    assert task.train[0] == CompletionExample("Text: s0\nLabel:", " spam")
    assert as_completion(task) is task


def test_regression_is_refused_for_decoders_and_label_word_class():
    with pytest.raises(SpecError, match="data.task='glue:STS-B' is a regression task"):
        load_task(DataSpec(task="glue:STS-B", path=str(FIXTURE_GLUE)), causal=True)
    regression = Task("file", (Example("a", None, 0.5),), (), 1, ("pearson",), "pearson", {})
    with pytest.raises(SpecError, match="regression task"):
        as_completion(regression)
    assert [label_word_class((" no", " yes"), t) for t in ("yes", " no\n", "Yes", "")] == [1, 0, -1, -1]


# ---------------------------------------------------------------------------------------------
# Tokenisation


WORDS = "<pad> <eos> <bos> <unk> review good bad film sentiment : positive negative a b c d e f".split()


def tiny_tokenizer(bos: bool = True):
    """A word-level tokenizer (split on whitespace); with ``bos`` it adds <bos> in front, as Llama's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>",
                                   unk_token="<unk>")


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


def test_completion_encoding_masks_the_prompt_and_the_padding():
    examples = [CompletionExample("review : good film sentiment :", " positive"),
                CompletionExample("bad", " negative a")]
    out = encode_completions(tiny_tokenizer(), examples, max_length=32)
    eos, bos = 1, 2
    first = [bos, *ids("review : good film sentiment :"), *ids("positive"), eos]
    second = [bos, *ids("bad negative a"), eos]
    assert out.lengths.tolist() == [9, 5] and (out.truncated, out.dropped) == (0, ())
    assert out.input_ids.tolist() == [first, second + [0] * 4]
    assert out.labels.tolist() == [[IGNORE] * 7 + first[7:], [IGNORE] * 2 + second[2:] + [IGNORE] * 4]
    inputs, labels = out.batch(torch.tensor([1]))
    assert inputs["input_ids"].tolist() == [second] and inputs["attention_mask"].tolist() == [[1] * 5]
    assert labels.tolist() == [[IGNORE, IGNORE, *second[2:]]]


def test_long_prompts_lose_their_left_end_and_long_completions_are_an_error():
    example = CompletionExample("a b c d e f", " positive")
    out = encode_completions(tiny_tokenizer(), [example], max_length=5)  # bos + 2 prompt + positive + eos
    assert out.input_ids.tolist() == [[2, *ids("e f positive"), 1]] and out.truncated == 1
    plain = encode_completions(tiny_tokenizer(bos=False), [example], max_length=4)
    assert plain.input_ids.tolist() == [[*ids("e f positive"), 1]]
    long = [example, CompletionExample("a", " a b c d e f")]
    with pytest.raises(DataError, match=r"model.max_length=5: 1 of 2 completions .* \(first: example 2\)"):
        encode_completions(tiny_tokenizer(), long, max_length=5)
    kept = encode_completions(tiny_tokenizer(), long, max_length=5, drop_long=True)
    assert len(kept) == 1 and kept.dropped == (1,)


def test_prompt_encoding_is_left_padded_for_generation():
    out = encode_prompts(tiny_tokenizer(), ["review : good", "bad", "a b c d e f"], max_length=4)
    assert out.lengths.tolist() == [4, 2, 4] and out.truncated == 1
    assert out.input_ids.tolist() == [[2, *ids("review : good")], [0, 0, 2, *ids("bad")], [2, *ids("d e f")]]
    inputs = out.batch(torch.tensor([1]))
    assert inputs["input_ids"].tolist() == [[2, *ids("bad")]] and inputs["attention_mask"].tolist() == [[1, 1]]
    both = out.batch(torch.tensor([0, 1]))
    assert both["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_a_tokenizer_without_eos_is_an_error():
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(DataError, match="no eos token"):
        encode_completions(tokenizer, [CompletionExample("a", " b")], max_length=8)
