"""A rank sweep end to end on a tiny BERT: cells written once, reruns skip, kills resume,
two processes share one sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lowrank_lab.store import files
from lowrank_lab.store import runs
from lowrank_lab.spec import load_spec
from lowrank_lab.train.sweep import run_sweep


def _overrides(tiny_bert, tiny_task, out, **extra):
    values = {"model.name": f'"{tiny_bert}"', "model.pooling": "mean", "data.task": "file",
              "data.path": f'"{tiny_task}"', "sweep.out_dir": f'"{out}"', "sweep.r": "[1,4]",
              "sweep.seeds": "[0,1]", "train.batch_size": 8, "sweep.lr": "[1e-2]", "train.device": "cpu",
              "sweep.alpha": "[4.0]", **extra}
    return [f"{k}={v}" for k, v in values.items()]


def _factors(sweep: Path) -> dict[str, torch.Tensor]:
    out = {}
    for run in runs.load_sweep(sweep):
        for label, u in run.updates.items():
            out[f"{run.spec.name}/{label}/A"], out[f"{run.spec.name}/{label}/B"] = u.A, u.B
    return out


def _cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "lowrank_lab", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_sweep_writes_every_cell_once_and_a_rerun_skips_them(tiny_bert, tiny_task, tmp_path):
    spec = load_spec(None, _overrides(tiny_bert, tiny_task, tmp_path, **{"sweep.baselines": '["bitfit"]'}))
    sweep = run_sweep(spec, echo=lambda *_: None)
    manifest = files.read_json(sweep / "manifest.json")
    assert len(manifest["cells"]) == 6 and all(e["status"] == "done" for e in manifest["cells"].values())
    loaded = runs.load_sweep(sweep)
    assert all(u.B.abs().max() > 0 for r in loaded for u in r.updates.values())
    mtimes = {p: p.stat().st_mtime_ns for p in sweep.rglob("summary.json")}
    messages = []
    run_sweep(spec, echo=messages.append)
    assert "6 already done" in messages[0]
    assert mtimes == {p: p.stat().st_mtime_ns for p in sweep.rglob("summary.json")}


def test_a_sweep_killed_mid_cell_resumes_and_ends_as_if_never_stopped(tiny_bert, tiny_task, tmp_path):
    extra = {"train.epochs": 40, "train.checkpoint_every": 3}
    reference = run_sweep(load_spec(None, _overrides(tiny_bert, tiny_task, tmp_path / "ref", **extra)),
                          echo=lambda *_: None)
    args = ["rank-sweep", *[x for o in _overrides(tiny_bert, tiny_task, tmp_path / "killed", **extra)
                            for x in ("--set", o)]]
    proc = _cli(args)
    sweep = tmp_path / "killed" / "default"
    deadline = time.time() + 120
    while not list(sweep.glob("packs/*/state.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (sweep / "cells").exists() or not list(sweep.rglob("summary.json"))
    resumed = _cli(args)
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out
    summaries = [json.loads(p.read_text()) for p in sweep.rglob("summary.json")]
    assert len(summaries) == 4 and all(s["pack"]["resumed_at_step"] > 0 for s in summaries)
    ours, theirs = _factors(sweep), _factors(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_share_one_sweep_with_gloo(tiny_bert, tiny_task, tmp_path):
    args = ["--nproc-per-node", "2", "-m", "lowrank_lab", "rank-sweep",
            *[x for o in _overrides(tiny_bert, tiny_task, tmp_path, **{"sweep.pack": 1}) for x in ("--set", o)]]
    env = {**os.environ, "MASTER_PORT": "29517"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--master-port", "29517", *args[0:]],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep = tmp_path / "default"
    manifest = files.read_json(sweep / "manifest.json")
    assert sorted(manifest["cells"]) == sorted(p.name for p in (sweep / "cells").iterdir())
    assert all(e["status"] == "done" for e in manifest["cells"].values()) and len(manifest["cells"]) == 4
    ranks = [json.loads(p.read_text())["pack"]["rank"] for p in sweep.rglob("summary.json")]
    assert sorted(ranks) == [0, 0, 1, 1]


def test_data_parallel_over_two_processes_equals_one_process(tiny_bert, tiny_task, tmp_path):
    extra = {"sweep.pack": 2, "sweep.r": "[2]", "train.epochs": 3}
    reference = run_sweep(load_spec(None, _overrides(tiny_bert, tiny_task, tmp_path / "one", **extra)),
                          echo=lambda *_: None)
    args = ["-m", "lowrank_lab", "rank-sweep",
            *[x for o in _overrides(tiny_bert, tiny_task, tmp_path / "two", **extra, **{"sweep.data_parallel": "true"})
              for x in ("--set", o)]]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29518", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep = tmp_path / "two" / "default"
    summaries = [json.loads(p.read_text()) for p in sweep.rglob("summary.json")]
    assert len(summaries) == 2 and all(s["pack"]["data_parallel_processes"] == 2 for s in summaries)
    ours, theirs = _factors(sweep), _factors(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)


def test_sigint_to_a_real_process_checkpoints_and_exits_130_without_aborted(tiny_bert, tiny_task, tmp_path):
    extra = {"train.epochs": 40, "sweep.seeds": "[0]", "sweep.r": "[1]"}
    args = ["rank-sweep", *[x for o in _overrides(tiny_bert, tiny_task, tmp_path, **extra) for x in ("--set", o)]]
    proc = _cli(args)
    sweep = tmp_path / "default"
    deadline = time.time() + 120
    while not list(sweep.glob("cells/*/metrics.jsonl")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the first evaluation is written: the pack is training
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130 and "Aborted" not in out, out
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    state = json.loads(next(sweep.glob("packs/*/state.json")).read_text())
    manifest = files.read_json(sweep / "manifest.json")
    assert state["step"] == step and [e["status"] for e in manifest["cells"].values()] == ["interrupted"]
