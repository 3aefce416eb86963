"""PEFT LoRA adapters that lowrank-lab did not train: read them, find their W0, compare them.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (a legacy
``adapter_model.bin`` is a pickle and is never read: it is refused with a one-line message). Each adapted module
``<path>`` has ``base_model.model.<path>.lora_A.weight`` (r×k) and ``.lora_B.weight`` (d×r);
``load_external`` turns them into ``LowRankUpdate`` s keyed by the canonical label, with
PEFT's per-module r and α (``rank_pattern`` / ``alpha_pattern``) and scaling α/r or α/√r.

Everything is in the paper's d×k = out×in layout (``lora.weight_as_W0``). PEFT's A and B are
nn.Linear weights, so B·A is already out×in even with ``fan_in_fan_out`` (GPT-2's Conv1D):
there only W0, stored in×out, is transposed on reading.

W0 comes lazily from the base model's safetensors (one file or sharded), one tensor at a time,
so a 7B base is never loaded whole. Two cases where ΔW ≠ scaling·B·A:
- DoRA: W' = m ⊙ (W0 + s·B·A) / ‖W0 + s·B·A‖_row (norm of each output row, over the k inputs,
  as peft/tuners/lora/dora.py computes it), so ΔW = W' − W0 is dense, not low-rank: its update
  is a ``DenseUpdate`` (kind "dora") that computes ΔW from W0 when asked.
- base-mutating inits (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA) save a base W_res = W0 − s·B0·A0.
  Given the original base, ΔW = W_res + s·B·A − W0 = s·B·A − D0 with D0 = W0 − W_res, and D0 is
  factored to rank r, so the update is stored as a rank-2r LowRankUpdate (what PEFT's
  ``subtract_mutated_init`` does). Without it, ΔW is relative to the given base, and we warn.

Labels come from ``models.label_for`` (attention q/k/v/o/qkv, MLP up/down/gate/gate_up, else
``L{layer}.<rest of path>``); per-module r and α from ``peft_format.rank_and_alpha`` (PEFT's pattern rule).
The analyses of these adapters are in ``analysis.external``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import top_r_svd_randomized
from lowrank_lab.maths.update import DenseUpdate, LowRankUpdate
from lowrank_lab.model.base import label_for
from lowrank_lab.store import models
from lowrank_lab.store.external_adapter import ExternalAdapter
from lowrank_lab.store.files import RunError, read_json
from lowrank_lab.store.tensors import read_tensors
from lowrank_lab.store.peft_format import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, check_adapter_config,
                                           lora_factors)

ADAPTER_WEIGHTS_BIN = "adapter_model.bin"
MUTATING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")  # "pissa_niter_16" counts too
# Leading components that differ between a task model's module paths and a bare checkpoint's keys.
MODEL_PREFIXES = ("model.", "transformer.", "bert.", "roberta.", "deberta.", "distilbert.",
                  "electra.", "albert.", "xlm_roberta.", "gpt_neox.", "language_model.")


# ---------------------------------------------------------------------------------------------
# PEFT's init schemes


def mutating_init(config: dict) -> str | None:
    """The name of a base-mutating init_lora_weights (PiSSA, OLoRA, ...), else None."""
    init = config.get("init_lora_weights")
    if isinstance(init, str) and any(init == name or init.startswith(f"{name}_") for name in MUTATING_INITS):
        return init
    return None


# ---------------------------------------------------------------------------------------------
# W0, lazily


class LazyWeights:
    """The tensors of a base model's safetensors checkpoint, read one at a time on request.

    ``folder`` holds ``model.safetensors``, or shards listed in ``model.safetensors.index.json``
    (its ``weight_map``), or other ``*.safetensors`` files. Only headers are read up front."""

    def __init__(self, folder: str | Path):
        from safetensors import SafetensorError, safe_open

        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise RunError(f"{index}: missing key 'weight_map'")
            self.files = {k: self.folder / f for k, f in weight_map.items()}
        else:
            shards = sorted(self.folder.glob("*.safetensors"))
            if (self.folder / "model.safetensors").exists():
                shards = [self.folder / "model.safetensors"]
            if not shards:
                raise RunError(f"{self.folder}: no model.safetensors, model.safetensors.index.json or "
                               "*.safetensors (only safetensors checkpoints are read)")
            self.files = {}
            for shard in shards:
                try:
                    with safe_open(shard, framework="pt") as f:
                        self.files.update(dict.fromkeys(f.keys(), shard))
                except (SafetensorError, OSError) as err:
                    raise RunError(f"{shard}: not a readable safetensors file ({err})") from None
        self._open = safe_open
        self._handles: dict[Path, object] = {}

    def _handle(self, key: str):
        file = self.files[key]
        if file not in self._handles:
            try:
                self._handles[file] = self._open(file, framework="pt")
            except Exception as err:  # safetensors raises its own error types and OSError
                raise RunError(f"{file}: cannot open ({err})") from None
        return self._handles[file]

    def key_for(self, path: str) -> str:
        """Checkpoint key of the weight of module `path`, tolerating a task model's prefix."""
        candidates = [path]
        candidates += [path[len(p):] for p in MODEL_PREFIXES if path.startswith(p)]
        candidates += [p + c for p in MODEL_PREFIXES for c in list(candidates)]
        for c in candidates:
            if f"{c}.weight" in self.files:
                return f"{c}.weight"
        # Last resort: one key whose module path is a dotted suffix of `path`, or the reverse.
        hits = [k for k in self.files if k.endswith(".weight") and
                (f".{k[:-7]}".endswith(f".{path}") or f".{path}".endswith(f".{k[:-7]}"))]
        if len(hits) == 1:
            return hits[0]
        raise RunError(f"{self.folder}: no weight for module {path!r} (tried {candidates[0]}.weight "
                       f"and {len(candidates) - 1} prefix variants; {len(hits)} suffix matches)")

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(key).get_slice(key).get_shape())

    def __getitem__(self, key: str) -> Tensor:
        return self._handle(key).get_tensor(key)

    def W0(self, path: str, d: int, k: int, *, transposed: bool) -> Tensor:
        """Float32 d×k weight of module `path`; `transposed` says it is stored k×d (Conv1D)."""
        key = self.key_for(path)
        shape = self.shape(key)
        stored_t = shape == (k, d) and (transposed or shape != (d, k))
        if shape != (d, k) and not stored_t:
            raise RunError(f"{self.files[key]}: {key} has shape {shape}, but the adapter's B·A for "
                           f"{path} is {d}×{k}")
        W = self[key].to(torch.float32)
        return W.mT.contiguous() if stored_t else W


# ---------------------------------------------------------------------------------------------
# The adapter


def _dora_delta(u: LowRankUpdate, m: Tensor, W_given: Callable, W0: Callable) -> Callable[[], Tensor]:
    """ΔW = m ⊙ (W + s·B·A)/‖W + s·B·A‖_row − W0 (d×k float32), computed when called."""

    def compute() -> Tensor:
        V = W_given(u).double() + u.delta_w(torch.float64)
        W_new = (m.double() / torch.linalg.vector_norm(V, dim=1))[:, None] * V
        return (W_new - W0(u).double()).float()

    return compute


def find_adapters(folder: str | Path) -> list[Path]:
    """`folder` if it holds adapter_config.json, then each sub-folder that does, sorted by name
    (PEFT's save_pretrained writes "default" at the top and other adapters in sub-folders)."""
    folder = Path(folder)
    found = [folder] if (folder / ADAPTER_CONFIG).exists() else []
    found += sorted(p for p in folder.iterdir() if p.is_dir() and (p / ADAPTER_CONFIG).exists()) if folder.is_dir() else []
    return found


def load_all(folder: str | Path, base: str | Path | None = None,
             original_base: str | Path | None = None) -> list[ExternalAdapter]:
    """Every adapter that ``find_adapters(folder)`` finds, each read by ``load_external``."""
    paths = find_adapters(folder)
    if not paths:
        raise RunError(f"{folder}: no {ADAPTER_CONFIG} in it or in its sub-folders")
    return [load_external(p, base, original_base) for p in paths]


def resolve_base(base: str | Path | None, config: dict, where: Path) -> Path:
    """Folder of the base model: `base`, else the config's base_model_name_or_path; "embedded"
    and its hub id are the shipped MiniLM, "embedded-causal" the converted SmolLM2 (``models.embedded_folder``); anything else not on disk is a hub id, fetched (safetensors and JSON
    only) when huggingface_hub is installed and online."""
    name = str(base) if base is not None else config.get("base_model_name_or_path")
    if not name:
        raise RunError(f"{where}: missing key 'base_model_name_or_path'; give the base with --base")
    if (embedded := models.embedded_folder(name)) is not None:  # MiniLM's hub id too: our adapters resolve offline
        return embedded
    for folder in (Path(name).expanduser(), where.parent / name):
        if folder.is_dir():
            return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=config.get("revision") if base is None else None,
                                      allow_patterns=["*.safetensors", "*.json"]))
    except Exception as err:  # ImportError, offline, unknown repo, ...: all mean "no base here"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{where}: base model {name!r} is not a local folder and cannot be fetched "
                       f"from the hub ({reason}); give a local copy with --base FOLDER") from None


def _read_adapter_tensors(folder: Path) -> tuple[Path, dict[str, Tensor]]:
    file = folder / ADAPTER_WEIGHTS
    if not file.exists() and (folder / ADAPTER_WEIGHTS_BIN).exists():
        raise RunError(f"{folder / ADAPTER_WEIGHTS_BIN}: a pickle, not read (lowrank-lab never unpickles); "
                       f"it reads {ADAPTER_WEIGHTS}: save the adapter with PEFT's save_pretrained "
                       "(safe_serialization=True, the default)")
    return file, read_tensors(file)


def _read_config(folder: Path) -> dict:
    """The checked adapter_config.json of a LoRA adapter folder."""
    cfg_file = folder / ADAPTER_CONFIG
    if not cfg_file.exists() and find_adapters(folder):
        names = ", ".join(p.name for p in find_adapters(folder))
        raise RunError(f"{cfg_file}: missing; the sub-folders hold adapters ({names}): use load_all")
    config = check_adapter_config(read_json(cfg_file), cfg_file)
    if config.get("peft_type", "LORA") != "LORA":
        raise RunError(f"{cfg_file}: key 'peft_type' is {config['peft_type']!r}; only LORA adapters are read")
    return config


def _read_updates(config: dict, tensors: dict[str, Tensor], weights_file: Path, notes: list[str]
                  ) -> tuple[dict[str, LowRankUpdate], dict[str, Tensor], dict[str, str]]:
    """({path: LowRankUpdate}, {path: DoRA magnitude m (d,)}, {path: label}) of PEFT's tensors,
    with a note for everything that is not analysed."""
    pairs, conv = lora_factors(config, tensors, weights_file)
    notes += [f"skipped {path}: factors that are not 2-D (convolution LoRA is not analysed)" for path in conv]
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    by_path = {p: LowRankUpdate("", p, A.float(), B.float(), scaling, fan_in_fan_out)
               for p, (A, B, scaling) in pairs.items()}
    magnitudes: dict[str, Tensor] = {}
    for path, u in by_path.items():
        m_key = f"{PEFT_PREFIX}{path}.lora_magnitude_vector"
        m = tensors.get(m_key, tensors.get(f"{m_key}.weight"))
        if m is not None:
            if m.shape != (u.shape[0],) or not torch.isfinite(m).all():
                raise RunError(f"{weights_file}: {m_key} must be {u.shape[0]} finite numbers, got {tuple(m.shape)}")
            magnitudes[path] = m.float()
    skipped = sorted({k.removeprefix(PEFT_PREFIX).split(".lora_embedding_")[0] for k in tensors if ".lora_embedding_" in k})
    if skipped:
        notes.append(f"skipped embedding adapters: {', '.join(skipped)}")
    if any(k.endswith(".lora_B.bias") for k in tensors):
        notes.append("lora_bias: the adapters' bias terms change b, not W, and are not analysed")
    labels = {p: label_for(p) for p in by_path}
    clashes = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    if clashes:  # e.g. encoder and decoder layer 0 of a seq2seq model: keep them apart by path
        notes.append(f"labels {sorted(clashes)} are shared by several modules; those use their full path")
        labels = {p: (p if lab in clashes else lab) for p, lab in labels.items()}
    return by_path, magnitudes, labels


def _check_base(given: LazyWeights, by_path: dict[str, LowRankUpdate], weights_file: Path) -> None:
    """Fail now, from the headers alone, on a module the base lacks or has in another shape."""
    for u in by_path.values():
        key = given.key_for(u.path)
        shape, (d, k) = given.shape(key), u.shape
        if shape not in ((d, k), (k, d)):
            raise RunError(f"{given.files[key]}: {key} has shape {shape}, but {weights_file.name}'s "
                           f"B·A for {u.path} is {d}×{k}")


def _minus_inits(config: dict, by_path: dict[str, LowRankUpdate], kinds: dict[str, str], W_given, W0,
                 original_base: str | Path | None, base_dir: Path, notes: list[str]) -> None:
    """For a base-mutating init (PiSSA, ...): each non-DoRA update becomes s·B·A − D0 against the
    original base (``_minus_init``), in place; without the original base, a warning."""
    init = mutating_init(config)
    if init is not None and original_base is None:
        msg = (f"init_lora_weights={init!r} mutates the base: ΔW is relative to the given base "
               f"{base_dir}, not to the original W0; give original_base (--original-base) to fix this")
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    elif init is not None:
        notes.append(f"init_lora_weights={init!r}: ΔW = W_res + s·B·A − W0 against the original base "
                     f"{original_base}, stored as a rank-2r update s·B·A − D0 (D0 = W0 − W_res at rank r)")
        for path, u in list(by_path.items()):
            if kinds[path] == "lora":
                by_path[path], residual = _minus_init(u, W0(u).double() - W_given(u).double())
                kinds[path] = "lora-minus-init"
                if residual > 1e-4:
                    notes.append(f"{label_for(path)}: W0 − W_res is not rank {u.r} (relative residual "
                                 f"{residual:.2e}); ΔW keeps only its rank-{u.r} part")


def load_external(adapter: str | Path, base: str | Path | None = None,
                  original_base: str | Path | None = None) -> ExternalAdapter:
    """Read the PEFT LoRA adapter in folder `adapter` against its base model (see module doc).

    base           the model the adapter was trained on (folder, hub id or "embedded");
                   default: adapter_config's base_model_name_or_path
    original_base  for base-mutating inits (PiSSA, ...): the base before PEFT mutated it
    Raises RunError naming the file and key for every malformed input."""
    folder = Path(adapter)
    config = _read_config(folder)
    weights_file, tensors = _read_adapter_tensors(folder)
    rule = "alpha/sqrt(r)" if config.get("use_rslora") else "alpha/r"
    notes = [f"ΔW = scaling·B·A with scaling = {rule} (PEFT's use_rslora={bool(config.get('use_rslora'))})"
             ", in the out×in (d×k) layout"]
    by_path, magnitudes, labels = _read_updates(config, tensors, weights_file, notes)

    base_dir = resolve_base(base, config, folder / ADAPTER_CONFIG)
    given = LazyWeights(base_dir)
    original = LazyWeights(original_base) if original_base is not None else given

    def read(weights: LazyWeights) -> Callable[[LowRankUpdate], Tensor]:
        return lambda u: weights.W0(u.path, *u.shape, transposed=getattr(u, "fan_in_fan_out", False))

    W_given, W0 = read(given), read(original)
    _check_base(given, by_path, weights_file)
    kinds = {p: ("dora" if p in magnitudes else "lora") for p in by_path}
    _minus_inits(config, by_path, kinds, W_given, W0, original_base, base_dir, notes)
    if magnitudes:
        notes.append("DoRA: ΔW = m ⊙ (W + s·B·A)/‖W + s·B·A‖_row − W0 is dense, not low-rank: the "
                     f"{len(magnitudes)} modules of kind 'dora' are analysed as dense updates")
    updates = {labels[p]: (DenseUpdate(labels[p], p, _dora_delta(u, magnitudes[p], W_given, W0), u.r, "dora", u.scaling)
                           if p in magnitudes else
                           LowRankUpdate(labels[p], p, u.A, u.B, u.scaling, u.fan_in_fan_out, kinds[p]))
               for p, u in by_path.items()}
    return ExternalAdapter(folder, config, updates, W0, notes, base_dir)


def _minus_init(u: LowRankUpdate, D0: Tensor) -> tuple[LowRankUpdate, float]:
    """s·B·A − D0 as one LowRankUpdate of rank 2r, D0 (d×k) truncated to rank r; and the
    relative residual ‖D0 − D0_r‖_F / ‖D0‖_F (0 for PiSSA / OLoRA up to the base's rounding)."""
    U0, S0, Vh0 = top_r_svd_randomized(D0, u.r, n_iter=4, generator=torch.Generator().manual_seed(0))
    norm = torch.linalg.matrix_norm(D0)
    residual = float(torch.linalg.matrix_norm(D0 - (U0 * S0) @ Vh0) / norm) if norm > 0 else 0.0
    A = torch.cat([u.A.double(), Vh0]).float()
    B = torch.cat([u.B.double(), -(U0 * S0) / u.scaling], dim=1).float()
    return LowRankUpdate(u.label, u.path, A, B, u.scaling, u.fan_in_fan_out), residual
