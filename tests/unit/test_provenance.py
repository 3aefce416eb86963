"""store.files.provenance says where a result was made: the device's name, the NVIDIA driver and
the CUDA version of torch on a GPU; git_dirty only for content changes."""

import subprocess
import sys
import types

import torch

from lowrank_lab.store import files


def test_cpu_provenance_names_the_machine_and_the_torch_build():
    p = files.provenance("cpu")
    assert p["device"] == "cpu" and p["device_name"] and p["cuda_driver"] is None
    assert p["torch_cuda"] == torch.version.cuda and p["torch"] and p["python"]
    assert isinstance(p["git_dirty"], bool) or p["git_commit"] is None


def test_cuda_provenance_asks_the_driver(monkeypatch, tmp_path):
    """On a CUDA device the GPU is named by torch and the driver by nvidia-smi (faked here)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$4\" = 1 ] && echo 580.159.04\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_name=lambda d: f"NVIDIA H200 ({d})"),
                                 device=torch.device, version=types.SimpleNamespace(cuda="13.0"))
    monkeypatch.setitem(sys.modules, "torch", fake)
    p = files.provenance("cuda:1")
    assert p["device_name"] == "NVIDIA H200 (cuda:1)" and p["cuda_driver"] == "580.159.04"
    assert p["torch_cuda"] == "13.0"


def test_no_driver_is_none_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_name=lambda d: "GPU"), device=torch.device)
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert files.provenance("cuda")["cuda_driver"] is None


def test_a_mode_only_change_is_not_dirty(tmp_path, monkeypatch):
    """A copy that loses the executable bits (as a copy to the device machine can) is not a change."""
    repo = tmp_path / "repo"
    (repo / "lowrank_lab" / "store").mkdir(parents=True)
    script = repo / "run.sh"
    script.write_text("echo\n")
    script.chmod(0o755)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "run.sh"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(files, "__file__", str(repo / "lowrank_lab" / "store" / "files.py"))
    script.chmod(0o644)
    assert files.provenance()["git_dirty"] is False
    script.write_text("echo changed\n")
    assert files.provenance()["git_dirty"] is True
