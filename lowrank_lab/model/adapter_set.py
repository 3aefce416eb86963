"""The adapter baselines of a pack: bottleneck adapters (houlsby, pfeiffer) or prefixes on the base
model, K cells at once, with each cell's tensors, its trainable-parameter count and the formula
that count must equal (Hu et al. 2021, §5.1).

``attach_adapters(base, cells)`` puts them on the base model PEFT would wrap (an encoder such as
BertModel, or a causal LM): bottleneck adapters on the outputs of the matrices of
``bottleneck.PLACEMENTS`` (found by ``model.base.find_targets``, so their paths are the base's
own), a prefix on ``base.base_model`` (BertModel, LlamaModel: the module that takes the KV cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lowrank_lab.model.base import find_targets
from lowrank_lab.model.bottleneck import (ACTIVATIONS, PLACEMENTS, BottleneckAdapter, adapter_parameters,
                                          inject_bottleneck, reset_bottleneck)
from lowrank_lab.model.prefix import PrefixTuning, attach_prefix, prefix_parameters, reset_prefixes
from lowrank_lab.spec import ADAPTER_METHODS, CellSpec, SpecError

PREFIX_KEY = "prompt_embeddings"  # PEFT's name for the prefix in adapter_model.safetensors


@dataclass
class AdapterSet:
    """K cells' adapters on one base: `layers` (bottleneck, by module path in the base) or `prefix`."""

    method: str
    cells: list[CellSpec]
    layers: dict[str, BottleneckAdapter]
    labels: dict[str, str]  # module path -> canonical label (L3.o, L3.down)
    prefix: PrefixTuning | None
    d_model: int

    def parameters(self) -> list[nn.Parameter]:
        """The packed tensors (dim 0 the cell)."""
        if self.prefix is not None:
            return [self.prefix.prompt]
        return [p for layer in self.layers.values() for p in (layer.down, layer.down_bias, layer.up, layer.up_bias)]

    def slices(self, n: int) -> dict[str, Tensor]:
        """Cell n's tensors without padding (views): ``<path>.<down|down_bias|up|up_bias>`` for
        bottleneck adapters, PEFT's ``prompt_embeddings`` (l_p × L·2·d_kv) for a prefix."""
        if self.prefix is not None:
            return {PREFIX_KEY: self.prefix.prompt[n]}
        return {f"{path}.{k}": v for path, layer in self.layers.items() for k, v in layer.factors(n).items()}

    def count(self, n: int) -> int:
        """Trainable parameters of cell n, counted from its tensors."""
        return sum(t.numel() for t in self.slices(n).values())

    def formula(self, n: int) -> dict:
        """The paper's formula for cell n, its symbols' values and its value (``count`` must equal it)."""
        lora = self.cells[n].lora
        if self.prefix is not None:
            p = self.prefix
            d_kv = p.n_kv_heads * p.head_dim
            return {"formula": "2·L·l_p·d_kv", "L": p.n_layers, "l_p": p.length, "d_kv": d_kv,
                    "value": prefix_parameters(p.n_layers, p.length, d_kv)}
        n_adapters = len(self.layers)
        return {"formula": "L̂_Adpt·(2·d_model·m + m + d_model)", "L̂_Adpt": n_adapters, "d_model": self.d_model,
                "m": lora.bottleneck, "value": adapter_parameters(self.d_model, lora.bottleneck, n_adapters)}


def attach_adapters(base: nn.Module, cells: Sequence[CellSpec]) -> AdapterSet:
    """Put the pack's adapters (or prefixes) on `base`, cell n initialised from its train.seed:
    W_up = 0 (the base's function, exactly), or a prefix from N(0, 1)."""
    cells = list(cells)
    method = cells[0].lora.method
    if method not in ADAPTER_METHODS or any(c.lora.method != method for c in cells):
        raise ValueError(f"attach_adapters: one method of {', '.join(ADAPTER_METHODS)} per pack")
    if getattr(cells[0].train, "unpadded", False):  # their forward needs the padded (K, b, n) layout
        raise SpecError(f"train.unpadded=true: not with the {method} baseline (it runs on padded batches); "
                        "set train.unpadded=false")
    d_model = base.config.hidden_size
    if method == "prefix":
        lengths = {c.lora.prefix_length for c in cells}
        if len(lengths) != 1:
            raise ValueError("attach_adapters: the cells of a prefix pack share one prefix length")
        prefix = attach_prefix(base.base_model, len(cells), lengths.pop())
        for n, cell in enumerate(cells):
            reset_prefixes(prefix, n, cell.train.seed)
        return _checked(AdapterSet(method, cells, {}, {}, prefix, d_model))
    targets = find_targets(base, PLACEMENTS[method])
    layers = inject_bottleneck(base, list(targets.values()), [c.lora.bottleneck for c in cells], ACTIVATIONS[method])
    for n, cell in enumerate(cells):
        reset_bottleneck(layers, n, cell.train.seed)
    return _checked(AdapterSet(method, cells, layers, {p: lab for lab, p in targets.items()}, None, d_model))


def _checked(adapters: AdapterSet) -> AdapterSet:
    """The set, once every cell's counted parameters equal its formula's (Hu et al. 2021, §5.1)."""
    for n, cell in enumerate(adapters.cells):
        if adapters.count(n) != adapters.formula(n)["value"]:
            raise RuntimeError(f"{cell.name}: {adapters.count(n)} trainable parameters, not {adapters.formula(n)}")
    return adapters
