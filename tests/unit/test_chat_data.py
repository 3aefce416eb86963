"""Chat and instruction data (issue 30): read through Hugging Face datasets from local files offline,
rendered by the tokenizer's chat template with the loss on assistant turns only (checked token by
token on a word-level tokenizer with a template), and every bad input refused with one line naming
the file, split, column or key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.train.chat import INSTRUCTION_TEMPLATE, render_task, segments
from lowrank_lab.train.data import DataError, load_task
from lowrank_lab.train.examples import ChatExample
from lowrank_lab.train.tokenize import IGNORE, encode_completions, encode_prompts

NUMBERS = [str(n) for n in range(21)]
CHAT_WORDS = ["<pad>", "<end>", "<unk>", "<system>", "<user>", "<assistant>", "###", "Instruction:", "Response:",
              "what", "is", "plus", "and", "the", "answer", "be", "brief", *NUMBERS]
# <role> content <end>, one turn after another; the generation prompt opens the assistant's turn.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' <end> ' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}")
ALL = {"max_train": None, "max_eval": None}


def chat_tokenizer(template: str | None = CHAT_TEMPLATE):
    """Word-level (whitespace) tokenizer, eos = <end>, with `template` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(CHAT_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<end>", pad_token="<pad>", unk_token="<unk>")
    out.chat_template = template
    return out


def word_ids(text: str) -> list[int]:
    return [CHAT_WORDS.index(w) for w in text.split()]


def sums(n: int) -> list[dict]:
    """n rows of arithmetic in messages form: what is a plus b → the answer is a+b (a + b ≤ 20)."""
    rows = []
    for i in range(n):
        a, b = i % 11, (3 * i) % 10
        rows.append({"messages": [{"role": "user", "content": f"what is {a} plus {b}"},
                                  {"role": "assistant", "content": f"the answer is {a + b}"}]})
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_assistant_turns_are_the_only_labels_token_by_token():
    tokenizer = chat_tokenizer()
    example = ChatExample((("system", "be brief"), ("user", "what is 2 plus 2"), ("assistant", "4"),
                           ("user", "and 3"), ("assistant", "the answer is 5")), "t row 1")
    pieces = segments(tokenizer, example)
    assert "".join(text for text, _ in pieces) == tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in example.messages], tokenize=False)
    assert [text for text, trained in pieces if trained] == ["4 <end>", "the answer is 5 <end>"]
    task = render_task(_task([example]), tokenizer)
    batch = encode_completions(tokenizer, task.train, max_length=64)
    prompt1 = "<system> be brief <end> <user> what is 2 plus 2 <end> <assistant>"
    prompt2 = "<user> and 3 <end> <assistant>"
    expected_ids = word_ids(f"{prompt1} 4 <end> {prompt2} the answer is 5 <end>")
    expected_labels = ([IGNORE] * len(prompt1.split()) + word_ids("4 <end>") + [IGNORE] * len(prompt2.split())
                       + word_ids("the answer is 5 <end>"))
    assert batch.input_ids[0].tolist() == expected_ids and batch.labels[0].tolist() == expected_labels
    # generation starts where the last answer's tokens start in training
    prompts = encode_prompts(tokenizer, [task.train[0].prompt], 64, special_tokens=False)
    assert prompts.input_ids[0].tolist() == expected_ids[:-len(word_ids("the answer is 5 <end>"))]
    assert task.train[0].references == ("the answer is 5",)


def test_a_long_chat_loses_its_left_end_and_keeps_its_last_answer():
    tokenizer = chat_tokenizer()
    example = ChatExample((("user", "what is 2 plus 2"), ("assistant", "4"), ("user", "and 3"),
                           ("assistant", "the answer is 5")), "t row 1")
    task = render_task(_task([example]), tokenizer)
    batch = encode_completions(tokenizer, task.train, max_length=8)
    assert batch.truncated == 1 and batch.input_ids[0].tolist() == word_ids("3 <end> <assistant> the answer is 5 <end>")
    assert batch.labels[0].tolist() == [IGNORE] * 3 + word_ids("the answer is 5 <end>")
    with pytest.raises(DataError, match="model.max_length=4"):
        encode_completions(tokenizer, task.train, max_length=4)


def _task(examples, name="chat"):
    from lowrank_lab.train.examples import Task

    return Task(name, tuple(examples), tuple(examples), 0, ("completion_loss", "perplexity"), "completion_loss", {},
                kind="completion")


def test_chat_parquet_through_datasets_with_split_caps_and_metrics(tmp_path):
    path = write_parquet(tmp_path / "chat.parquet", sums(30))
    task = load_task(DataSpec(task="chat", path=str(path), **ALL), causal=True)
    assert (task.kind, task.metrics, len(task.train), len(task.dev)) == ("completion", ("completion_loss", "perplexity"), 24, 6)
    assert task.source["data"]["sha256"] and task.source["split"].startswith("dev = the 20%")
    assert task.train[0].messages == (("user", "what is 0 plus 0"), ("assistant", "the answer is 0"))
    scored = load_task(DataSpec(task="chat", path=str(path), metrics=("exact_match",), max_train=5, max_eval=3),
                       causal=True)
    assert (scored.kind, scored.main_metric, len(scored.train), len(scored.dev)) == ("generation", "exact_match", 5, 3)


def test_folder_with_splits_jsonl_and_eval_split(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split, rows in (("train", sums(12)), ("test", sums(5))):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(DataSpec(task="chat", path=str(folder), eval_split="test", **ALL), causal=True)
    assert (len(task.train), len(task.dev)) == (12, 5) and task.source["split"] == "train = split 'train', dev = split 'test'"
    with pytest.raises(DataError, match=r"data: no split 'validation' \(data.eval_split\); its splits: train, test"):
        load_task(DataSpec(task="chat", path=str(folder), eval_split="validation"), causal=True)
    with pytest.raises(DataError, match=r"no split 'dev' \(data.split\)"):
        load_task(DataSpec(task="chat", path=str(folder), split="dev"), causal=True)


def test_instruction_rows_with_and_without_input_and_the_fallback_template(tmp_path):
    rows = [{"instruction": f"what is {i} plus 1", "input": "be brief" if i % 2 else "", "output": f"{i + 1}"}
            for i in range(10)]
    path = tmp_path / "alpaca.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    task = load_task(DataSpec(task="instruction", path=str(path), **ALL), causal=True)
    users = {e.messages[0][1] for e in task.train + task.dev}
    assert "what is 1 plus 1\n\nbe brief" in users and "what is 0 plus 1" in users
    rendered = render_task(task, chat_tokenizer(template=None))
    assert rendered.source["format"]["template"] == INSTRUCTION_TEMPLATE
    example = next(e for e in rendered.train + rendered.dev if e.references == ("2",))
    assert example.prompt == "### Instruction:\nwhat is 1 plus 1\n\nbe brief\n\n### Response:\n"
    assert example.completion == "2<end>"
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"what is {i} plus 2", "answer": f"#### {i + 2}"}) + "\n"
                           for i in range(5)))
    spec = DataSpec(task="instruction", path=str(gsm), instruction_column="question", output_column="answer",
                    metrics=("exact_match",), **ALL)
    assert load_task(spec, causal=True).dev[0].messages[1][1].startswith("#### ")


@pytest.mark.parametrize("messages,message", [
    ("not a list", r"chat.jsonl\[train\] row 2: column 'messages' is not a list of turns"),
    ([{"role": "user"}], r"row 2: column 'messages' turn 1 is not a \{'role', 'content'\} mapping"),
    ([{"role": "robot", "content": "hi"}], r"row 2: column 'messages' turn 1: role 'robot' is not one of system"),
    ([{"role": "user", "content": " "}], r"row 2: column 'messages' turn 1: empty content"),
    ([{"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3"}],
     r"row 2: column 'messages': the last turn is the user's; it must be the assistant's"),
])
def test_malformed_turns_are_refused_naming_row_and_column(tmp_path, messages, message):
    path = tmp_path / "chat.jsonl"
    rows = [sums(1)[0], {"messages": messages}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message):
        load_task(DataSpec(task="chat", path=str(path)), causal=True)


def test_missing_columns_templates_and_keys_are_refused(tmp_path):
    path = write_parquet(tmp_path / "chat.parquet", sums(6))
    with pytest.raises(DataError, match=r"chat.parquet\[train\]: no column 'turns' \(data.messages_column\)"):
        load_task(DataSpec(task="chat", path=str(path), messages_column="turns"), causal=True)
    with pytest.raises(DataError, match=r"no column 'instruction' \(data.instruction_column\)"):
        load_task(DataSpec(task="instruction", path=str(path)), causal=True)
    task = load_task(DataSpec(task="chat", path=str(path), **ALL), causal=True)
    with pytest.raises(DataError, match="has no chat template; data.task='chat' renders turns with it"):
        render_task(task, chat_tokenizer(template=None))
    refusing = "{% for m in messages %}{% if m['role'] == 'user' %}{{ raise_exception('no users') }}{% endif %}{% endfor %}"
    with pytest.raises(DataError, match=r"chat.parquet\[train\] row 1: the chat template fails on this conversation"):
        render_task(task, chat_tokenizer(template=refusing))
    rewriting = "{{ messages | length }} {% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(DataError, match="does not render this conversation turn by turn"):
        render_task(task, chat_tokenizer(template=rewriting))
    with pytest.raises(SpecError, match=r"data.metrics=\['bleu'\]: data.task='vader' has no reference texts"):
        load_task(DataSpec(task="vader", metrics=("bleu",)), causal=True)
    with pytest.raises(SpecError, match="data.task='chat' needs data.path"):
        load_task(DataSpec(task="chat"), causal=True)
    with pytest.raises(SpecError, match="data.task='chat' is a chat task: it needs a decoder"):
        load_task(DataSpec(task="chat", path=str(path)))
    with pytest.raises(SpecError, match="data.metrics: 'accuracy' is not one of exact_match"):
        DataSpec(metrics=("accuracy",))
    with pytest.raises(DataError, match=r"data.path='.*nope.parquet': no such file or folder"):
        load_task(DataSpec(task="chat", path=str(tmp_path / "nope.parquet")), causal=True)


OFFLINE_SCRIPT = """
import sys
from lowrank_lab.spec import DataSpec
from lowrank_lab.train.data import DataError, load_task
task = load_task(DataSpec(task="chat", path=sys.argv[1], max_train=None, max_eval=None), causal=True)
print("local", len(task.train), len(task.dev))
try:
    load_task(DataSpec(task="chat", path="someone/chat-data"), causal=True)
except DataError as err:
    print("hub", err)
"""


def test_local_files_work_offline_and_hub_ids_fail_in_one_line(tmp_path):
    path = write_parquet(tmp_path / "chat.parquet", sums(10))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "local 8 2" and len(lines) == 2
    assert lines[1].startswith("hub data.path='someone/chat-data': not a local file or folder, and the hub dataset "
                               "cannot be loaded (HF_DATASETS_OFFLINE is set)")
