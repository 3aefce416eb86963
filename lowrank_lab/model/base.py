"""Base models: which of their matrices are Wq, Wk, Wv, Wo, loading one, and the head.

Each adapted matrix has one canonical label, ``L{layer}.{kind}`` (e.g. ``L3.q``), made by
``module_label`` alone. Which folder a model name means (hub id, local folder, the embedded
MiniLM) is decided in ``store.models``, which names the files.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

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
    r"h\.(\d+)\.attn\.c_attn": "qkv",  # GPT-2 (Conv1D, stored in×out)
    r"h\.(\d+)\.attn\.c_proj": "o",
}
# MLP matrices, labelled by their role: "up" (d_model → d_ff), "down" (d_ff → d_model), "gate"
# (Llama's SwiGLU gate) and the fused "gate_up" (Phi-3). Analyses label them; training never
# adapts them (``find_targets`` asks for attention kinds only).
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
}
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


def find_targets(model: nn.Module, kinds: tuple[str, ...]) -> dict[str, str]:
    """{label: module path} of every matrix of the requested kinds (q, k, v, o), in layer order.

    A fused projection is adapted as a whole when any of its parts is requested (PEFT does
    the same with GPT-2's c_attn); its label then says "qkv"."""
    found: dict[str, tuple[int, str, str]] = {}
    for path, module in model.named_modules():
        hit = classify_module(path)
        if hit is None or not isinstance(getattr(module, "weight", None), Tensor):
            continue
        layer, kind = hit
        if kind in kinds or (kind == "qkv" and set(kinds) & {"q", "k", "v"}):
            found[module_label(layer, kind)] = (layer, "qkvo".find(kind[0]), path)
    missing = [k for k in kinds if not any(parse_label(lab)[1] in (k, "qkv") for lab in found)]
    if missing:
        raise ModelError(f"the model has no attention matrix of kind {', '.join(missing)} "
                         f"(known module patterns: models.ATTENTION_PATTERNS)")
    return {lab: v[2] for lab, v in sorted(found.items(), key=lambda kv: kv[1][:2])}


# ---------------------------------------------------------------------------------------------
# Loading


def load_pretrained(path: str, revision: str | None = None) -> tuple[nn.Module, object]:
    """(encoder, tokenizer) in float32 from a folder or hub id that ``from_pretrained`` accepts
    (``store.models.load_base`` resolves model.name to one, checks it and words the errors).

    The encoder's own dropout is switched off: the frozen base then computes the same
    function for every adapter of a pack, so packed and one-at-a-time training agree."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight file is noise in a sweep's log

    config = AutoConfig.from_pretrained(path, revision=revision)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "attention_dropout", "dropout"):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    encoder = AutoModel.from_pretrained(path, config=config, revision=revision, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.pad_token is None:  # GPT-2 and Llama ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return encoder, tokenizer


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
