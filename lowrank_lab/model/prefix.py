"""Prefix tuning (Li & Liang 2021) for K cells in one forward pass, as PEFT's PrefixTuningConfig.

Each attention layer ℓ gets l_p trained key and value vectors per KV head, prepended to the keys and
values its tokens compute: every token attends to the l_p virtual tokens first, which themselves
attend to nothing (they are no positions of the input). Trainable parameters
|Θ| = 2·L·l_p·d_kv (``prefix_parameters``), d_kv = n_kv_heads·head_dim (d_model without grouped
KV heads). Hu et al. 2021 (§5.1, "prefix-layer tuning") count L·d_model·(l_p + l_i): one
activation per virtual token and layer, where Li & Liang's prefix, and PEFT's, holds a key and a value.

The prefix goes in as the model's KV cache (``transformers.DynamicCache``), exactly as PEFT does it,
so a saved prefix loads in PEFT and gives the same outputs: the attention mask gains l_p ones on
the left, given position ids move by l_p (without them the model counts from the cache's length,
l_p), and the stored tensor is PEFT's ``prompt_embeddings``: l_p × (L·2·d_kv), per token the keys
and values of layers 0, 1, … (``PrefixTuning.prompt``, cell n's slice). No reparametrisation
(PEFT's prefix_projection=False) and PEFT's initialisation, N(0, 1) (nn.Embedding's).

A forward pre-hook on the base model (BertModel, LlamaModel, …) adds the prefix to every call: the
training forward, the evaluation forward and each ``generate`` step; a cache that already holds it
(the decoding steps after the first) is left alone. Packing: rows [n·b, (n+1)·b) get cell n's prefix.
PEFT's feature-extraction model drops token_type_ids; this hook keeps them (they are zeros for one
sentence, where the two agree).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def prefix_parameters(n_layers: int, length: int, d_kv: int) -> int:
    """|Θ| = 2·L·l_p·d_kv: a key and a value of d_kv per virtual token and layer."""
    return 2 * n_layers * length * d_kv


def kv_shape(config) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a transformers config (grouped KV heads where it has them)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


class PrefixTuning(nn.Module):
    """K prefixes of length l_p for a base model of L layers with H KV heads of size hd."""

    def __init__(self, n_cells: int, length: int, n_layers: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        if length <= 0:
            raise ValueError(f"prefix length {length}: must be positive")
        self.length, self.n_layers, self.n_kv_heads, self.head_dim = length, n_layers, n_kv_heads, head_dim
        self.prompt = nn.Parameter(torch.zeros(n_cells, length, n_layers * 2 * n_kv_heads * head_dim))
        self._hook = None

    @property
    def K(self) -> int:
        return self.prompt.shape[0]

    @torch.no_grad()
    def reset_prefix(self, n: int, generator: torch.Generator) -> None:
        """Cell n's prefix from N(0, 1), PEFT's default (its nn.Embedding's initialisation)."""
        self.prompt[n].copy_(torch.randn(self.prompt[n].shape, generator=generator, dtype=torch.float64))

    def key_values(self, rows: int, dtype: torch.dtype) -> Tensor:
        """(L·2, rows, H, l_p, hd): layer ℓ's keys at 2ℓ, values at 2ℓ + 1; row i is cell i // (rows / K)'s."""
        K, L, H, hd = self.K, self.n_layers, self.n_kv_heads, self.head_dim
        if rows % K:
            raise ValueError(f"prefix tuning: {rows} rows do not split into {K} cells")
        P = self.prompt.to(dtype).view(K, self.length, L * 2, H, hd).permute(2, 0, 3, 1, 4)  # PEFT's order
        return P[:, :, None].expand(L * 2, K, rows // K, H, self.length, hd).reshape(L * 2, rows, H, self.length, hd)

    def fill(self, cache, rows: int, dtype: torch.dtype) -> None:
        """Put the prefix in an empty cache, layer by layer."""
        kv = self.key_values(rows, dtype)
        for layer in range(self.n_layers):
            cache.update(kv[2 * layer], kv[2 * layer + 1], layer)

    def attach(self, base: nn.Module) -> None:
        """Register on `base` (as its submodule ``prefix_tuning``, so it moves and trains with it) and
        add the prefix to each of its calls through a forward pre-hook."""
        base.add_module("prefix_tuning", self)
        self._hook = base.register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    def detach(self, base: nn.Module) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if getattr(base, "prefix_tuning", None) is self:
            delattr(base, "prefix_tuning")

    def _pre_hook(self, base: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        from transformers import DynamicCache

        if args:  # GPT-2's LM head passes input_ids by position
            kwargs = _as_keywords(base, args, kwargs)
            args = ()
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        rows = x.shape[0]
        key = "past_key_values" if "past_key_values" in kwargs else "cache" if "cache" in kwargs else _cache_kwarg(base)
        cache = kwargs.get(key)
        if cache is None:
            cache = kwargs[key] = DynamicCache(config=base.config)
        if not cache.get_seq_length():
            self.fill(cache, rows, base.get_input_embeddings().weight.dtype)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if mask.dim() != 2:
                raise ValueError("prefix tuning: give a 2-D attention mask (batch × tokens)")
            kwargs["attention_mask"] = torch.cat([mask.new_ones(rows, self.length), mask], dim=1)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + self.length
        return args, kwargs


def _as_keywords(base: nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by name, from the forward's signature."""
    import inspect

    signature = inspect.signature(base.forward)
    named = {}
    for name, value in signature.bind_partial(*args, **kwargs).arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError("prefix tuning: the model's forward takes *args; call it with keyword arguments")
        named.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
    return named


def _cache_kwarg(base: nn.Module) -> str:
    """The name the model's forward takes its KV cache by: "cache" (transformers ≥ 5.2x, where
    past_key_values is its deprecated alias) or "past_key_values" (earlier releases)."""
    import inspect

    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def attach_prefix(base: nn.Module, n_cells: int, length: int) -> PrefixTuning:
    """K prefixes of length l_p on `base` (a transformers model: BertModel, LlamaModel, …), zero
    until ``reset_prefix``; its config gives L, the KV heads and their size."""
    prefix = PrefixTuning(n_cells, length, *kv_shape(base.config))
    prefix.attach(base)
    return prefix


def reset_prefixes(prefix: PrefixTuning, n: int, seed: int) -> None:
    prefix.reset_prefix(n, torch.Generator().manual_seed(seed))
