"""Running out of room while saving (issue 27): under a file-size limit (``ulimit -f``) that lets the
small cell's files through and stops the larger cell's adapter, ``rank-sweep`` ends with one line
naming that file and exit status 1, the finished cell stays done, and a rerun without the limit
finishes the sweep without training that cell again."""

import resource
import subprocess
import sys

from lowrank_lab.store import files, layout

LIMIT = 7000  # bytes: above every file of the rank-1 cell, below the rank-16 cell's adapter (≈ 9.3 kB)


def _sweep(tiny_bert, tiny_task, out, limit=None):
    sets = {"model.name": f'"{tiny_bert}"', "model.pooling": "mean", "data.task": "file", "data.path": f'"{tiny_task}"',
            "sweep.out_dir": f'"{out}"', "sweep.r": "[1,16]", "sweep.pack": 1, "train.batch_size": 8,
            "model.max_length": 16, "train.device": "cpu"}
    args = [sys.executable, "-m", "lowrank_lab", "rank-sweep", *[x for k, v in sets.items() for x in ("--set", f"{k}={v}")]]

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run(args, capture_output=True, text=True, preexec_fn=limited if limit else None, timeout=300)


def test_a_full_disk_ends_with_one_line_naming_the_file_and_a_rerun_finishes(tiny_bert, tiny_task, tmp_path):
    proc = _sweep(tiny_bert, tiny_task, tmp_path, LIMIT)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and "adapter_model.safetensors: cannot write it (File too large)" in lines[0], proc.stderr
    sweep = tmp_path / "default"
    done = [c for c in ("lora-qv-r1-alpha_r-kaiming-seed0", "lora-qv-r16-alpha_r-kaiming-seed0")
            if (layout.cell_dir(sweep, c) / "summary.json").is_file()]
    assert done == ["lora-qv-r1-alpha_r-kaiming-seed0"]
    kept = layout.cell_dir(sweep, done[0]) / "summary.json"
    mtime = kept.stat().st_mtime_ns
    assert not list(sweep.rglob("*.tmp"))  # no temporary file left behind
    rerun = _sweep(tiny_bert, tiny_task, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 cells, 1 already done" in rerun.stdout
    assert kept.stat().st_mtime_ns == mtime  # the finished cell was not trained again
    manifest = files.read_json(sweep / "manifest.json")
    assert all(e["status"] == "done" for e in manifest["cells"].values()) and len(manifest["cells"]) == 2
