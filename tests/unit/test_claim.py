"""Claiming a sweep directory comes first: a file where a folder must be, a rerun with a changed
spec and a second writer are refused in one line, before torch, data or model load."""

import subprocess
import sys

import pytest

from lowrank_lab.spec import load_spec
from lowrank_lab.store import files, layout
from lowrank_lab.store.files import RunError

# Runs the CLI, then says whether torch was imported: a refusal must come before it is.
CLI = ("import atexit, sys\n"
       "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
       "from lowrank_lab_cli.main import cli\n"
       "cli(sys.argv[1:], prog_name='lowrank-lab')\n")


def _overrides(tmp_path, **extra):
    values = {"model.name": f'"{tmp_path / "no-model-needed"}"', "data.task": "file",
              "data.path": f'"{tmp_path / "no-data-needed.csv"}"', "sweep.out_dir": f'"{tmp_path / "out"}"',
              "sweep.r": "[1]", "train.device": "cpu", **extra}
    return [f"{k}={v}" for k, v in values.items()]


def _rank_sweep(overrides):
    args = ["rank-sweep", *[x for o in overrides for x in ("--set", o)]]
    out = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_a_second_writer_is_refused_before_torch_is_imported(tmp_path):
    overrides = _overrides(tmp_path)
    with files.sweep_lock(layout.sweep_dir(load_spec(None, overrides))):
        code, output = _rank_sweep(overrides)
    assert code == 2 and "another sweep is writing" in output, output
    assert "torch imported: False" in output


def test_a_rerun_with_a_changed_spec_names_the_key_before_torch_is_imported(tmp_path):
    first = load_spec(None, _overrides(tmp_path, **{"train.head_lr": 1e-2}))
    layout.write_spec(layout.sweep_dir(first), first, {})
    code, output = _rank_sweep(_overrides(tmp_path, **{"train.head_lr": 2e-2}))
    assert code == 2 and "train.head_lr" in output and "0.01" in output and "0.02" in output, output
    assert "torch imported: False" in output


@pytest.mark.parametrize("where, key", [("out", "sweep.out_dir"), ("out/default", "sweep.name")])
def test_a_file_where_the_sweep_folder_goes_is_one_line(tmp_path, where, key):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("not a folder")
    code, output = _rank_sweep(_overrides(tmp_path))
    assert code == 2 and f"{key}: {tmp_path / where} is a file" in output and "Traceback" not in output, output
    assert "torch imported: False" in output


def test_a_claim_given_up_before_anything_is_written_leaves_no_folder(tmp_path):
    spec = load_spec(None, _overrides(tmp_path, **{"sweep.out_dir": f'"{tmp_path / "a" / "b"}"'}))
    with pytest.raises(RunError, match="data"):
        with layout.claim_sweep(spec) as sweep:
            assert (sweep / ".lock").exists()
            raise RunError("bad data")  # as a data or model error after the claim
    assert not (tmp_path / "a").exists()
    with layout.claim_sweep(spec) as sweep:
        layout.write_spec(sweep, spec, {})
    assert layout.read_spec(sweep)["sweep"]["lr"] == list(spec.sweep.lr)  # kept once something is written
