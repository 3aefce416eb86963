"""Base models: which of their matrices are Wq, Wk, Wv, Wo and the MLP's, loading one, and the head.

Each adapted matrix has one canonical label, ``L{layer}.{kind}`` (e.g. ``L3.q``, ``L3.up``), made by
``module_label`` alone. Which folder a model name means (hub id, local folder, the embedded
models) is decided in ``store.models``, which names the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lowrank_lab.spec.sections import ALL_LINEAR, MATRIX_KINDS, kind_order

from transformers.pytorch_utils import Conv1D  # GPT-2's Conv1D (stored in×out) is a linear map too

# Module-path patterns of the attention projections, by architecture family. Each matches the
# end of a module path, so it finds the matrix in a bare encoder, a task model or a PEFT wrapper.
# Fused projections (GPT-2's c_attn holds Wq, Wk, Wv) get the kind "qkv".
ATTENTION_PATTERNS: dict[str, str] = {
    r"layer\.(\d+)\.attention\.self\.query": "q",  # BERT, RoBERTa, MiniLM, DeBERTa-v1
    r"layer\.(\d+)\.attention\.self\.key": "k",
    r"layer\.(\d+)\.attention\.self\.value": "v",
    r"layer\.(\d+)\.attention\.output\.dense": "o",
    r"layers?\.(\d+)\.self_attn\.q_proj": "q",  # Llama, Mistral, Qwen, OPT, BART
    r"layers?\.(\d+)\.self_attn\.k_proj": "k",
    r"layers?\.(\d+)\.self_attn\.v_proj": "v",
    r"layers?\.(\d+)\.self_attn\.o_proj": "o",
    r"layers?\.(\d+)\.self_attn\.out_proj": "o",
    r"layers?\.(\d+)\.self_attn\.qkv_proj": "qkv",  # Phi-3
    r"layers\.(\d+)\.attention\.query_key_value": "qkv",  # GPT-NeoX, Pythia
    r"layers\.(\d+)\.attention\.dense": "o",
    r"h\.(\d+)\.attn\.c_attn": "qkv",  # GPT-2 (Conv1D, stored in×out)
    r"h\.(\d+)\.attn\.c_proj": "o",
}
# MLP matrices, labelled by their role: "up" (d_model → d_ff), "down" (d_ff → d_model), "gate"
# (Llama's SwiGLU gate) and the fused "gate_up" (Phi-3).
MLP_PATTERNS: dict[str, str] = {
    r"layer\.(\d+)\.intermediate\.dense": "up",  # BERT, RoBERTa, MiniLM
    r"layer\.(\d+)\.output\.dense": "down",
    r"layers?\.(\d+)\.mlp\.up_proj": "up",  # Llama, Mistral, Qwen
    r"layers?\.(\d+)\.mlp\.down_proj": "down",
    r"layers?\.(\d+)\.mlp\.gate_proj": "gate",
    r"layers?\.(\d+)\.mlp\.gate_up_proj": "gate_up",  # Phi-3
    r"layers?\.(\d+)\.fc1": "up",  # OPT, BART
    r"layers?\.(\d+)\.fc2": "down",
    r"h\.(\d+)\.mlp\.c_fc": "up",  # GPT-2 (Conv1D)
    r"h\.(\d+)\.mlp\.c_proj": "down",
    r"layers\.(\d+)\.mlp\.dense_h_to_4h": "up",  # GPT-NeoX, Pythia
    r"layers\.(\d+)\.mlp\.dense_4h_to_h": "down",
}
# Fused projections and the kinds they hold: asking for a part adapts the whole (PEFT does the same).
FUSED_KINDS: dict[str, tuple[str, ...]] = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
# Order of the kinds within a layer (spec.MATRIX_KINDS); kinds of other in-block linears come after.
KIND_ORDER = MATRIX_KINDS
_COMPILED = [(re.compile(rf"(?:^|\.){p}$"), kind) for p, kind in ATTENTION_PATTERNS.items()]
_COMPILED_MLP = [(re.compile(rf"(?:^|\.){p}$"), kind) for p, kind in MLP_PATTERNS.items()]
_LAYER_PATH = re.compile(r"(?:^|\.)(?:layers?|h|blocks?)\.(\d+)\.(.+)$")


class ModelError(ValueError):
    """A model that cannot be loaded or has no matrix of the requested kind."""


def module_label(layer: int, kind: str) -> str:
    """The one canonical label of an adapted matrix: ``L{layer}.{kind}``, layers from 0."""
    return f"L{layer}.{kind}"


def parse_label(label: str) -> tuple[int, str]:
    """Inverse of ``module_label``: ``"L3.q"`` → ``(3, "q")``."""
    layer, _, kind = label.partition(".")
    return int(layer[1:]), kind


def classify_module(path: str, *, mlp: bool = False) -> tuple[int, str] | None:
    """(layer, kind) of an attention projection given its module path, else None; with `mlp`,
    of an MLP matrix too (kinds up, down, gate, gate_up: ``MLP_PATTERNS``)."""
    for pattern, kind in _COMPILED + (_COMPILED_MLP if mlp else []):
        m = pattern.search(path)
        if m:
            return int(m.group(1)), kind
    return None


def label_for(path: str) -> str:
    """Canonical label of any adapted module path: ``L3.q`` / ``L3.up`` for attention and MLP
    matrices (``classify_module``), ``L3.<rest of the path>`` for another module of layer 3, the
    path itself outside the layers (an embedding, a head)."""
    hit = classify_module(path, mlp=True)
    if hit is not None:
        return module_label(*hit)
    m = _LAYER_PATH.search(path)
    return module_label(int(m.group(1)), m.group(2)) if m else path


def adapts(module_kind: str, kinds: tuple[str, ...]) -> bool:
    """Whether target set `kinds` adapts a module of kind `module_kind` (``parse_label(label)[1]``):
    asked for by name, as a part of a fused projection (q of qkv, up of gate_up), or by "all-linear"."""
    return (ALL_LINEAR in kinds or module_kind in kinds
            or bool(set(FUSED_KINDS.get(module_kind, ())) & set(kinds)))


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or bool(Conv1D) and isinstance(module, Conv1D)


def block_linears(model: nn.Module) -> dict[str, tuple[int, str, str]]:
    """{label: (layer, kind, path)} of every nn.Linear / Conv1D inside a transformer block
    (``layer.N`` / ``layers.N`` / ``h.N`` / ``blocks.N``): the matrices "all-linear" adapts. The LM
    head, embeddings, pooler and classifier lie outside the blocks and never appear. Modules inside
    a recognised one (a LoRA wrapper's base layer and factors) are its parts, not matrices of their own."""
    found, claimed = {}, ()
    for path, module in model.named_modules():  # parents come before their children
        if path.startswith(claimed):
            continue
        hit = classify_module(path, mlp=True)
        if hit is None and _LAYER_PATH.search(path) and _is_linear(module):
            m = _LAYER_PATH.search(path)
            hit = int(m.group(1)), m.group(2)
        if hit is not None:
            claimed += (path + ".",)
            if isinstance(getattr(module, "weight", None), Tensor):
                found[module_label(*hit)] = (*hit, path)
    return found


def model_kinds(model: nn.Module) -> tuple[str, ...]:
    """The recognised kinds (``KIND_ORDER``) of the model's in-block matrices, e.g. q, k, v, o, gate,
    up, down for Llama and qkv, o, up, down for GPT-2: what Table 5's budget rule counts for "all-linear"."""
    kinds = {kind for _, kind, _ in block_linears(model).values() if kind in KIND_ORDER}
    return tuple(sorted(kinds, key=kind_order))


def find_targets(model: nn.Module, kinds: tuple[str, ...]) -> dict[str, str]:
    """{label: module path} of every matrix a target set adapts, in layer order, then ``KIND_ORDER``.

    kinds: from q, k, v, o, qkv, up, down, gate, gate_up, or ("all-linear",) for every in-block
    linear map (``block_linears``). A fused projection is adapted as a whole when any of its parts
    is requested (``adapts``); its label then says "qkv" / "gate_up". A kind the model lacks:
    ModelError naming sweep.targets and the kinds the model has."""
    present = block_linears(model)
    found = {lab: v for lab, v in present.items() if adapts(v[1], kinds)
             and (ALL_LINEAR in kinds or v[1] in KIND_ORDER)}
    has = model_kinds(model)
    if ALL_LINEAR in kinds and not found:
        raise ModelError("sweep.targets='all-linear': the model has no linear layer inside recognised "
                         "transformer blocks (layer.N, layers.N, h.N, blocks.N)")
    missing = [k for k in kinds if k != ALL_LINEAR and not any(adapts(v[1], (k,)) for v in found.values())]
    if missing:
        where = "attention" if missing[0] in ("q", "k", "v", "o", "qkv") else "MLP"
        raise ModelError(f"sweep.targets: the model has no {where} matrix of kind {', '.join(missing)} "
                         f"(its kinds: {', '.join(has) or 'none recognised'}; patterns: model.base.ATTENTION_PATTERNS, "
                         "MLP_PATTERNS)")
    return {lab: v[2] for lab, v in sorted(found.items(), key=lambda kv: (kv[1][0], kind_order(kv[1][1])))}


# ---------------------------------------------------------------------------------------------
# Loading (transformers only: which folder, and its checks, is store.models' business)


def is_causal_config(config) -> bool:
    """True when a model config is a causal LM (decoder), loaded as AutoModelForCausalLM.

    Rule: when the config lists ``architectures`` (every saved checkpoint does), causal iff one ends
    in "ForCausalLM" or "LMHeadModel" (GPT2LMHeadModel), since a folder saved from a bare GPT2Model
    or LlamaModel holds no LM head. Without that list: the model_type has a causal-LM class but no
    masked-LM one and the model is not encoder-decoder (gpt2, llama, mistral, qwen2, phi3, ... yes;
    bert, roberta, bart no, though transformers gives them causal-LM heads too). ``model.kind``
    overrides it."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    architectures = getattr(config, "architectures", None)
    if architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    model_type = getattr(config, "model_type", None)
    return (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not getattr(config, "is_encoder_decoder", False))


@dataclass(frozen=True)
class LoadedModel:
    """What training and analysis get from a base model.

    module      AutoModel (encoder) or AutoModelForCausalLM (decoder), float32, dropout off
    tokenizer   with a pad token (eos when the model has none); decoders pad on the right
    is_decoder  True for a causal LM: next-token loss, PEFT task_type CAUSAL_LM
    name        what saved adapters record as base_model_name_or_path (``store.models.portable_name``)
    provenance  model name, folder, kind and, for the embedded decoder, how its W0 was quantised"""

    module: nn.Module
    tokenizer: object
    is_decoder: bool
    name: str
    provenance: dict = field(default_factory=dict)

    @property
    def task_type(self) -> str:
        """PEFT's task_type for adapters of this model (module paths relative to ``module``)."""
        return "CAUSAL_LM" if self.is_decoder else "FEATURE_EXTRACTION"


def _config_without_dropout(path: str, revision: str | None):
    # The base's own dropout off: the frozen base then computes the same function for every
    # adapter of a pack, so packed and one-at-a-time training agree.
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, revision=revision)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "attention_dropout", "dropout", "summary_first_dropout"):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    return config


def load_tokenizer(path: str, revision: str | None = None, decoder: bool = False):
    """The model's tokenizer with a pad token (its eos when it has none, as GPT-2 and Llama ship);
    a decoder's pads on the right, so prompt + completion start at position 0."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if decoder:
        tokenizer.padding_side = "right"
    return tokenizer


def load_pretrained(path: str, revision: str | None = None) -> tuple[nn.Module, object]:
    """(encoder, tokenizer) in float32 from a folder or hub id that ``from_pretrained`` accepts
    (``store.models.load_base`` resolves model.name to one, checks it and words the errors)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight file is noise in a sweep's log
    config = _config_without_dropout(path, revision)
    encoder = AutoModel.from_pretrained(path, config=config, revision=revision, dtype=torch.float32)
    return encoder, load_tokenizer(path, revision)


def load_auto(path: str, revision: str | None = None, kind: str = "auto", dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None, random_init: bool = False,
              tokenizer_path: str | None = None) -> tuple[nn.Module, object, bool]:
    """(module, tokenizer, is_decoder) from a folder or hub id: AutoModelForCausalLM when `kind` is
    "causal", or "auto" and the config is a causal LM (``is_causal_config``); else AutoModel.

    The weights are read from the safetensors shards straight into `dtype` on `device` (the host
    when None): a bf16 base for a GPU never has a float32 copy on the host. With `random_init` they
    are not read: the model is built from its config on `device` with random weights (seed 0), for
    speed and memory studies. `tokenizer_path`: where the tokenizer is, when not beside the config."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight file is noise in a sweep's log
    config = _config_without_dropout(path, revision)
    decoder = kind == "causal" or kind == "auto" and is_causal_config(config)
    cls = AutoModelForCausalLM if decoder else AutoModel
    if random_init:
        torch.manual_seed(0)
        with torch.device(device or "cpu"):
            module = cls.from_config(config, dtype=dtype)
    else:
        placed = {"device_map": str(device)} if device is not None else {}
        module = cls.from_pretrained(path, config=config, revision=revision, dtype=dtype, **placed)
    return module.eval(), load_tokenizer(tokenizer_path or path, revision, decoder=decoder), decoder


# Where Classifier keeps the base model: a path of the base is this prefix + its own path.
CLASSIFIER_PREFIX = "encoder."


class Classifier(nn.Module):
    """Encoder → pooled sentence vector → head. ``head`` is an nn.Linear (one model) or a
    PackedLinear (K models, the batch carrying the adapter index)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, pooling: str):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        return self.head(pooled)
