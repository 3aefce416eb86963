"""A rank sweep of a tiny Llama on a local chat-format Parquet file (issue 30): the loss on the
assistant's turns only, exact match of the last answer under greedy decoding, and TensorBoard event
files and offline W&B runs per cell that read back equal to metrics.jsonl, with the cell's spec as
hyperparameters."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from lowrank_lab.spec import load_spec
from lowrank_lab.store import layout, runs
from lowrank_lab.train.sweep import run_sweep

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_chat_data import CHAT_WORDS, chat_tokenizer, sums, write_parquet  # noqa: E402


def tiny_chat_llama(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(CHAT_WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 eos_token_id=CHAT_WORDS.index("<end>"), pad_token_id=0)).save_pretrained(folder)
    chat_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_sweep(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("chat-sweep")
    model = tiny_chat_llama(tmp / "llama")
    data = write_parquet(tmp / "chat.parquet", sums(40))
    values = {"model.name": f'"{model}"', "model.max_length": 32, "data.task": '"chat"', "data.path": f'"{data}"',
              "data.metrics": '["exact_match"]', "sweep.out_dir": f'"{tmp / "runs"}"', "sweep.r": "[2,4]",
              "sweep.targets": '["q,v"]', "train.batch_size": 4, "sweep.lr": "[2e-2]", "sweep.alpha": "[4.0]",
              "train.device": '"cpu"', "train.evals_per_epoch": 2, "train.log_every": 2,
              "train.report_to": '["tensorboard", "wandb"]'}
    return run_sweep(load_spec(None, [f"{k}={v}" for k, v in values.items()]), echo=lambda *_: None)


def test_chat_rank_sweep_trains_on_answers_and_scores_exact_match(chat_sweep):
    cells = runs.load_sweep(chat_sweep)
    assert sorted(c.spec.lora.r for c in cells) == [2, 4]
    for run in cells:
        summary = run.summary
        assert summary.status == "done" and summary.main_metric == "exact_match" and summary.task == "chat"
        assert 0.0 <= summary.best["exact_match"] <= 100.0 and summary.best["completion_loss"] > 0
        assert summary.data["format"]["loss"].startswith("assistant turns only")
        assert summary.data["data"]["format"] == "parquet" and summary.data["counts"] == {"train": 32, "dev": 8}
        assert any(float(u.B.abs().max()) > 0 for u in run.updates.values())
        history = [r for r in layout.read_metrics(run.path) if r["kind"] == "eval"]
        assert history[-1]["completion_loss"] < history[0]["completion_loss"] or len(history) == 1


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_tensorboard_events_read_back_equal_to_metrics_jsonl_with_the_spec_as_hparams(chat_sweep):
    from tensorboard.plugins.hparams import plugin_data_pb2

    for run in runs.load_sweep(chat_sweep):
        events = _events(layout.tensorboard_dir(run.path))
        logged = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
        expected = {}
        for record in layout.read_metrics(run.path):
            for key, value in record.items():
                if key not in ("kind", "step"):
                    expected[(f"{record['kind']}/{key}", record["step"])] = np.float32(value)  # TensorBoard's float32
        assert logged == expected and any(tag == "eval/exact_match" for tag, _ in logged)
        content = events.PluginTagToContent("hparams")
        start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()
                     if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
        assert start.hparams["lora.r"].number_value == run.spec.lora.r
        assert start.hparams["data.task"].string_value == "chat"


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file: after its 7-byte header, LevelDB log blocks of
    32 KiB, each record a 7-byte header (crc, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or length == kind == 0:  # the block's zero-padded tail
            pos += left
            continue
        pending = (pending if kind in (3, 4) else b"") + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)


def test_offline_wandb_runs_read_back_equal_to_metrics_jsonl_with_the_spec_as_config(chat_sweep):
    import json

    for run in runs.load_sweep(chat_sweep):
        [file] = sorted((layout.wandb_dir(run.path) / "wandb").glob("offline-run-*/run-*.wandb"))
        logged, config, name = {}, {}, None
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                logged.update({(k, items["_step"]): v for k, v in items.items() if not k.startswith("_")})
            elif kind == "run":
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
                name = record.run.display_name
        expected = {(f"{r['kind']}/{k}", r["step"]): v for r in layout.read_metrics(run.path)
                    for k, v in r.items() if k not in ("kind", "step")}
        assert logged == expected and any(tag == "eval/exact_match" for tag, _ in logged)  # float64, exactly
        assert config["lora.r"] == run.spec.lora.r and config["data.task"] == "chat" and name == run.path.name


@pytest.fixture(scope="module")
def chat_inputs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("chat-inputs")
    return tiny_chat_llama(tmp / "llama"), write_parquet(tmp / "chat.parquet", sums(10))


@pytest.mark.parametrize("sets,named", [
    (["data.messages_column=turns"], "chat.parquet[train]: no column 'turns' (data.messages_column)"),
    (["data.eval_split=validation"], "no split 'validation' (data.eval_split); its splits: train"),
    (['data.task="vader"', 'data.path=""', 'data.metrics=["bleu"]'], "data.task='vader' has no reference texts"),
    (["data.task=instruction"], "no column 'instruction' (data.instruction_column)"),
])
def test_bad_chat_input_is_one_line_exit_2_and_nothing_written(chat_inputs, tmp_path, sets, named):
    from click.testing import CliRunner

    from lowrank_lab_cli.main import cli

    model, data = chat_inputs
    out = tmp_path / "out"
    args = ["rank-sweep", "--set", f"model.name={model}", "--set", "data.task=chat", "--set", f"data.path={data}",
            "--set", f"sweep.out_dir={out}", "--set", "train.device=cpu"]
    for value in sets:
        args += ["--set", value]
    result = CliRunner().invoke(cli, args)
    last = result.output.strip().splitlines()[-1]  # the error: one line, after click's usage lines
    assert result.exit_code == 2 and last.startswith("Error: ") and named in last, result.output
    assert not out.exists()
