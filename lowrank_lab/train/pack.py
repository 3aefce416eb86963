"""The packed model: K cells sharing one frozen base, each with its own LoRA factors (or bottleneck
adapters or prefix, for the adapter baselines; or trained weights, for full fine-tuning and BitFit),
head and initialisation seed; their per-cell gradient clipping, optimizer and training precision.

Packed tensors keep the cell in dim 0 (A: K × r_max × k, B: K × d × r_max, adapters K × …, heads
K × …), so each cell's slice gets exactly the update it would get alone (``train.loop``).

A decoder's pack is the causal LM itself (no head: the LM head scores the completion, frozen with the
embeddings under LoRA); its LoRA paths are the causal LM's own, which are PEFT CAUSAL_LM's."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lowrank_lab.spec import ADAPTER_METHODS, CellSpec, SpecError
from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.train.optim import CellAdamW
from lowrank_lab.model.adapter_set import AdapterSet, attach_adapters
from lowrank_lab.model.lora import LoRALinear, PackedLinear, init_generator, inject
from lowrank_lab.model.base import Classifier, adapts, find_targets, kind_order, parse_label


@dataclass
class Pack:
    """K cells trained together, with their model and where each cell's parameters live."""

    cells: list[CellSpec]
    model: nn.Module  # Classifier (encoder + heads), or the causal LM itself (decoder)
    layers: dict[str, LoRALinear]  # module path -> layer (LoRA cells)
    labels: dict[str, str]  # module path -> canonical label
    trainable: list[nn.Parameter] = field(default_factory=list)
    decoder: bool = False
    adapters: AdapterSet | None = None  # the adapter baselines' bottleneck adapters or prefixes

    @property
    def K(self) -> int:
        return len(self.cells)

    @property
    def base(self) -> nn.Module:
        """The model PEFT would wrap: the encoder inside our Classifier, or the causal LM."""
        return self.model if self.decoder else self.model.encoder

    @property
    def heads(self) -> list[nn.Parameter]:
        """The packed heads' weight and bias (none for a decoder)."""
        return [] if self.decoder else [self.model.head.weight, self.model.head.bias]

    @functools.cached_property
    def packed(self) -> frozenset[int]:
        """ids of the parameters whose dim 0 is the cell (LoRA factors, adapters or prefixes, heads)."""
        params = [p for layer in self.layers.values() for p in (layer.A, layer.B)]
        adapters = self.adapters.parameters() if self.adapters is not None else []
        return frozenset(map(id, params + adapters + self.heads))


def build_pack(cells: Sequence[CellSpec], base: nn.Module, num_labels: int, pooling: str,
               decoder: bool = False) -> Pack:
    """Inject K LoRA adapters (or K bottleneck adapters or prefixes, ``model.adapter_set``; or
    unfreeze weights for full fine-tuning / BitFit, K = 1) and heads, and initialise cell n from its
    own seed: A_n from its init scheme (one generator per cell seed, rank and module label:
    ``model.lora.init_generator``), B_n = 0 (W_up = 0, or a prefix from N(0, 1)), head_n as nn.Linear.

    With `decoder`, `base` is a causal LM (AutoModelForCausalLM): no head is made (num_labels and
    pooling are unused) and the adapters go on its own module paths."""
    cells = list(cells)
    method = cells[0].lora.method
    if method in ("full", "bitfit") and len(cells) != 1:
        raise ValueError("full fine-tuning and BitFit train one cell at a time")
    if decoder and method == "head":
        raise SpecError("lora.method='head': a decoder has no classification head to train; use lora, full or bitfit")
    for p in base.parameters():
        p.requires_grad_(False)
    head = None if decoder else PackedLinear(len(cells), base.config.hidden_size, num_labels)
    model = base if decoder else Classifier(base, head, pooling)
    prefix = "" if decoder else "encoder."
    layers: dict[str, LoRALinear] = {}
    labels: dict[str, str] = {}
    if method == "lora":
        kinds = sorted({k for c in cells for k in c.lora.kinds}, key=kind_order)
        targets = find_targets(base, tuple(kinds))
        paths = [f"{prefix}{p}" for p in targets.values()]
        ranks = [[c.lora.r if adapts(parse_label(label)[1], c.lora.kinds) else 0 for c in cells] for label in targets]
        scalings = [scaling_factor(c.lora.alpha, c.lora.r, c.lora.scaling_rule) for c in cells]
        layers = inject(model, paths, ranks, scalings, cells[0].lora.dropout)
        labels = dict(zip(paths, targets, strict=True))
    elif method not in ADAPTER_METHODS:
        _unfreeze(base, method)
    for n, cell in enumerate(cells):
        for path, layer in layers.items():  # each module its own stream (``init_generator``)
            layer.reset_adapter(n, cell.lora.init, init_generator(cell.train.seed, layer.ranks[n], labels[path]))
        if head is not None:
            head.reset_head(n, torch.Generator().manual_seed(cell.train.seed))
    adapters = attach_adapters(base, cells) if method in ADAPTER_METHODS else None  # each cell's own generator
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Pack(cells, model, layers, labels, trainable, decoder, adapters)


def _unfreeze(base: nn.Module, method: str) -> None:
    """Full fine-tuning trains every weight of the base; BitFit its biases (Zaken et al. 2021)."""
    if method == "full":
        for p in base.parameters():
            p.requires_grad_(True)
    elif method == "bitfit":
        biases = [p for name, p in base.named_parameters() if name.endswith("bias")]
        if not biases:
            raise SpecError("lora.method='bitfit': the model has no bias parameters to train "
                            "(Llama-family models have none); use lora or full")
        for p in biases:
            p.requires_grad_(True)


def trainable_parameters(pack: Pack, n: int) -> dict[str, int]:
    """Trainable parameters of cell n: the adapter (LoRA: Σ r·(d + k), paper §5.1; the adapter
    baselines: their cell-n tensors without padding, which ``attach_adapters`` checked against the
    paper's formula) and the head (0 for a decoder)."""
    head = sum(p[n].numel() for p in pack.heads)
    if pack.cells[n].lora.method == "lora":
        adapter = sum(layer.ranks[n] * (layer.d + layer.k) for layer in pack.layers.values())
    elif pack.adapters is not None:
        adapter = pack.adapters.count(n)
    else:
        adapter = sum(p.numel() for p in pack.base.parameters() if p.requires_grad)
    return {"adapter": adapter, "head": head, "total": adapter + head}


def cell_slices(pack: Pack, n: int) -> dict[str, Tensor]:
    """Cell n's trainable tensors by name (views; LoRA factors and bottleneck adapters without their
    zero padding; an adapter baseline's by ``AdapterSet.slices``' names, the base model's paths)."""
    out = {} if pack.decoder else {"head.weight": pack.model.head.weight[n], "head.bias": pack.model.head.bias[n]}
    if pack.cells[n].lora.method == "lora":
        for path, layer in pack.layers.items():
            r = layer.ranks[n]
            if r:
                out[f"{path}.lora_A"] = layer.A[n, :r]
                out[f"{path}.lora_B"] = layer.B[n, :, :r]
    elif pack.adapters is not None:
        out.update(pack.adapters.slices(n))
    else:
        out.update({f"model.{k}": p for k, p in pack.base.named_parameters() if p.requires_grad})
    return out


# ---------------------------------------------------------------------------------------------
# Optimisation


def per_cell_grad_norms(pack: Pack) -> Tensor:
    """‖g_n‖₂ over every trainable tensor of cell n (dim 0 of packed tensors is the cell)."""
    sq = torch.zeros(pack.K, device=pack.trainable[0].device)
    for p in pack.trainable:
        if p.grad is not None:
            g = p.grad.float()
            sq = sq + (g.reshape(pack.K, -1).square().sum(1) if _is_packed(pack, p) else g.square().sum())
    return sq.sqrt()


def _is_packed(pack: Pack, p: nn.Parameter) -> bool:
    return id(p) in pack.packed


def clip_per_cell(pack: Pack, max_norm: float) -> Tensor:
    """Scale each cell's gradient so its norm is ≤ max_norm; no host synchronisation."""
    norms = per_cell_grad_norms(pack)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in pack.trainable:
        if p.grad is not None:
            if _is_packed(pack, p):
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))).to(p.grad.dtype))
            else:  # full fine-tuning / BitFit: K = 1
                p.grad.mul_(coef[0].to(p.grad.dtype))
    return norms


class GradBuffers:
    """The gradients of a pack's packed parameters as views of a few contiguous buffers, one per
    (shape, dtype): buffer g of shape (n_g, K, …) holds the n_g same-shaped tensors' gradients, so
    per-cell clipping is two reductions and one multiply per buffer instead of ~5 kernels per tensor
    (``clip_per_cell``: ~200 launches on a RoBERTa q,v pack). Backward accumulates into the views in
    place; ``zero`` replaces ``optimizer.zero_grad``. The clipped gradients equal ``clip_per_cell``'s:

        ‖g_n‖² = Σ_g Σ_{i, …} buf_g[i, n, …]²,   buf ← buf · min(1, max_norm / (‖g_n‖ + 1e-6))."""

    def __init__(self, pack: Pack):
        if not all(_is_packed(pack, p) for p in pack.trainable):
            raise ValueError("GradBuffers: every trainable tensor must be packed (LoRA or head-only cells)")
        groups: dict[tuple, list[nn.Parameter]] = {}
        for p in pack.trainable:
            groups.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
        self.K = pack.K
        self.buffers: list[Tensor] = []
        self.views: list[tuple[nn.Parameter, Tensor]] = []
        for (shape, dtype, device), params in groups.items():
            buf = torch.zeros((len(params), *shape), dtype=dtype, device=device)
            self.buffers.append(buf)
            for i, p in enumerate(params):
                p.grad = buf[i]
                self.views.append((p, p.grad))

    def zero(self) -> None:
        torch._foreach_zero_(self.buffers)

    def check(self) -> None:
        """RuntimeError when a gradient was replaced (zero_grad(set_to_none=True), a new .grad)."""
        if any(p.grad is not view for p, view in self.views):
            raise RuntimeError("GradBuffers: a parameter's .grad no longer views its buffer; use GradBuffers.zero")

    def norms(self) -> Tensor:
        """‖g_n‖₂ of each cell (K,), as ``per_cell_grad_norms``."""
        sq = [buf.float().square().sum([d for d in range(buf.dim()) if d != 1]) for buf in self.buffers]
        return torch.stack(sq).sum(0).sqrt()

    def clip(self, max_norm: float) -> Tensor:
        """Scale each cell's gradient so its norm is ≤ max_norm; no host synchronisation."""
        self.check()
        norms = self.norms()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for buf in self.buffers:
            buf.mul_(coef.view(1, -1, *([1] * (buf.dim() - 2))).to(buf.dtype))
        return norms


def make_optimizer(pack: Pack, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the pack's trained weights: body (adapters, or the base's weights) at each cell's
    learning rate, heads at head_lr (default: the cell's train.lr). One torch AdamW (fused on CUDA)
    when the cells share their learning rates; ``CellAdamW`` (the same steps, slice by slice)
    when a learning-rate axis puts different ones in the pack."""
    head = pack.heads
    body = [p for p in pack.trainable if all(p is not h for h in head)]
    body_lr = [cell.lr for cell in pack.cells]
    head_lr = [cell.train.head_lr or cell.train.lr for cell in pack.cells]
    weight_decay = pack.cells[0].train.weight_decay
    if len(set(body_lr)) > 1 or len(set(head_lr)) > 1:
        groups = [{"params": body, "cell_lr": body_lr}, {"params": head, "cell_lr": head_lr}]
        return CellAdamW([g for g in groups if g["params"]], weight_decay=weight_decay)
    groups = [{"params": body, "lr": body_lr[0]}, {"params": head, "lr": head_lr[0]}]
    fused = device.type == "cuda"
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay, fused=fused,
                             foreach=None if fused else True)


def set_precision(pack: Pack, device: torch.device, bf16: bool) -> bool:
    """Put the pack in its training precision; return whether the forward needs autocast.

    On a GPU with train.bf16, a LoRA or head-only pack stores its frozen base in bf16 and runs
    without autocast, while the trained factors and heads stay float32 (cast per product; AdamW
    updates the float32 masters). Autocast's per-operation casts made the packed step 2.5× slower
    on the H200 (benchmarks/RESULTS.md). Full fine-tuning and BitFit train the base's own weights,
    which stay float32 masters under autocast. On the CPU everything is float32."""
    if device.type != "cuda" or not bf16:
        return False
    if pack.cells[0].lora.method in ("full", "bitfit"):
        return True
    with torch.no_grad():
        for p in pack.model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    return False
