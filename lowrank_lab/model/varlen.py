"""The unpadded ("varlen") forward of a pack: every linear map on real tokens, attention per sequence.

The layer forward is written here from the Hugging Face modules' own weights and submodules, for
two families (``SUPPORTED``): BERT-like encoders (BERT, MiniLM, RoBERTa) and Llama-like decoders
(Llama, SmolLM2; grouped-query attention). The tokens are one stream of N = K·T (``varlen_layout``);
each projection, LoRA wrapper included, runs on (N, k), and self-attention runs within each segment:

    softmax(q_i·K_sᵀ·scale + mask) V_s    over the segment s of token i (causal for decoders)

On CUDA in bf16/fp16 the segments go to PyTorch's flash varlen kernel
(``torch.nn.attention.varlen.varlen_attn``, cu_seqlens); elsewhere (the CPU, float32) they are
gathered into a padded (S, L) view and run through SDPA with a key mask, which is also the
reference that tests check the kernel against. With the same weights, the hidden state of every
real token equals the padded forward's (tests/unit/test_unpadded.py). ``compiled`` gives the same
layer forwards under torch.compile, attention left out of the graphs (``train.compile``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from lowrank_lab.model.varlen_layout import Varlen

try:
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # torch < 2.10
    _varlen_attn = None

ENCODERS = ("bert", "roberta")
DECODERS = ("llama",)
SUPPORTED = ENCODERS + DECODERS
_PARAMS = set(inspect.signature(_varlen_attn).parameters) if _varlen_attn is not None else set()
# Why the kernel was given up in this process (None: it serves, or was never tried); see ``attend``.
kernel_failure: str | None = None


def check_supported(model: nn.Module) -> None:
    """ValueError naming the model type unless the unpadded forward is written for it."""
    config = model.config
    kind = config.model_type
    if kind not in SUPPORTED:
        raise ValueError(f"model type {kind!r} has no unpadded forward (supported: {', '.join(SUPPORTED)})")
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError(f"position_embedding_type={config.position_embedding_type!r}: only absolute positions")
    if kind in ENCODERS and getattr(config, "is_decoder", False):
        raise ValueError(f"{kind} configured as a decoder has no unpadded forward")


def kernel_available(x: Tensor) -> bool:
    """Whether the flash varlen kernel serves `x`: CUDA, bf16 or fp16, torch ≥ 2.10."""
    return _varlen_attn is not None and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)


@torch.compiler.disable  # a compiled layer (``compiled``) breaks here: attention runs as it does eagerly
def attend(q: Tensor, k: Tensor, v: Tensor, layout: Varlen, causal: bool, scale: float) -> Tensor:
    """Self-attention within each segment: q (N, Hq, D), k and v (N, Hkv, D), Hq a multiple of Hkv
    (grouped-query attention) → (N, Hq, D). The kernel is first tried once per configuration on a
    tiny input, forward and backward (``_kernel_works``); one that fails there (a build without flash
    attention, an unsupported head size) is given up, with a warning, for the reference path: the
    two compute the same function, the reference at the cost of padding each segment."""
    if kernel_available(q) and _kernel_works(q.device, q.dtype, q.shape[1], k.shape[1], q.shape[2], causal):
        return attend_kernel(q, k, v, layout, causal, scale)
    return attend_reference(q, k, v, layout, causal, scale)


_PROBED: dict[tuple, bool] = {}


def _kernel_works(device: torch.device, dtype: torch.dtype, hq: int, hkv: int, D: int, causal: bool) -> bool:
    global kernel_failure
    key = (device, dtype, hq, hkv, D, causal)
    if key not in _PROBED:
        cu = torch.tensor([0, 3, 8], dtype=torch.int32, device=device)
        probe = SimpleNamespace(cu_seqlens=cu, max_len=5)  # two sequences, of 3 and 5 tokens
        q, k, v = (torch.randn(8, h, D, device=device, dtype=dtype, requires_grad=True) for h in (hq, hkv, hkv))
        try:
            with torch.enable_grad():
                attend_kernel(q, k, v, probe, causal, D ** -0.5).float().sum().backward()
            _PROBED[key] = True
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
            kernel_failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"flash varlen attention failed ({kernel_failure}); using gather + SDPA", stacklevel=3)
            _PROBED[key] = False
    return _PROBED[key]


def attend_kernel(q: Tensor, k: Tensor, v: Tensor, layout: Varlen, causal: bool, scale: float) -> Tensor:
    """``attend`` by the flash varlen kernel over ``layout.cu_seqlens`` (torch 2.10's is_causal,
    2.11's window_size; K and V repeated per group where the kernel has no enable_gqa; q pre-scaled
    where it takes no scale)."""
    extra = {}
    if "scale" in _PARAMS:
        extra["scale"] = scale
    elif abs(scale * q.shape[-1] ** 0.5 - 1) > 1e-6:
        q = q * (scale * q.shape[-1] ** 0.5)
    if "enable_gqa" in _PARAMS and q.shape[1] != k.shape[1]:
        extra["enable_gqa"] = True
    elif q.shape[1] != k.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    if "window_size" in _PARAMS:
        extra["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        extra["is_causal"] = causal
    cu, L = layout.cu_seqlens, layout.max_len
    return _varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, L, L, **extra)


def attend_reference(q: Tensor, k: Tensor, v: Tensor, layout: Varlen, causal: bool, scale: float) -> Tensor:
    """``attend`` by gathering each segment into a padded (S, H, L, D) view and SDPA with a key mask
    (and the causal triangle); segments tile the stream, so the valid slots in order are tokens 0 … N−1."""
    gather, valid = layout.gather, layout.valid
    qs, ks, vs = (t[gather].transpose(1, 2) for t in (q, k, v))  # (S, H, L, D)
    if ks.shape[1] != qs.shape[1]:
        ks, vs = (t.repeat_interleave(qs.shape[1] // t.shape[1], dim=1) for t in (ks, vs))
    mask = valid[:, None, None, :]
    if causal:
        L = gather.shape[1]
        mask = mask & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    out = nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)[valid]


# ---------------------------------------------------------------------------------------------
# Encoders (BERT, RoBERTa): embeddings → layers → last hidden state per token


def encoder_hidden(encoder: nn.Module, input_ids: Tensor, token_type_ids: Tensor | None, layout: Varlen,
                   layers: LayerForwards | None = None) -> Tensor:
    """The last hidden states (N, d) of a BERT-like encoder over the stream. Positions restart at
    each sequence (RoBERTa's are offset by padding_idx + 1, as its create_position_ids does).
    `layers`: the layer forward to use (``compiled()``'s; default the eager one)."""
    emb = encoder.embeddings
    positions = layout.positions
    if getattr(emb, "padding_idx", None) is not None:  # RoBERTa-style position ids
        positions = positions + emb.padding_idx + 1
    types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    x = emb(input_ids=input_ids[None], token_type_ids=types[None], position_ids=positions[None])[0]
    forward = (layers or EAGER).encoder
    for layer in encoder.encoder.layer:
        x = forward(layer, x, layout)
    return x


def _encoder_layer(layer: nn.Module, x: Tensor, layout: Varlen) -> Tensor:
    """A BertLayer / RobertaLayer: attention, its output (dense + residual + LayerNorm), the MLP."""
    sa = layer.attention.self
    N, H, D = x.shape[0], sa.num_attention_heads, sa.attention_head_size
    q, k, v = (proj(x).view(N, H, D) for proj in (sa.query, sa.key, sa.value))
    ctx = attend(q, k, v, layout, causal=False, scale=getattr(sa, "scaling", D ** -0.5))
    a = layer.attention.output(ctx.reshape(N, H * D), x)
    return layer.output(layer.intermediate(a), a)


def pool(hidden: Tensor, layout: Varlen, pooling: str) -> Tensor:
    """One vector per real sequence (B, d): the mean over its tokens ("mean"), else its first token,
    as ``model.base.Classifier`` pools the padded batch."""
    if pooling != "mean":
        return hidden[layout.first]
    sums = hidden.new_zeros(layout.n_seqs + 1, hidden.shape[1], dtype=torch.float32)
    sums.index_add_(0, layout.seq, hidden.float())
    return (sums[:-1] / layout.lengths[:, None]).to(hidden.dtype)


def classifier_logits(model: nn.Module, inputs: dict[str, Tensor], layout: Varlen,
                      layers: LayerForwards | None = None) -> Tensor:
    """A ``Classifier``'s logits (B, labels) from an unpadded batch: encoder, pooling, packed heads."""
    hidden = encoder_hidden(model.encoder, inputs["input_ids"], inputs.get("token_type_ids"), layout, layers)
    return model.head(pool(hidden, layout, model.pooling))


# ---------------------------------------------------------------------------------------------
# Decoders (Llama family): embeddings → RoPE layers → final norm


def decoder_hidden(lm: nn.Module, input_ids: Tensor, layout: Varlen, layers: LayerForwards | None = None) -> Tensor:
    """The last hidden states (N, d) of a Llama-like causal LM (before its LM head) over the
    stream; rotary positions restart at each sequence, as the padded forward's right padding gives.
    `layers`: the layer forward to use (``compiled()``'s; default the eager one)."""
    base = lm.base_model
    h = base.embed_tokens(input_ids)
    cos, sin = base.rotary_emb(h[None], layout.positions[None])
    cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # (N, 1, D): one rotation per token, all heads
    forward = (layers or EAGER).decoder
    for layer in base.layers:
        h = forward(layer, h, cos, sin, layout)
    return base.norm(h)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE (Su et al. 2021) as Hugging Face's apply_rotary_pos_emb: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _decoder_layer(layer: nn.Module, h: Tensor, cos: Tensor, sin: Tensor, layout: Varlen) -> Tensor:
    """A LlamaDecoderLayer: pre-norm causal self-attention (GQA), pre-norm SwiGLU MLP, residuals."""
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    N, D = x.shape[0], attn.head_dim
    q, k, v = (proj(x).view(N, -1, D) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    ctx = attend(_rotate(q, cos, sin), _rotate(k, cos, sin), v, layout, causal=True, scale=attn.scaling)
    h = h + attn.o_proj(ctx.reshape(N, -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


# ---------------------------------------------------------------------------------------------
# Compiled layers (train.compile with train.unpadded)


@dataclass(frozen=True)
class LayerForwards:
    """The layer forward of each family: (layer, x, layout) for encoders, (layer, h, cos, sin,
    layout) for decoders."""

    encoder: Callable[..., Tensor]
    decoder: Callable[..., Tensor]


EAGER = LayerForwards(_encoder_layer, _decoder_layer)


def compiled(backend: str = "inductor") -> LayerForwards:
    """The layer forwards under ``torch.compile`` (dynamic shapes: the stream's length N changes
    every step), attention left out of the graphs (``attend``: the flash kernel, or the reference).
    What fuses is the memory-bound work between two attentions, forward and backward: the norms,
    the activations, RoPE, the residual adds, the casts and LoRA's per-cell products. One graph
    serves every layer of a model (torch compiles modules' weights as inputs, not constants)."""
    return LayerForwards(torch.compile(_encoder_layer, backend=backend, dynamic=True),
                         torch.compile(_decoder_layer, backend=backend, dynamic=True))


def checkpointed(layers: LayerForwards) -> LayerForwards:
    """`layers` under activation checkpointing (``train.gradient_checkpointing``): each layer's
    forward keeps only its input, and the backward pass runs it again to get the activations it
    needs; the gradients equal the plain forward's (non-reentrant ``torch.utils.checkpoint``, which
    restores the RNG state, so a LoRA dropout mask is drawn the same both times)."""

    def wrap(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def run(layer: nn.Module, *args) -> Tensor:
            if not torch.is_grad_enabled():
                return forward(layer, *args)
            return _checkpoint(forward, layer, *args, use_reentrant=False)

        return run

    return LayerForwards(wrap(layers.encoder), wrap(layers.decoder))
