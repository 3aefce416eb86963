"""PEFT's LoRA adapter format: adapter_config.json + adapter_model.safetensors, written and read;
and the classification head that lowrank-lab saves beside it (head.safetensors + head.json).

Keys ``base_model.model.<module path>.lora_{A,B}.weight`` with A (r×k) and B (d×r); the scaling
α/r (α/√r with use_rslora), r and α per module through rank_pattern / alpha_pattern. Module paths
are those of the model PEFT wraps: the plain base (``AutoModel``, task_type FEATURE_EXTRACTION) for
encoders, so a saved cell loads with ``PeftModel.from_pretrained(AutoModel.from_pretrained(base),
cell/adapter)``; the causal LM (``AutoModelForCausalLM``, task_type CAUSAL_LM, paths such as
``model.layers.0.self_attn.q_proj`` or ``transformer.h.0.attn.c_attn``) for decoders, loaded the
same way with AutoModelForCausalLM. GPT-2's Conv1D stores W0ᵀ: fan_in_fan_out is then true (PEFT
would otherwise flip it with a warning). The first format (paths under our Classifier's
``encoder.``, the head inside the adapter) is still read."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.model.base import CLASSIFIER_PREFIX, label_for
from lowrank_lab.store import layout
from lowrank_lab.store.files import RunError, read_json, write_json
from lowrank_lab.store.tensors import read_tensors, write_tensors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
ADAPTER_FORMAT = "lowrank-lab-adapter/2"  # safetensors metadata of the adapters lowrank-lab writes
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
HEAD_FORMAT = "lowrank-lab-head/1"


def save_adapter(folder: Path, updates: list[LowRankUpdate], *, base_model: str, revision: str | None,
                 alpha: float, scaling_rule: str, init: str, dropout: float,
                 task_type: str | None = "FEATURE_EXTRACTION") -> None:
    """Write a PEFT LoRA adapter that loads with ``PeftModel.from_pretrained(AutoModel.from_pretrained(
    base_model), folder)``: ``base_model.model.<path>.lora_{A,B}.weight`` keys, A (r×k), B (d×r), one
    r per module through ``rank_pattern`` when the ranks differ.

    Each update's path is the module's full path in the model PEFT wraps (AutoModel for
    FEATURE_EXTRACTION; AutoModelForCausalLM, base_model_prefix first, for CAUSAL_LM), so
    target_modules match exactly. The head is not in it: ``save_head`` writes it beside."""
    ranks = {u.path: u.r for u in updates}
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
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
        "modules_to_save": None,
        "rank_pattern": {p: v for p, v in ranks.items() if v != r},
        "alpha_pattern": {},
    }
    tensors = {}
    for u in updates:
        tensors[f"{PEFT_PREFIX}{u.path}.lora_A.weight"] = u.A
        tensors[f"{PEFT_PREFIX}{u.path}.lora_B.weight"] = u.B
    folder = Path(folder)
    # the marker goes in the metadata: PEFT warns about unknown keys in adapter_config.json
    write_tensors(folder / ADAPTER_WEIGHTS, tensors, metadata={"format": "pt", "lowrank_lab": ADAPTER_FORMAT})
    write_json(folder / ADAPTER_CONFIG, config)


def save_head(cell: Path, weight: Tensor, bias: Tensor, *, pooling: str) -> None:
    """The classification head beside ``cell/adapter``: ``head.safetensors`` (weight num_labels×d,
    bias num_labels) and ``head.json`` (pooling "mean" or "cls", sizes). logits = W·pooled + b, with
    pooled the masked mean of the base's last_hidden_state, or its first token (CLS)."""
    cell = Path(cell)
    write_tensors(cell / HEAD_WEIGHTS, {"weight": weight, "bias": bias}, metadata={"format": "pt", "lowrank_lab": HEAD_FORMAT})
    write_json(cell / HEAD_CONFIG, {"format": HEAD_FORMAT, "input": "last_hidden_state of the base model with adapter/",
                                    "pooling": pooling, "num_labels": weight.shape[0], "hidden_size": weight.shape[1]})


def read_head(cell: Path) -> tuple[Tensor, Tensor, str | None]:
    """(weight num_labels×d, bias, pooling) of a LoRA cell: from head.safetensors + head.json, or
    for a cell of the first format from its adapter (``head.*``) and the pooling of its config.json
    (None there when the spec left it to the model: ``models.default_pooling``)."""
    cell = Path(cell)
    if (cell / HEAD_CONFIG).exists():
        meta, tensors = read_json(cell / HEAD_CONFIG), read_tensors(cell / HEAD_WEIGHTS)
        if not isinstance(meta, dict) or meta.get("pooling") not in ("mean", "cls"):
            raise RunError(f"{cell / HEAD_CONFIG}: key 'pooling' must be 'mean' or 'cls'")
        missing = [k for k in ("weight", "bias") if k not in tensors]
        if missing:
            raise RunError(f"{cell / HEAD_WEIGHTS}: missing tensor {missing[0]!r}")
        return tensors["weight"], tensors["bias"], meta["pooling"]
    _, _, other = read_adapter(layout.adapter_dir(cell))
    if "head.weight" not in other or "head.bias" not in other:
        raise RunError(f"{cell / HEAD_WEIGHTS}: missing (and {layout.adapter_dir(cell) / ADAPTER_WEIGHTS} holds no head)")
    return other["head.weight"], other["head.bias"], layout.read_cell_config(cell).model.pooling


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


def is_first_format(config: dict, tensors: dict[str, Tensor]) -> bool:
    """True for an adapter lowrank-lab wrote before it saved PEFT-loadable ones: its paths are
    relative to our Classifier (one ``encoder.`` too many) and it holds the head
    (``modules_to_save == ["head"]``). Adapters written since never hold a head."""
    lora = [k for k in tensors if ".lora_A." in k or ".lora_B." in k]
    return (config.get("modules_to_save") == ["head"] and f"{PEFT_PREFIX}head.weight" in tensors
            and all(k.startswith(PEFT_PREFIX + CLASSIFIER_PREFIX) for k in lora))


def read_adapter(folder: Path) -> tuple[dict, dict[str, LowRankUpdate], dict[str, Tensor]]:
    """(adapter_config, {path: LowRankUpdate}, other tensors) of a PEFT LoRA folder, read with
    safetensors only (``lora_factors`` checks the factors). Paths are relative to the base model;
    for the first format (``is_first_format``) our Classifier's prefix is removed from them."""
    folder = Path(folder)
    config = check_adapter_config(read_json(folder / ADAPTER_CONFIG), folder / ADAPTER_CONFIG)
    tensors = read_tensors(folder / ADAPTER_WEIGHTS)
    pairs, skipped = lora_factors(config, tensors, folder / ADAPTER_WEIGHTS)
    if skipped:
        raise RunError(f"{folder / ADAPTER_WEIGHTS}: the factors of {skipped[0]} are not r×k and d×r")
    if is_first_format(config, tensors):  # after lora_factors: rank_pattern keys name the old paths
        pairs = {p.removeprefix(CLASSIFIER_PREFIX): v for p, v in pairs.items()}
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    updates = {p: LowRankUpdate(label_for(p), p, A, B, scaling, fan_in_fan_out) for p, (A, B, scaling) in pairs.items()}
    other = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items() if ".lora_A." not in k and ".lora_B." not in k}
    return config, updates, other


# ---------------------------------------------------------------------------------------------
# The adapter baselines: prefixes in PEFT's format, bottleneck adapters in lowrank-lab's

BOTTLENECK_CONFIG = "bottleneck_config.json"
BOTTLENECK_WEIGHTS = "bottleneck_model.safetensors"
BOTTLENECK_FORMAT = "lowrank-lab-bottleneck/1"
BOTTLENECK_PARTS = ("down", "down_bias", "up", "up_bias")


def save_prefix(folder: Path, prompt: Tensor, *, shape: tuple[int, int, int], base_model: str, revision: str | None,
                task_type: str) -> None:
    """A PEFT PREFIX_TUNING adapter (``PeftModel.from_pretrained(AutoModel….from_pretrained(base_model),
    folder)``): ``prompt_embeddings`` (l_p × L·2·d_kv) and the config PEFT derives from the model
    (token_dim = d_kv = KV heads × head dim, num_attention_heads = KV heads), prefix_projection off.
    `shape` is (L, KV heads, head dim)."""
    layers, heads, head_dim = shape
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": task_type, "base_model_name_or_path": base_model,
        "revision": revision, "inference_mode": True, "num_virtual_tokens": int(prompt.shape[0]),
        "token_dim": heads * head_dim, "num_transformer_submodules": 1, "num_attention_heads": heads,
        "num_layers": layers, "encoder_hidden_size": heads * head_dim, "prefix_projection": False,
    }
    if prompt.shape[1] != layers * 2 * heads * head_dim:
        raise ValueError(f"save_prefix: prompt {tuple(prompt.shape)} does not hold L·2·d_kv = "
                         f"{layers * 2 * heads * head_dim} values per token")
    folder = Path(folder)
    write_tensors(folder / ADAPTER_WEIGHTS, {"prompt_embeddings": prompt},
                  metadata={"format": "pt", "lowrank_lab": ADAPTER_FORMAT})
    write_json(folder / ADAPTER_CONFIG, config)


def read_prefix(folder: Path) -> tuple[dict, Tensor]:
    """(adapter_config, prompt_embeddings l_p × L·2·d_kv) of a PEFT prefix-tuning folder, checked."""
    folder = Path(folder)
    config = read_json(folder / ADAPTER_CONFIG)
    if not isinstance(config, dict) or config.get("peft_type") != "PREFIX_TUNING":
        raise RunError(f"{folder / ADAPTER_CONFIG}: key 'peft_type' must be 'PREFIX_TUNING'")
    prompt = read_tensors(folder / ADAPTER_WEIGHTS).get("prompt_embeddings")
    expected = (config.get("num_virtual_tokens"), config.get("num_layers", 0) * 2 * config.get("token_dim", 0))
    if prompt is None or tuple(prompt.shape) != expected:
        raise RunError(f"{folder / ADAPTER_WEIGHTS}: 'prompt_embeddings' must be num_virtual_tokens × "
                       f"(2·num_layers·token_dim) = {expected}")
    return config, prompt


def save_bottleneck(folder: Path, tensors: dict[str, Tensor], *, method: str, bottleneck: int, activation: str,
                    base_model: str, revision: str | None, task_type: str) -> None:
    """Bottleneck adapters (PEFT has none): ``bottleneck_model.safetensors`` with
    ``<module path>.{down (m×d), down_bias (m), up (d×m), up_bias (d)}``, the paths the base model's
    own, and ``bottleneck_config.json`` (placement, m, nonlinearity, base model). The adapted module
    computes h' = h + up·f(down·h + down_bias) + up_bias on its output h (``model.bottleneck``);
    ``load_bottleneck`` puts them back on a base model."""
    paths = sorted({k.rsplit(".", 1)[0] for k in tensors})
    config = {"format": BOTTLENECK_FORMAT, "method": method, "placement": method, "bottleneck": bottleneck,
              "activation": activation, "target_modules": paths, "base_model_name_or_path": base_model,
              "revision": revision, "task_type": task_type,
              "forward": "h' = h + up·f(down·h + down_bias) + up_bias on the output h of each target module"}
    folder = Path(folder)
    write_tensors(folder / BOTTLENECK_WEIGHTS, tensors, metadata={"format": "pt", "lowrank_lab": BOTTLENECK_FORMAT})
    write_json(folder / BOTTLENECK_CONFIG, config)


def read_bottleneck(folder: Path) -> tuple[dict, dict[str, dict[str, Tensor]]]:
    """(bottleneck_config, {module path: {down, down_bias, up, up_bias}}), shapes checked against m."""
    folder = Path(folder)
    config = read_json(folder / BOTTLENECK_CONFIG)
    if not isinstance(config, dict) or config.get("format") != BOTTLENECK_FORMAT:
        raise RunError(f"{folder / BOTTLENECK_CONFIG}: key 'format' must be {BOTTLENECK_FORMAT!r}")
    tensors, m = read_tensors(folder / BOTTLENECK_WEIGHTS), config.get("bottleneck")
    modules: dict[str, dict[str, Tensor]] = {}
    for path in config.get("target_modules") or []:
        parts = {k: tensors.get(f"{path}.{k}") for k in BOTTLENECK_PARTS}
        missing = [k for k, v in parts.items() if v is None]
        if missing:
            raise RunError(f"{folder / BOTTLENECK_WEIGHTS}: missing tensor {path}.{missing[0]}")
        if parts["down"].shape[0] != m or parts["up"].shape[1] != m:
            raise RunError(f"{folder / BOTTLENECK_WEIGHTS}: {path}.down / .up are not of bottleneck size m = {m}")
        modules[path] = parts
    if not modules:
        raise RunError(f"{folder / BOTTLENECK_CONFIG}: key 'target_modules' lists no module")
    return config, modules


def load_bottleneck(base: torch.nn.Module, folder: Path) -> dict:
    """Put the saved bottleneck adapters of `folder` on `base` (the model they were trained on, as
    its config names it) and load their weights; returns {path: BottleneckAdapter}."""
    from lowrank_lab.model.bottleneck import inject_bottleneck

    config, modules = read_bottleneck(folder)
    layers = inject_bottleneck(base, list(modules), [config["bottleneck"]], config["activation"])
    with torch.no_grad():
        for path, parts in modules.items():
            for name, t in parts.items():
                getattr(layers[path], name)[0].copy_(t)
    return layers


def load_prefix(base: torch.nn.Module, folder: Path):
    """Put the saved prefix of `folder` on `base` (``base.base_model`` takes it); returns it."""
    from lowrank_lab.model.prefix import attach_prefix

    _, prompt = read_prefix(folder)
    prefix = attach_prefix(base.base_model, 1, prompt.shape[0])
    with torch.no_grad():
        prefix.prompt[0].copy_(prompt)
    return prefix


def method_adapter_dir(cell: Path, method: str) -> Path:
    """Where an adapter-baseline cell keeps its adapter: ``cell/prefix`` (a PEFT prefix-tuning folder)
    or ``cell/bottleneck``. Not ``cell/adapter``, which holds LoRA adapters only (every reader of
    a sweep's ΔW looks there): a LoRA reader given such a cell fails on the missing folder."""
    return Path(cell) / ("prefix" if method == "prefix" else "bottleneck")


def save_adapter_set(cell: Path, adapters, n: int, *, base_model: str, revision: str | None, task_type: str) -> None:
    """Cell n of a ``model.adapter_set.AdapterSet`` in ``method_adapter_dir``: a PEFT prefix adapter,
    or lowrank-lab's bottleneck adapter files (``save_prefix``, ``save_bottleneck``)."""
    from lowrank_lab.model.bottleneck import ACTIVATIONS

    tensors = {k: v.detach().float().cpu().clone() for k, v in adapters.slices(n).items()}
    folder = method_adapter_dir(cell, adapters.method)
    if adapters.prefix is not None:
        p = adapters.prefix
        save_prefix(folder, tensors["prompt_embeddings"], shape=(p.n_layers, p.n_kv_heads, p.head_dim),
                    base_model=base_model, revision=revision, task_type=task_type)
    else:
        save_bottleneck(folder, tensors, method=adapters.method, bottleneck=adapters.cells[n].lora.bottleneck,
                        activation=ACTIVATIONS[adapters.method], base_model=base_model, revision=revision,
                        task_type=task_type)
