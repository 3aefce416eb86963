"""Activation checkpointing of a pack's layers (``train.gradient_checkpointing``): each encoder or
decoder layer keeps only its input through the forward pass and is run again in the backward pass,
which trades about a third more compute for the activations of one layer at a time
(Chen et al. 2016). The gradients equal those of the plain step (tests/unit/test_checkpointing.py)."""

from __future__ import annotations

from lowrank_lab.model import varlen
from lowrank_lab.spec import SpecError
from lowrank_lab.train.pack import Pack


def checkpoint_layers(pack: Pack, layers: varlen.LayerForwards | None) -> varlen.LayerForwards | None:
    """train.gradient_checkpointing: the unpadded step's layer forwards checkpointed
    (``varlen.checkpointed``); the padded step's through Hugging Face's own per-layer
    checkpointing (non-reentrant, so the frozen embeddings need no gradient)."""
    spec = pack.cells[0].train
    if spec.unpadded:
        return varlen.checkpointed(layers or varlen.EAGER)
    if not getattr(pack.base, "supports_gradient_checkpointing", False):
        raise SpecError(f"train.gradient_checkpointing=true: {type(pack.base).__name__} does not support it "
                        "(use train.unpadded=true on BERT, RoBERTa and Llama models, or leave it false)")
    kwargs = {"use_reentrant": False}
    if hasattr(pack.base, "activation_checkpointing_enable"):  # transformers ≥ 5.x's name
        pack.base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        pack.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return layers
