"""A sweep's JSON records: typed on the way in (a wrong shape is one line naming file and key),
written with the umask's mode, read back as they were written."""

import json
import os
import shutil
from pathlib import Path

import pytest

from lowrank_lab.store import files, layout, runs
from lowrank_lab.store.files import RunError
from lowrank_lab.store.records import CellSummary, Manifest, ManifestEntry

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sweep"
CELL = "lora-qv-r4-alpha_r-kaiming-seed1"


@pytest.fixture
def sweep(tmp_path) -> Path:
    """The committed fixture sweep's manifest and two cells, copied to be broken."""
    out = tmp_path / "sweep"
    out.mkdir()
    shutil.copy(FIXTURE / "manifest.json", out)
    for name in (CELL, "lora-qv-r1-alpha_r-kaiming-seed0"):
        shutil.copytree(FIXTURE / "cells" / name, out / "cells" / name)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["cells"] = {k: v for k, v in manifest["cells"].items() if (out / "cells" / k).exists()}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_fixture_records_read_typed_and_write_back_unchanged(sweep, tmp_path):
    summary = layout.read_summary(sweep / "cells" / CELL)
    assert summary.status == "done" and summary.best_value == summary.best["accuracy"]
    assert summary.trainable_parameters.total == summary.trainable_parameters.adapter + summary.trainable_parameters.head
    layout.write_summary(tmp_path, summary)
    assert layout.read_summary(tmp_path) == summary
    manifest = layout.read_manifest(sweep)
    assert manifest.names("done") == list(manifest.cells)
    assert Manifest.from_dict(manifest.to_dict(), "m") == manifest
    assert [r.summary for r in runs.load_sweep(sweep)][1] == summary  # a Run's summary is the record


@pytest.mark.parametrize("change, key", [
    (lambda d: d.update(cells=[]), "'cells'"),
    (lambda d: d.pop("cells"), "'cells' is missing"),
    (lambda d: d["cells"][CELL].update(status=3), f"'cells.{CELL}.status' should be a string"),
    (lambda d: d["cells"][CELL].update(status="finished"), f"'cells.{CELL}.status' is 'finished'"),
    (lambda d: d["cells"][CELL].update(best="0.5"), f"'cells.{CELL}.best' should be a number or null"),
    (lambda d: d["cells"].update({CELL: None}), f"'cells.{CELL}' should be an object"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_file_and_key(sweep, change, key):
    _edit(sweep / "manifest.json", change)
    with pytest.raises(RunError) as err:
        runs.load_sweep(sweep)
    message = str(err.value)
    assert "manifest.json" in message and key in message and "\n" not in message


@pytest.mark.parametrize("change, key", [
    (lambda d: d.update(pack=[1]), "'pack' should be an object"),
    (lambda d: d["pack"].pop("id"), "'pack.id' is missing"),
    (lambda d: d["trainable_parameters"].update(adapter="1024"), "'trainable_parameters.adapter' should be a number"),
    (lambda d: d["best"].pop("accuracy"), "'best.accuracy' is missing"),
    (lambda d: d["best"].update(accuracy=True), "'best.accuracy' should be a number"),
    (lambda d: d.update(status=None), "'status' should be a string"),
    (lambda d: d.pop("main_metric"), "'main_metric' is missing"),
])
def test_a_summary_of_the_wrong_shape_is_one_line_naming_file_and_key(sweep, change, key):
    _edit(sweep / "cells" / CELL / "summary.json", change)
    with pytest.raises(RunError) as err:
        runs.load_sweep(sweep)
    message = str(err.value)
    assert f"{CELL}/summary.json" in message and key in message and "\n" not in message


def test_a_manifest_entry_keeps_an_interrupted_cells_step():
    entry = ManifestEntry("interrupted", step=40)
    assert entry.to_dict() == {"status": "interrupted", "error": None, "best": None, "step": 40}
    assert Manifest.from_dict({"cells": {"c": entry.to_dict()}}, "m").cells["c"] == entry


def test_a_summary_without_a_best_evaluation_is_a_failed_cell_with_no_best_value(sweep):
    _edit(sweep / "cells" / CELL / "summary.json", lambda d: d.update(status="failed", best=None, error="NaN"))
    summary = layout.read_summary(sweep / "cells" / CELL)
    assert summary.best_value is None and summary.error == "NaN"
    assert isinstance(summary, CellSummary)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        files.write_json(tmp_path / "a.json", {"x": 1})
        files.write_text(tmp_path / "b.md", "text")
        files.write_jsonl(tmp_path / "c.jsonl", [{"x": 1}])
    finally:
        os.umask(previous)
    for name in ("a.json", "b.md", "c.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_checkpoint_of_the_wrong_shape_is_not_resumed_from(tmp_path):
    import torch

    from lowrank_lab.store import checkpoints

    folder = layout.pack_dir(tmp_path, "0123abcd")
    state = {"step": 3, "param_groups": [], "schedule": {}, "states": [{"best": None, "failed": None}], "cells": ["c"]}
    checkpoints.save_checkpoint(folder, {"param.0": torch.zeros(2)}, state)
    assert checkpoints.load_checkpoint(folder)[1] == state
    files.write_json(folder / "state.json", {**state, "states": [{"best": None}]})  # valid JSON, wrong shape
    assert checkpoints.load_checkpoint(folder) is None  # the pack starts again instead of a KeyError
    checkpoints.remove_checkpoint(folder)
    assert list(tmp_path.iterdir()) == []  # neither packs/<id>/ nor an empty packs/ is left
