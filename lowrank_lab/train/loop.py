"""Training: the only module with an optimizer. A pack of K cells trains in one loop.

Every cell of a pack shares the frozen base and the task; each has its own LoRA factors, head,
initialisation seed and data order. One step gathers b examples per cell (cell n's rows are
[n·b, (n+1)·b) of the batch), runs one forward and backward pass, and takes one AdamW step over
all cells' parameters. AdamW is elementwise and the loss is a sum of per-cell means, so each
cell's update is exactly what it would be alone; gradient clipping is per cell for the same
reason. A pack of one cell is plain LoRA training.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lowrank_lab.spec import CellSpec, SpecError
from lowrank_lab.train.data import Task
from lowrank_lab.train.distributed import all_reduce_mean_
from lowrank_lab.maths.metrics import compute_metrics
from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.model.lora import LoRALinear, PackedLinear, inject
from lowrank_lab.model.base import Classifier, find_targets, parse_label

# ---------------------------------------------------------------------------------------------
# Devices and tokenised data


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else the CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"train.device={name!r}: not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"train.device={name!r}: no CUDA GPU is available here; use auto or cpu")
    return device


@dataclass(frozen=True)
class Encoded:
    """A tokenised split, padded once: token ids (n × max_length), segment ids for sentence pairs
    (BERT's token_type_ids; None when the tokenizer gives none), true lengths, labels.

    ``lengths`` stay on the CPU, where batch widths and length groups are decided; ``to(device)``
    moves the rest once, so that a training step gathers its batch on the device."""

    input_ids: Tensor
    token_type_ids: Tensor | None
    lengths: Tensor
    labels: Tensor
    device_lengths: Tensor | None = None  # a copy of lengths beside input_ids, for the attention mask

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Encoded:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Encoded(move(self.input_ids), move(self.token_type_ids), self.lengths, move(self.labels),
                       self.lengths.to(device))

    def batch(self, index: Tensor, multiple: int = 1) -> tuple[dict[str, Tensor], Tensor]:
        """(model inputs, labels) of rows `index` (a CPU tensor), trimmed to their longest sequence,
        rounded up to a multiple of `multiple` (so that a compiled model sees few distinct widths)."""
        width = min(-(-int(self.lengths[index].max()) // multiple) * multiple, self.input_ids.shape[1])
        where = self.input_ids.device
        rows = index.to(where, non_blocking=True)
        lengths = (self.lengths if self.device_lengths is None else self.device_lengths)[rows]
        inputs = {"input_ids": self.input_ids[rows, :width],
                  "attention_mask": (torch.arange(width, device=where)[None, :] < lengths[:, None]).long()}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids[rows, :width]
        return inputs, self.labels[rows]


def _pad(rows: list[list[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(x) for x in rows)), value, dtype=torch.long)
    for n, x in enumerate(rows):
        out[n, : len(x)] = torch.tensor(x)
    return out


def encode(tokenizer, examples, max_length: int, regression: bool) -> Encoded:
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    kwargs = {"truncation": True, "max_length": max_length}
    out = tokenizer(texts, pairs, **kwargs) if any(p is not None for p in pairs) else tokenizer(texts, **kwargs)
    ids = out["input_ids"]
    types = _pad(out["token_type_ids"], 0) if "token_type_ids" in out else None
    dtype = torch.float32 if regression else torch.long
    return Encoded(_pad(ids, tokenizer.pad_token_id), types, torch.tensor([len(x) for x in ids]),
                   torch.tensor([e.label for e in examples], dtype=dtype))


def epoch_order(n_examples: int, data_seed: int, epoch: int, lengths: Tensor | None = None,
                batch_size: int = 1, group: int = 0) -> Tensor:
    """The data order of one epoch: a permutation seeded by (data seed, epoch) alone.

    With ``group`` > 0 (train.group_by_length) and the examples' `lengths`, each run of
    group·batch_size examples of that permutation is sorted by length and cut into batches, and
    the batches of every run are put in an order seeded by the epoch alone. Each cell still gets
    its own examples, but at any step every cell of a pack draws from the same length quantile,
    so the pack's padded width stays close to each cell's own (group_by_length, aligned across
    the pack). Examples past the last full batch stay at the end, where the loop drops them."""
    gen = torch.Generator().manual_seed(data_seed * 100_003 + epoch)
    order = torch.randperm(n_examples, generator=gen)
    if not group:
        return order
    if lengths is None:
        raise ValueError("epoch_order: group_by_length needs the examples' lengths")
    b = batch_size
    shared = torch.Generator().manual_seed(epoch)
    full = n_examples // b * b
    runs = []
    for start in range(0, full, group * b):
        run = order[start : min(start + group * b, full)]
        run = run[torch.sort(lengths[run], stable=True).indices].reshape(-1, b)
        runs.append(run[torch.randperm(len(run), generator=shared)].reshape(-1))
    return torch.cat(runs + [order[full:]])


# ---------------------------------------------------------------------------------------------
# The packed model


@dataclass
class Pack:
    """K cells trained together, with their model and where each cell's parameters live."""

    cells: list[CellSpec]
    model: Classifier
    layers: dict[str, LoRALinear]  # module path -> layer (LoRA cells)
    labels: dict[str, str]  # module path -> canonical label
    trainable: list[nn.Parameter] = field(default_factory=list)

    @property
    def K(self) -> int:
        return len(self.cells)

    @functools.cached_property
    def packed(self) -> frozenset[int]:
        """ids of the parameters whose dim 0 is the cell (LoRA factors and heads)."""
        params = [p for layer in self.layers.values() for p in (layer.A, layer.B)]
        return frozenset(map(id, params + [self.model.head.weight, self.model.head.bias]))


def build_pack(cells: Sequence[CellSpec], encoder: nn.Module, num_labels: int, pooling: str) -> Pack:
    """Inject K adapters (or unfreeze weights for full fine-tuning / BitFit, K = 1) and heads,
    and initialise cell n from its own seed: A_n from its init scheme, B_n = 0, head_n as nn.Linear."""
    cells = list(cells)
    method = cells[0].lora.method
    if method in ("full", "bitfit") and len(cells) != 1:
        raise ValueError("full fine-tuning and BitFit train one cell at a time")
    for p in encoder.parameters():
        p.requires_grad_(False)
    head = PackedLinear(len(cells), encoder.config.hidden_size, num_labels)
    model = Classifier(encoder, head, pooling)
    layers: dict[str, LoRALinear] = {}
    labels: dict[str, str] = {}
    if method == "lora":
        kinds = sorted({k for c in cells for k in c.lora.kinds}, key="qkvo".index)
        targets = find_targets(encoder, tuple(kinds))
        paths = [f"encoder.{p}" for p in targets.values()]
        ranks = [[c.lora.r if _targets(c, label) else 0 for c in cells] for label in targets]
        scalings = [scaling_factor(c.lora.alpha, c.lora.r, c.lora.scaling_rule) for c in cells]
        layers = inject(model, paths, ranks, scalings, cells[0].lora.dropout)
        labels = dict(zip(paths, targets, strict=True))
    elif method == "full":
        for p in encoder.parameters():
            p.requires_grad_(True)
    elif method == "bitfit":
        for name, p in encoder.named_parameters():
            p.requires_grad_(name.endswith("bias"))
    for n, cell in enumerate(cells):
        gen = torch.Generator().manual_seed(cell.train.seed)
        for layer in layers.values():  # module order is fixed, so each cell's draws are too
            layer.reset_adapter(n, cell.lora.init, gen)
        head.reset_head(n, gen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Pack(cells, model, layers, labels, trainable)


def _targets(cell: CellSpec, label: str) -> bool:
    kind = parse_label(label)[1]
    return kind in cell.lora.kinds or (kind == "qkv" and bool(set(cell.lora.kinds) & {"q", "k", "v"}))


def trainable_parameters(pack: Pack, n: int) -> dict[str, int]:
    """Trainable parameters of cell n: the adapter (Σ r·(d + k), paper §5.1) and the head."""
    head = pack.model.head.weight[n].numel() + pack.model.head.bias[n].numel()
    if pack.cells[n].lora.method == "lora":
        adapter = sum(layer.ranks[n] * (layer.d + layer.k) for layer in pack.layers.values())
    else:
        adapter = sum(p.numel() for p in pack.model.encoder.parameters() if p.requires_grad)
    return {"adapter": adapter, "head": head, "total": adapter + head}


def cell_slices(pack: Pack, n: int) -> dict[str, Tensor]:
    """Cell n's trainable tensors by name (views; LoRA factors without their zero padding)."""
    out = {"head.weight": pack.model.head.weight[n], "head.bias": pack.model.head.bias[n]}
    if pack.cells[n].lora.method == "lora":
        for path, layer in pack.layers.items():
            r = layer.ranks[n]
            if r:
                out[f"{path}.lora_A"] = layer.A[n, :r]
                out[f"{path}.lora_B"] = layer.B[n, :, :r]
    else:
        out.update({f"model.{k}": p for k, p in pack.model.encoder.named_parameters() if p.requires_grad})
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


def make_optimizer(pack: Pack, device: torch.device) -> torch.optim.Optimizer:
    train = pack.cells[0].train
    head = [pack.model.head.weight, pack.model.head.bias]
    body = [p for p in pack.trainable if all(p is not h for h in head)]
    method = pack.cells[0].lora.method
    body_lr = {"full": train.full_lr, "bitfit": train.bitfit_lr}.get(method, train.lr)
    groups = [{"params": body, "lr": body_lr}, {"params": head, "lr": train.head_lr or train.lr}]
    groups = [g for g in groups if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, weight_decay=train.weight_decay, fused=fused, foreach=None if fused else True)


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warm-up over warmup_ratio·total steps, then linear decay to 0."""
    warmup = int(math.ceil(warmup_ratio * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return f


def loss_per_cell(logits: Tensor, labels: Tensor, K: int, regression: bool) -> Tensor:
    """Mean loss of each cell over its own rows: (K,). Cross-entropy, or MSE for regression."""
    if regression:
        per_example = (logits.squeeze(-1).float() - labels).square()
    else:
        per_example = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return per_example.reshape(K, -1).mean(1)


@torch.no_grad()
def evaluate(pack: Pack, dev: Encoded, task: Task, device: torch.device,
             batch_size: int, autocast: bool) -> list[dict[str, float]]:
    """Metrics of every cell of the pack on the dev split (each cell sees every example)."""
    pack.model.eval()
    dev = dev.to(device)
    regression = task.num_labels == 1
    preds = [[] for _ in range(pack.K)]
    for start in range(0, len(dev), batch_size):
        index = torch.arange(start, min(start + batch_size, len(dev)))
        inputs, _ = dev.batch(index.repeat(pack.K))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = pack.model(**inputs).float()
        logits = logits.reshape(pack.K, len(index), -1)
        out = logits.squeeze(-1) if regression else logits.argmax(-1)
        for n in range(pack.K):
            preds[n].append(out[n].cpu())
    pack.model.train()
    labels = dev.labels.cpu().numpy()
    return [compute_metrics(task.metrics, torch.cat(p).numpy(), labels) for p in preds]


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


@dataclass
class StepMeter:
    """What a training loop did: optimizer steps, and for the steps after the first, the tokens
    through the model (padded: rows × batch width; real: the examples' own lengths) and the wall
    seconds they took (checkpoint writes included). The first step (compilation, allocator
    warm-up) is timed alone in warmup_seconds; evaluations in eval_seconds."""

    steps: int = 0
    tokens_padded: int = 0
    tokens_real: int = 0
    train_seconds: float = 0.0
    warmup_seconds: float = 0.0
    eval_seconds: float = 0.0


@dataclass
class CellState:
    """What the loop reports about one cell: best evaluation so far, and failure."""

    best: dict | None = None
    failed: str | None = None
    history: list[dict] = field(default_factory=list)


def train_pack(pack: Pack, task: Task, train: Encoded, dev: Encoded, tokenizer, device: torch.device,
               *, start_step: int = 0, resume: dict | None = None, states: list[CellState] | None = None,
               on_eval: Callable[[int, dict], None] | None = None,
               on_checkpoint: Callable | None = None,
               progress=None, shard: tuple[int, int] = (0, 1), meter: StepMeter | None = None) -> list[CellState]:
    """Train every cell of `pack` for the spec's epochs (or max_steps), evaluating
    evals_per_epoch times an epoch. ``on_eval(n, record)`` is called for each cell's evaluation
    (the caller saves the best adapter); ``on_checkpoint(step, optimizer, schedule, states)``
    every checkpoint_every steps. `resume` holds optimizer and schedule state dicts.

    ``shard = (rank, world)`` trains the pack data-parallel over `world` processes: each takes rows
    rank, rank + world, ... of every cell's batch, and the gradients are averaged across processes
    before clipping, so every process takes the same step as one process on the whole batch.

    `meter`, when given, counts steps, tokens and seconds (``StepMeter``)."""
    spec = pack.cells[0].train
    K, b = pack.K, spec.batch_size
    rank, world = shard
    if b % world:
        raise SpecError(f"train.batch_size={b} must be divisible by the {world} data-parallel processes")
    regression = task.num_labels == 1
    steps_per_epoch = max(1, len(train) // b)
    total = spec.max_steps or steps_per_epoch * spec.epochs
    eval_steps = {min(total, round((e + f / spec.evals_per_epoch) * steps_per_epoch))
                  for e in range(spec.epochs) for f in range(1, spec.evals_per_epoch + 1)}
    eval_steps.add(total)
    autocast = set_precision(pack, device, spec.bf16)
    pack.model.to(device).train()
    train = train.to(device)
    forward, multiple = pack.model, 1
    if spec.compile:
        forward, multiple = torch.compile(pack.model), 8  # widths rounded up: one graph serves all
    optimizer = make_optimizer(pack, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, spec.warmup_ratio))
    # LoRA dropout draws from the global generator: seed it from the pack, or restore it on resume,
    # so the same spec gives bit-identical adapters on the CPU.
    torch.manual_seed(pack.cells[0].train.seed)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        torch.set_rng_state(resume["rng"])
    states = states or [CellState() for _ in range(K)]
    orders: dict[int, list[Tensor]] = {}
    loss_sum = torch.zeros(K, device=device)
    seen = 0
    meter = meter if meter is not None else StepMeter()
    clock = time.perf_counter()
    for step in range(start_step, total):
        epoch, within = divmod(step, steps_per_epoch)
        if epoch not in orders:
            orders = {epoch: [epoch_order(len(train), c.train.resolved_data_seed, epoch, train.lengths, b,
                                          spec.group_by_length) for c in pack.cells]}
        rows = [orders[epoch][n][within * b : (within + 1) * b][rank::world] for n in range(K)]
        index = torch.cat(rows)
        inputs, labels = train.batch(index, multiple)
        if spec.compile:
            for t in inputs.values():
                torch._dynamo.mark_dynamic(t, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = forward(**inputs)
        losses = loss_per_cell(logits, labels, K, regression)
        losses.sum().backward()
        if world > 1:
            all_reduce_mean_([p.grad for p in pack.trainable if p.grad is not None])
        if spec.grad_clip is not None:
            clip_per_cell(pack, spec.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += losses.detach()
        seen += 1
        meter.steps += 1
        if meter.steps == 1:
            _sync(device)
            now = time.perf_counter()
            meter.warmup_seconds, clock = now - clock, now
        else:
            meter.tokens_padded += inputs["input_ids"].numel()
            meter.tokens_real += int(train.lengths[index].sum())
        if progress is not None:
            progress.update(1)
        if step + 1 in eval_steps:
            if world > 1:
                all_reduce_mean_([loss_sum])
            mean_loss = (loss_sum / seen).tolist()  # one host sync per evaluation
            loss_sum.zero_()
            seen = 0
            now = time.perf_counter()
            meter.train_seconds += now - clock
            results = evaluate(pack, dev, task, device, max(b, 64), autocast)
            clock = time.perf_counter()
            meter.eval_seconds += clock - now
            for n, metrics in enumerate(results):
                st = states[n]
                if st.failed:
                    continue
                if not math.isfinite(mean_loss[n]):
                    st.failed = f"training loss became {mean_loss[n]} at step {step + 1}"
                    continue
                record = {"step": step + 1, "epoch": (step + 1) / steps_per_epoch,
                          "train_loss": mean_loss[n], **metrics}
                st.history.append(record)
                improved = st.best is None or _better(metrics[task.main_metric], st.best[task.main_metric])
                if improved:
                    st.best = record
                if on_eval is not None:
                    on_eval(n, {**record, "best": improved})
        if on_checkpoint is not None and (step + 1) % spec.checkpoint_every == 0 and step + 1 < total:
            on_checkpoint(step + 1, optimizer, schedule, states)
    return states


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _better(value: float, best: float) -> bool:
    return not math.isnan(value) and (math.isnan(best) or value > best)
