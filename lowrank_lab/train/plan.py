"""The memory plan of a sweep: how many cells a pack holds, and each pack's estimated peak memory.

Pure arithmetic from the base model's config and parameter shapes (a model built on the meta device
serves: no weight is read) and the spec. A pack of K cells needs, in bytes (e: bytes per element of
the frozen base, 2 in bf16 on a GPU, else 4; the trained tensors are float32):

    base          N·e                                    N the base's parameters (shared by every pack)
    trained       16·P      per cell                     P its trained elements (LoRA: Σ_t r_max·(d_t + k_t),
                                                         padded to the pack's largest rank; heads; weights
                                                         for full fine-tuning): weight, gradient, AdamW's
                                                         two moments, 4 bytes each
    activations   e·T·L·a   per cell                     T the tokens of one cell's batch (padded: rows ×
                                                         width; unpadded: its real tokens), L layers, a the
                                                         elements one layer keeps per token for backward
    LM head       C·V·(e + 12) per cell (decoders)       C completion tokens, V the vocabulary: the logits,
                                                         their float32 copy, log-softmax and its gradient

with a per layer and token (Korthikanti et al. 2022, §4.1, without dropout; frozen weights keep no input):

    Llama-like   7·d + 2·d_kv + 4·d_ff + Σ_t r_t        norms' inputs and outputs, q and k after RoPE, v,
                                                         the attention output, SwiGLU's four d_ff tensors
    BERT-like    7·d + 2·d_ff + Σ_t r_t                 q, k, v, the context, the LayerNorms' inputs, GELU
    attention    + 2·H·w   where the attention keeps its probabilities (the CPU's SDPA, the padded
                            gather of the unpadded path): H heads, w the longest sequence

Under activation checkpointing (``train.gradient_checkpointing``) each layer keeps only its input
(d per token) and one layer's activations exist at a time: e·T·(L·d + 2·a), against e·T·(L + 1)·a
without it (in both, one layer's gradients beside the activations during its backward pass). The
estimate leaves out the allocator's slack, the CUDA context (not in torch's peak) and the
interpreter's own memory on the CPU; benchmarks/bench_peft_cells.py sets it against the measured
peaks.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lowrank_lab.model.base import adapts, find_targets, parse_label
from lowrank_lab.model.lora import base_shape
from lowrank_lab.spec import ADAPTER_METHODS, CellSpec, ExperimentSpec, kind_order
from lowrank_lab.train.distributed import World

GIB = 2**30
BUDGET_FRACTION = 0.9  # of the free memory a plan may fill
MAX_PACK = 128
FROZEN_BASE = ("lora", "head", *ADAPTER_METHODS)  # methods whose packs share one frozen base


@dataclass(frozen=True)
class Shape:
    """What the plan reads from a base model's config."""

    decoder: bool
    layers: int
    d: int
    heads: int
    d_kv: int  # width of k and v (grouped-query attention: kv heads × head size)
    d_ff: int
    vocab: int

    @classmethod
    def of(cls, config, decoder: bool) -> Shape:
        d = _first(config, "hidden_size", "n_embd", "d_model")
        heads = _first(config, "num_attention_heads", "n_head")
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        d_ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
        return cls(decoder, _first(config, "num_hidden_layers", "n_layer"), d, heads, kv * head_dim, d_ff,
                   config.vocab_size)


def _first(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"model config has none of {', '.join(names)}")


@dataclass(frozen=True)
class Tokens:
    """The largest batch one cell sees: `tokens` through the model (padded: rows × width; unpadded:
    real tokens), `completion` of them scored by the LM head (decoders), `width` its longest row."""

    tokens: int
    completion: int
    width: int

    @classmethod
    def bound(cls, batch_size: int, max_length: int) -> Tokens:
        """Before the data is read: every row at max_length tokens, every token scored."""
        return cls(batch_size * max_length, batch_size * max_length, max_length)


def data_tokens(train, batch_size: int, unpadded: bool, decoder: bool) -> Tokens:
    """The largest batch of `batch_size` rows of a tokenised split (``train.batches.Encoded``):
    unpadded, its b longest rows' real tokens; padded, b rows at the longest row's width; a
    decoder's completion tokens, its b rows with the most of them."""
    lengths = train.lengths.sort(descending=True).values
    width = int(lengths[0]) if len(lengths) else 0
    tokens = int(lengths[:batch_size].sum()) if unpadded else batch_size * width
    completion = 0
    if decoder:
        scored = (train.labels != -100).sum(1).sort(descending=True).values
        completion = int(scored[:batch_size].sum())
    return Tokens(tokens, completion, width)


def host_free_bytes() -> int | None:
    """The host's free physical memory (what the CPU plan is set against), None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class PackEstimate:
    cells: int
    trained_bytes: int  # weights, gradients and AdamW moments of the pack's trained tensors
    activation_bytes: int
    peak_bytes: int  # with the base


@dataclass(frozen=True)
class MemoryPlan:
    """The packs a sweep trains and each one's estimated peak memory on `device`."""

    device: str  # "cuda" (GPU memory) or "cpu" (host memory)
    base_bytes: int
    element_bytes: int
    checkpointing: bool
    tokens: Tokens
    budget_bytes: int | None  # the memory a pack may fill (None: unknown)
    packs: tuple[PackEstimate, ...]

    @property
    def peak_bytes(self) -> int:
        return max((p.peak_bytes for p in self.packs), default=self.base_bytes)

    def lines(self) -> list[str]:
        """The plan as ``rank-sweep`` prints it."""
        memory = "GPU memory" if self.device == "cuda" else "host memory"
        sizes = [p.cells for p in self.packs]
        budget = (f"; {BUDGET_FRACTION:.0%} of the free {memory}: {size_text(self.budget_bytes)}"
                  if self.budget_bytes is not None else "")
        head = (f"memory plan ({memory}, base in {'bf16' if self.element_bytes == 2 else 'float32'}, activation "
                f"checkpointing {'on' if self.checkpointing else 'off'}, {self.tokens.tokens} tokens per cell's "
                f"batch): base {size_text(self.base_bytes)}{budget}")
        lines = [head, f"  {len(self.packs)} pack(s), cells per pack: {_runs(sizes)}"]
        for i, p in enumerate(self.packs):
            lines.append(f"  pack {i + 1}: {p.cells} cells, estimated peak {size_text(p.peak_bytes)} (trained tensors "
                         f"+ AdamW {size_text(p.trained_bytes)}, activations {size_text(p.activation_bytes)})")
            if i == 4 and len(self.packs) > 6:
                lines.append(f"  ... and {len(self.packs) - 5} more, the largest {size_text(self.peak_bytes)}")
                break
        if self.budget_bytes is not None and self.peak_bytes > self.budget_bytes:
            lines.append(f"  the largest pack's estimate exceeds {size_text(self.budget_bytes)}: a pack that runs out of "
                         "memory is split in two and retried; sweep.pack or train.gradient_checkpointing=true lower it")
        return lines


def size_text(n: int) -> str:
    """Bytes as GiB, or MiB below 1 GiB (tiny models)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def _runs(sizes: Sequence[int]) -> str:
    return ", ".join(map(str, sizes)) if len(sizes) <= 8 else f"{', '.join(map(str, sizes[:8]))}, ..."


def element_bytes(device_type: str, cells: Sequence[CellSpec]) -> int:
    """Bytes per element of the frozen base in training (``pack.set_precision``)."""
    frozen = all(c.lora.method in FROZEN_BASE for c in cells)
    return 2 if device_type == "cuda" and cells and cells[0].train.bf16 and frozen else 4


def base_bytes(base: nn.Module, element: int) -> int:
    """N·e over the base's parameters and buffers (a meta-device model counts the same)."""
    return element * (sum(p.numel() for p in base.parameters()) + sum(b.numel() for b in base.buffers()))


def trained_elements(cells: Sequence[CellSpec], base: nn.Module, targets: dict[str, tuple[int, int]],
                     num_labels: int, decoder: bool) -> int:
    """Elements of a pack's trained tensors: LoRA factors padded to the pack's largest rank per
    matrix, the heads (encoders), the base's weights (full fine-tuning) or biases (BitFit); the
    adapter baselines by their formula (2·m·d per bottleneck, 2·L·l_p·d per prefix)."""
    method, K = cells[0].lora.method, len(cells)
    d, L = _first(base.config, "hidden_size", "n_embd", "d_model"), _first(base.config, "num_hidden_layers", "n_layer")
    head = 0 if decoder else K * num_labels * (d + 1)
    if method == "lora":
        r_max = {label: max((c.lora.r for c in cells if adapts(parse_label(label)[1], c.lora.kinds)), default=0)
                 for label in targets}
        return head + K * sum(r * (dk[0] + dk[1]) for r, dk in zip(r_max.values(), targets.values()))
    if method == "full":
        return head + sum(p.numel() for p in base.parameters())
    if method == "bitfit":
        return head + sum(p.numel() for name, p in base.named_parameters() if name.endswith("bias"))
    if method in ("houlsby", "pfeiffer"):
        sites = 2 if method == "houlsby" else 1
        return head + K * L * sites * 2 * max(c.lora.bottleneck for c in cells) * d
    if method == "prefix":
        return head + K * 2 * L * max(c.lora.prefix_length for c in cells) * d
    return head  # head only


def layer_elements(shape: Shape, lora_ranks: int, width: int, attention_matrix: bool) -> int:
    """a: elements one layer keeps per token for the backward pass (the module docstring's table)."""
    a = 7 * shape.d + (2 * shape.d_kv + 4 * shape.d_ff if shape.decoder else 2 * shape.d_ff) + lora_ranks
    return a + (2 * shape.heads * width if attention_matrix else 0)


def activation_bytes(shape: Shape, tokens: Tokens, element: int, lora_ranks: int, checkpointing: bool,
                     attention_matrix: bool) -> int:
    """One cell's activations at its largest batch, with the LM head's logits for decoders."""
    a = layer_elements(shape, lora_ranks, tokens.width, attention_matrix)
    # + a: the backward pass of one layer holds its activations' gradients beside them; checkpointed,
    # that layer's activations are recomputed first, so two layers' worth exist at the peak
    kept = shape.layers * shape.d + 2 * a if checkpointing else (shape.layers + 1) * a
    head = tokens.completion * shape.vocab * (element + 12) if shape.decoder else 0
    return element * tokens.tokens * (kept + shape.d) + head  # + d: the embeddings' output


def target_shapes(base: nn.Module, cells: Sequence[CellSpec]) -> dict[str, tuple[int, int]]:
    """{label: (d, k)} of every matrix some LoRA cell adapts."""
    kinds = tuple(sorted({k for c in cells if c.lora.method == "lora" for k in c.lora.kinds}, key=kind_order))
    if not kinds:
        return {}
    return {label: base_shape(base.get_submodule(path)) for label, path in find_targets(base, kinds).items()}


def estimate_pack(cells: Sequence[CellSpec], base: nn.Module, shape: Shape, targets: dict[str, tuple[int, int]],
                  tokens: Tokens, device_type: str, num_labels: int, base_total: int) -> PackEstimate:
    """The estimated peak of one pack: the base, its trained tensors with AdamW, its activations."""
    spec, K, method = cells[0].train, len(cells), cells[0].lora.method
    element = element_bytes(device_type, cells)
    # full fine-tuning's weights are the base's own (counted there): their gradient and moments only
    trained = (12 if method == "full" else 16) * trained_elements(cells, base, targets, num_labels, shape.decoder)
    if method not in FROZEN_BASE and device_type == "cpu":
        base_total *= 2  # the pack trains a copy of the base beside the sweep's shared one
    ranks = 0
    if cells[0].lora.method == "lora":
        per_layer = {}
        for label in targets:
            layer, kind = parse_label(label)
            r = max((c.lora.r for c in cells if adapts(kind, c.lora.kinds)), default=0)
            per_layer[layer] = per_layer.get(layer, 0) + r
        ranks = max(per_layer.values(), default=0)
    attention_matrix = device_type != "cuda"  # the CPU's SDPA and the padded gather keep the probabilities
    activations = K * activation_bytes(shape, tokens, element, ranks, spec.gradient_checkpointing, attention_matrix)
    return PackEstimate(K, trained, activations, base_total + trained + activations)


def fit_pack_size(cells: Sequence[CellSpec], base: nn.Module, shape: Shape, tokens: Tokens, device_type: str,
                  num_labels: int, budget: int | None, wanted: int) -> int:
    """The most cells (≤ `wanted`) whose pack fits `budget`, each counted at the sweep's largest
    rank (a bound for every pack); 1 when even one does not fit (it is tried, and says so)."""
    if budget is None or not cells:
        return max(1, wanted)
    largest = max(cells, key=lambda c: c.lora.r)
    targets = target_shapes(base, cells)
    base_total = base_bytes(base, element_bytes(device_type, cells))
    one = estimate_pack([largest], base, shape, targets, tokens, device_type, num_labels, base_total)
    per_cell = one.peak_bytes - base_total
    return max(1, min(wanted, (budget - base_total) // max(per_cell, 1)))


def memory_plan(packs: Sequence[Sequence[CellSpec]], base: nn.Module, decoder: bool, tokens: Tokens,
                device_type: str, num_labels: int, budget: int | None) -> MemoryPlan:
    """Each pack's estimate (``estimate_pack``) on `device_type`; `budget` the bytes a pack may fill."""
    shape = Shape.of(base.config, decoder)
    every = [c for p in packs for c in p]
    element = element_bytes(device_type, every)
    total = base_bytes(base, element)
    targets = target_shapes(base, every)
    estimates = tuple(estimate_pack(p, base, shape, targets, tokens, device_type, num_labels, total) for p in packs)
    checkpointing = bool(every) and every[0].train.gradient_checkpointing
    return MemoryPlan(device_type, total, element, checkpointing, tokens, budget, estimates)


def budget_bytes(free: int | None) -> int | None:
    return None if free is None else int(BUDGET_FRACTION * free)


def wanted_pack_size(n_cells: int, processes: int, pack: int | None) -> int:
    """sweep.pack, else the cells split evenly over the processes, at most ``MAX_PACK``."""
    return pack if pack is not None else min(math.ceil(max(n_cells, 1) / processes), MAX_PACK)


# ---------------------------------------------------------------------------------------------
# Packs


def _pack_key(cell: CellSpec) -> tuple:
    """Cells with equal keys can share one forward pass: same model, data and schedule. Seeds, ranks,
    α and learning rates may differ within a pack (``pack.make_optimizer`` steps each cell at its own)."""
    free = ("seed", "data_seed", "lr", "full_lr", "bitfit_lr", "head_lr")
    schedule = tuple((k, v) for k, v in sorted(asdict(cell.train).items()) if k not in free)
    length = cell.lora.prefix_length if cell.lora.method == "prefix" else None  # one prefix length per pack
    return (cell.lora.method, cell.lora.dropout, length, schedule)


def plan_packs(cells: Sequence[CellSpec], pack_size: int) -> list[list[CellSpec]]:
    """Group cells into packs of at most `pack_size`; full fine-tuning and BitFit train alone.

    Cells that can share a pack are dealt out round-robin over as few packs as fit, so every pack
    gets the same mix of ranks and target sets and the packs take about equally long (which is
    what lets several GPUs finish together)."""
    groups: dict[tuple, list[CellSpec]] = {}
    for cell in cells:
        groups.setdefault(_pack_key(cell), []).append(cell)
    packs = []
    for key, members in groups.items():
        n_packs = len(members) if key[0] in ("full", "bitfit") else math.ceil(len(members) / pack_size)
        packs += [members[i::n_packs] for i in range(n_packs)]
    return packs


def pack_id(cells: Sequence[CellSpec]) -> str:
    return hashlib.sha1("\n".join(c.name for c in cells).encode()).hexdigest()[:12]


def sweep_plan(spec: ExperimentSpec, todo: list[CellSpec], base: tuple[torch.nn.Module, bool], device: torch.device,
               world: World, data_parallel: bool, tokens: Tokens | None = None,
               num_labels: int = 2) -> tuple[list[list[CellSpec]], MemoryPlan]:
    """The packs of the unfinished cells and their memory plan (``train.plan``): sized by sweep.pack,
    else split evenly over the processes and capped by what fits in the free GPU memory. `base`:
    (model, is decoder), a meta-device model before loading; `tokens`: one cell's largest batch
    (default: b rows of max_length tokens)."""
    n_lora = max(sum(c.lora.method == m for c in todo) for m in ("lora", *ADAPTER_METHODS))  # the largest group
    tokens = tokens or Tokens.bound(spec.train.batch_size, spec.model.max_length)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    size = wanted_pack_size(n_lora, 1 if data_parallel else world.size, spec.sweep.pack)
    if spec.sweep.pack is None:
        size = fit_pack_size(todo, base[0], Shape.of(base[0].config, base[1]), tokens, device.type, num_labels,
                             budget_bytes(free), size)
    packs = plan_packs(todo, size)
    budget = budget_bytes(free if free is not None else host_free_bytes())
    return packs, memory_plan(packs, base[0], base[1], tokens, device.type, num_labels, budget)
