"""The only place that knows paths and file formats: sweep and cell directories, PEFT adapter
files, checkpoints, manifests, provenance; every write is atomic.

A sweep directory::

    <out_dir>/<sweep name>/
        spec.json                  the resolved ExperimentSpec
        manifest.json              one entry per cell: status, best metric, failure message
        cells/<cell name>/
            config.json            the resolved CellSpec
            adapter/               PEFT format: adapter_config.json + adapter_model.safetensors
            weights.safetensors    trained weights for full fine-tuning / BitFit (no adapter)
            metrics.jsonl          one line per evaluation
            summary.json           best evaluation, trainable parameters, examples/s, provenance
            checkpoint/            state to resume an interrupted cell (removed when it finishes)
        analysis/                  tidy tables computed from the cells (CSV), figures
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from lowrank_lab.spec import CellSpec, ExperimentSpec, cell_from_dict, spec_to_dict
from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.model.base import label_for

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


class RunError(ValueError):
    """A result or adapter file that cannot be read; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# Paths


def sweep_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.sweep.out_dir) / spec.sweep.name


def cell_dir(sweep: Path, cell: CellSpec) -> Path:
    return sweep / "cells" / cell.name


def analysis_dir(sweep: Path) -> Path:
    return sweep / "analysis"


# ---------------------------------------------------------------------------------------------
# Atomic writes: a kill at any moment leaves the old file or the new one, never half of one.


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    _atomic(Path(path), lambda f: f.write(data))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line; a torn last line (killed mid-write) is skipped by ``read_jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: Path) -> list[dict]:
    records = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Tensors from a safetensors file (never a pickle), with a clear error for a broken file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None


@contextlib.contextmanager
def sweep_lock(sweep: Path) -> Iterator[None]:
    """Hold an exclusive lock on a sweep directory; a second sweep into it fails at once."""
    sweep.mkdir(parents=True, exist_ok=True)
    with open(sweep / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{sweep}: another sweep is writing into this directory") from None
        yield


# ---------------------------------------------------------------------------------------------
# Provenance


def provenance(device: str | None = None) -> dict[str, Any]:
    """Versions, git commit of this project and device: what is needed to trust a result."""
    import transformers

    from lowrank_lab import __version__

    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {
        "lowrank_lab": __version__,
        "git_commit": commit,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device and device.startswith("cuda") else platform.processor() or platform.machine(),
    }


# ---------------------------------------------------------------------------------------------
# PEFT adapter format


@dataclass(frozen=True)
class LowRankUpdate:
    """One adapted matrix: ΔW = scaling·B·A with A (r×k), B (d×r), as stored by PEFT.

    kind says what ΔW is: "lora" (scaling·B·A); "lora-minus-init" (a base-mutating init such as
    PiSSA, against the original W0: still scaling·B·A, of rank 2r); "dora" (A, B hold only the
    direction, the effective ΔW is dense: ``adapters.ExternalAdapter.dense_delta``)."""

    label: str
    path: str
    A: Tensor
    B: Tensor
    scaling: float
    fan_in_fan_out: bool = False
    kind: str = "lora"

    @property
    def r(self) -> int:
        return self.A.shape[0]


def save_adapter(folder: Path, updates: list[LowRankUpdate], *, base_model: str, revision: str | None,
                 alpha: float, scaling_rule: str, init: str, dropout: float,
                 head: dict[str, Tensor] | None = None, head_module: str = "head") -> None:
    """Write a PEFT LoRA adapter: ``base_model.model.<path>.lora_{A,B}.weight`` keys, A (r×k),
    B (d×r), one r per module through ``rank_pattern`` when the ranks differ."""
    ranks = {u.path: u.r for u in updates}
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "revision": revision,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(ranks),
        "fan_in_fan_out": any(u.fan_in_fan_out for u in updates),
        "bias": "none",
        "use_rslora": scaling_rule == "alpha/sqrt(r)",
        "init_lora_weights": True if init == "kaiming" else "gaussian",
        "modules_to_save": [head_module] if head else None,
        "rank_pattern": {p: v for p, v in ranks.items() if v != r},
        "alpha_pattern": {},
    }
    tensors = {}
    for u in updates:
        tensors[f"{PEFT_PREFIX}{u.path}.lora_A.weight"] = u.A
        tensors[f"{PEFT_PREFIX}{u.path}.lora_B.weight"] = u.B
    for key, value in (head or {}).items():
        tensors[f"{PEFT_PREFIX}{head_module}.{key}"] = value
    folder = Path(folder)
    write_tensors(folder / ADAPTER_WEIGHTS, tensors, metadata={"format": "pt"})
    write_json(folder / ADAPTER_CONFIG, config)


def pattern_key(patterns: dict[str, object], path: str) -> str | None:
    """The first key of rank_pattern / alpha_pattern matching module `path`, else None.

    PEFT's rule (peft.utils.other.get_pattern_key): key K matches when
    ``re.match(rf"(.*\\.)?({K})$", path)``, i.e. K is a regex for a dotted suffix of the path."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", path):
            return key
    return None


def check_adapter_config(config: Any, where: Path) -> dict:
    """The adapter_config.json values lowrank-lab relies on, checked by type and range."""

    def positive(key: str, value: Any, integer: bool) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok or (integer and not float(value).is_integer()):
            kind = "a positive integer" if integer else "a positive number"
            raise RunError(f"{where}: key {key!r} must be {kind}, not {value!r}")

    if not isinstance(config, dict):
        raise RunError(f"{where}: not a JSON object")
    for key in ("r", "lora_alpha", "target_modules"):
        if config.get(key) is None:
            raise RunError(f"{where}: missing key {key!r}")
    positive("r", config["r"], True)
    positive("lora_alpha", config["lora_alpha"], False)
    targets = config["target_modules"]
    if not (isinstance(targets, str) or isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise RunError(f"{where}: key 'target_modules' must be a string or a list of strings")
    for name, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        pattern = config.get(name) or {}
        if not isinstance(pattern, dict):
            raise RunError(f"{where}: key {name!r} must map module names to values")
        for key, value in pattern.items():
            try:
                re.compile(rf"(.*\.)?({key})$")
            except re.error:
                raise RunError(f"{where}: {name} key {key!r} is not a regular expression") from None
            positive(f"{name}[{key!r}]", value, integer)
    for key in ("use_rslora", "fan_in_fan_out"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            raise RunError(f"{where}: key {key!r} must be true or false")
    return config


def check_factors(A: Tensor, B: Tensor, key: str, where: Path) -> None:
    """Floating-point, finite factors: anything else is not a LoRA update. `key` names lora_A."""
    b_key = key.replace("lora_A", "lora_B")
    for name, t in ((key, A), (b_key, B)):
        if not t.is_floating_point():
            raise RunError(f"{where}: {name} has dtype {t.dtype}; LoRA factors are floating point")
        if not torch.isfinite(t).all():
            raise RunError(f"{where}: {name} holds NaN or Inf")


def rank_and_alpha(config: dict, path: str) -> tuple[int, float]:
    """r and α of the module at `path` (without ``base_model.model.``) after PEFT's rank_pattern /
    alpha_pattern; the config's r and lora_alpha where no key matches."""
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    r_key, a_key = pattern_key(ranks, path), pattern_key(alphas, path)
    r = ranks[r_key] if r_key is not None else config["r"]
    alpha = alphas[a_key] if a_key is not None else config["lora_alpha"]
    return int(r), float(alpha)


def lora_factors(config: dict, tensors: dict[str, Tensor], where: Path
                 ) -> tuple[dict[str, tuple[Tensor, Tensor, float]], list[str]]:
    """The checked LoRA pairs of a PEFT state dict: ({module path: (A, B, scaling)}, paths whose
    factors are not 2-D, e.g. convolution LoRA). Scaling follows PEFT: α/r, or α/√r with
    use_rslora; r and α per module through rank_pattern / alpha_pattern."""
    rule = "alpha/sqrt(r)" if config.get("use_rslora") else "alpha/r"
    pairs, skipped = {}, []
    for key in sorted(tensors):
        if not key.endswith(".lora_A.weight"):
            continue
        path = key.removeprefix(PEFT_PREFIX)[: -len(".lora_A.weight")]
        b_key = key[: -len("lora_A.weight")] + "lora_B.weight"
        if b_key not in tensors:
            raise RunError(f"{where}: {key} has no matching {b_key}")
        A, B = tensors[key], tensors[b_key]
        if A.ndim != 2 or B.ndim != 2:
            skipped.append(path)
            continue
        r, alpha = rank_and_alpha(config, path)
        if A.shape[0] != r or B.shape[1] != r:
            raise RunError(f"{where}: {key} {tuple(A.shape)} / {b_key} {tuple(B.shape)} have rank "
                           f"{A.shape[0]}/{B.shape[1]}, but {ADAPTER_CONFIG} gives r={r} for {path} "
                           "(r, rank_pattern)")
        check_factors(A, B, key, where)
        pairs[path] = (A, B, scaling_factor(alpha, r, rule))
    if not pairs:
        raise RunError(f"{where}: no lora_A / lora_B weights")
    return pairs, skipped


def read_adapter(folder: Path) -> tuple[dict, dict[str, LowRankUpdate], dict[str, Tensor]]:
    """(adapter_config, {path: LowRankUpdate}, other tensors) of a PEFT LoRA folder, read with
    safetensors only (``lora_factors`` checks the factors)."""
    folder = Path(folder)
    config = check_adapter_config(read_json(folder / ADAPTER_CONFIG), folder / ADAPTER_CONFIG)
    tensors = read_tensors(folder / ADAPTER_WEIGHTS)
    pairs, skipped = lora_factors(config, tensors, folder / ADAPTER_WEIGHTS)
    if skipped:
        raise RunError(f"{folder / ADAPTER_WEIGHTS}: the factors of {skipped[0]} are not r×k and d×r")
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    updates = {p: LowRankUpdate(label_for(p), p, A, B, scaling, fan_in_fan_out) for p, (A, B, scaling) in pairs.items()}
    other = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items() if ".lora_A." not in k and ".lora_B." not in k}
    return config, updates, other


# ---------------------------------------------------------------------------------------------
# Cells of a sweep


@dataclass(frozen=True)
class Run:
    """A finished cell, as saved: its spec, its evaluations and its low-rank updates by label."""

    path: Path
    spec: CellSpec
    metrics: list[dict]
    summary: dict
    updates: dict[str, LowRankUpdate]


def load_run(path: Path) -> Run:
    path = Path(path)
    spec = cell_from_dict(read_json(path / "config.json"))
    updates = {}
    if (path / "adapter" / ADAPTER_CONFIG).exists():
        _, by_path, _ = read_adapter(path / "adapter")
        updates = {u.label: u for u in by_path.values()}
    return Run(path, spec, read_jsonl(path / "metrics.jsonl"), read_json(path / "summary.json"), updates)


def load_sweep(sweep: Path) -> list[Run]:
    """Every finished cell of a sweep directory, in manifest order."""
    sweep = Path(sweep)
    manifest = read_json(sweep / "manifest.json")
    return [load_run(sweep / "cells" / name) for name, entry in manifest["cells"].items()
            if entry.get("status") == "done"]


def save_checkpoint(folder: Path, tensors: dict[str, Tensor], state: dict) -> None:
    """Resume state: tensors (parameters, optimizer moments) in safetensors, the rest in JSON.
    Both files name the step, so a kill between the two writes is never trusted."""
    folder = Path(folder)
    write_tensors(folder / "state.safetensors", {**tensors, "checkpoint_step": torch.tensor(state["step"])})
    write_json(folder / "state.json", state)


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict] | None:
    folder = Path(folder)
    if not (folder / "state.json").exists():
        return None
    try:
        state = read_json(folder / "state.json")
        tensors = read_tensors(folder / "state.safetensors")
    except RunError:
        return None  # a checkpoint killed mid-write: start the cell again
    if int(tensors.pop("checkpoint_step", -1)) != state.get("step"):
        return None  # the two files come from different checkpoints
    return tensors, state


def write_cell_config(folder: Path, cell: CellSpec) -> None:
    write_json(Path(folder) / "config.json", spec_to_dict(cell))
