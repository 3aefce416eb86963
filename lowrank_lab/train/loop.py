"""Training: a pack of K cells trains in one loop.

Every cell of a pack shares the frozen base and the task; each has its own LoRA factors, head,
initialisation seed and data order. One step gathers b examples per cell (cell n's rows are
[n·b, (n+1)·b) of the batch), runs one forward and backward pass, and takes one AdamW step over
all cells' parameters. AdamW is elementwise and the loss is a sum of per-cell means, so each
cell's update is exactly what it would be alone; gradient clipping is per cell for the same
reason. A pack of one cell is plain LoRA training. A decoder's pack trains the same way on the
next-token loss of its completions (``train.causal``).

``train_pack`` is set-up (``_set_up``), the step (``_step``) and bookkeeping: evaluations
(``_evaluate``), checkpoints on a step and a time cadence, and stopping on a signal.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lowrank_lab.spec import SpecError, TrainSpec
from lowrank_lab.train.batches import Encoded, epoch_order
from lowrank_lab.model import varlen
from lowrank_lab.train.causal import completion_losses, evaluate_causal, varlen_completion_losses
from lowrank_lab.train.data import LOWER_IS_BETTER, Task
from lowrank_lab.train.distributed import all_reduce_mean_
from lowrank_lab.train.activations import checkpoint_layers
from lowrank_lab.train.interrupt import Interrupted, StopRequest
from lowrank_lab.train.optim import lr_lambda
from lowrank_lab.train.pack import GradBuffers, Pack, clip_per_cell, make_optimizer, set_precision
from lowrank_lab.maths.metrics import compute_metrics


def loss_per_cell(logits: Tensor, labels: Tensor, K: int, regression: bool) -> Tensor:
    """Mean loss of each cell over its own rows: (K,). Cross-entropy, or MSE for regression."""
    if regression:
        per_example = (logits.squeeze(-1).float() - labels).square()
    else:
        per_example = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return per_example.reshape(K, -1).mean(1)


@torch.no_grad()
def evaluate(pack: Pack, dev: Encoded, task: Task, device: torch.device,
             batch_size: int, autocast: bool, tokenizer=None) -> list[dict[str, float]]:
    """Metrics of every cell of the pack on the dev split (each cell sees every example), and its
    dev loss (the training loss, cross-entropy or MSE, averaged over the dev examples). A decoder's
    pack: ``causal.evaluate_causal`` (completion loss, perplexity, greedy decoding; `dev` a CausalDev)."""
    pack.model.eval()
    if pack.decoder:
        results = evaluate_causal(pack.model, pack.K, dev, task, tokenizer, device, batch_size, autocast)
        pack.model.train()
        return results
    dev = dev.to(device)
    regression = task.num_labels == 1
    preds = [[] for _ in range(pack.K)]
    loss_sum = torch.zeros(pack.K, device=device)
    for start in range(0, len(dev), batch_size):
        index = torch.arange(start, min(start + batch_size, len(dev)))
        inputs, labels = dev.batch(index.repeat(pack.K))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = pack.model(**inputs).float()
        loss_sum += loss_per_cell(logits, labels, pack.K, regression) * len(index)
        logits = logits.reshape(pack.K, len(index), -1)
        out = logits.squeeze(-1) if regression else logits.argmax(-1)
        for n in range(pack.K):
            preds[n].append(out[n].cpu())
    pack.model.train()
    labels = dev.labels.cpu().numpy()
    dev_loss = (loss_sum / len(dev)).tolist()
    return [{**compute_metrics(task.metrics, torch.cat(p).numpy(), labels), "dev_loss": dev_loss[n]}
            for n, p in enumerate(preds)]


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


@dataclass(frozen=True)
class StepPlan:
    """The steps of a pack: per epoch, in all (the spec's epochs, or max_steps), and the steps
    after which it evaluates (evals_per_epoch times an epoch, and at the end)."""

    steps_per_epoch: int
    total: int
    eval_steps: frozenset[int]

    @classmethod
    def of(cls, spec: TrainSpec, n_examples: int) -> StepPlan:
        steps_per_epoch = max(1, n_examples // spec.batch_size)
        total = spec.max_steps or steps_per_epoch * spec.epochs
        evals = {min(total, round((e + f / spec.evals_per_epoch) * steps_per_epoch))
                 for e in range(spec.epochs) for f in range(1, spec.evals_per_epoch + 1)}
        return cls(steps_per_epoch, total, frozenset(evals | {total}))


@dataclass
class Training:
    """A pack set up to train: what every step reads, and the running sums it updates."""

    pack: Pack
    task: Task
    train: Encoded
    dev: Encoded
    device: torch.device
    plan: StepPlan
    shard: tuple[int, int]
    autocast: bool
    forward: Callable
    multiple: int
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    states: list[CellState]
    meter: StepMeter
    loss_sum: Tensor
    seen: int = 0
    log_sum: Tensor | None = None  # the training loss since the last log line (train.log_every)
    log_seen: int = 0
    orders: dict[int, list[Tensor]] = field(default_factory=dict)
    clock: float = 0.0
    tokenizer: object = None
    grads: GradBuffers | None = None  # train.fused_clip: the packed gradients' buffers
    layers: varlen.LayerForwards | None = None  # train.unpadded with train.compile: the compiled layers
    validation: Encoded | None = None  # data.validation_size: the split the best evaluation is chosen on

    @property
    def spec(self) -> TrainSpec:
        return self.pack.cells[0].train


def train_pack(pack: Pack, task: Task, train: Encoded, dev: Encoded, tokenizer, device: torch.device,
               *, start_step: int = 0, resume: dict | None = None, states: list[CellState] | None = None,
               on_eval: Callable[[int, dict], None] | None = None, on_log: Callable[[int, dict], None] | None = None,
               on_checkpoint: Callable | None = None, on_snapshot: Callable[[int], None] | None = None,
               stop: StopRequest | None = None, progress=None, shard: tuple[int, int] = (0, 1), meter: StepMeter | None = None,
               validation: Encoded | None = None) -> list[CellState]:
    """Train every cell of `pack` for the spec's epochs (or max_steps), evaluating
    evals_per_epoch times an epoch. ``on_eval(n, record)`` is called for each cell's evaluation
    (the caller saves the best adapter), ``on_log(n, record)`` every train.log_every steps with the
    mean training loss since the last log (the learning curve); ``on_checkpoint(step, optimizer, schedule, states)``
    every checkpoint_every steps, every checkpoint_seconds, and when `stop` (a ``StopRequest``)
    is set, after which ``Interrupted(step)`` is raised. ``on_snapshot(step)`` at step 0 and after
    every train.snapshot_every steps and the last (the caller saves the factors). `resume` holds
    optimizer and schedule state dicts.

    ``shard = (rank, world)`` trains the pack data-parallel over `world` processes: each takes rows
    rank, rank + world, ... of every cell's batch, and the gradients are averaged across processes
    before clipping, so every process takes the same step as one process on the whole batch (and
    they agree on when to stop).

    `meter`, when given, counts steps, tokens and seconds (``StepMeter``). `validation`, when given
    (held out of the training data), is what each cell's best evaluation is chosen on; the dev
    metrics of that evaluation are reported beside it, never used to choose it."""
    t = _set_up(pack, task, train, dev, device, resume, states, shard, meter)
    t.tokenizer, t.validation = tokenizer, validation
    total, last_checkpoint = t.plan.total, time.monotonic()
    snapshot = on_snapshot if t.spec.snapshot_every else None
    if snapshot is not None and start_step == 0:
        snapshot(0)
    for step in range(start_step, total):
        agreed = _step(t, step, bool(stop))
        if snapshot is not None and ((step + 1) % t.spec.snapshot_every == 0 or step + 1 == total):
            snapshot(step + 1)
        if progress is not None:
            progress.update(1)
        if t.spec.log_every and (step + 1) % t.spec.log_every == 0:
            _log(t, step, on_log)
        if step + 1 in t.plan.eval_steps:
            _evaluate(t, step, on_eval)
        if step + 1 == total:
            break
        stopping = bool(stop) if agreed is None else agreed
        due = (step + 1) % t.spec.checkpoint_every == 0 or time.monotonic() - last_checkpoint >= t.spec.checkpoint_seconds
        if on_checkpoint is not None and (due or stopping):
            on_checkpoint(step + 1, t.optimizer, t.schedule, t.states)
            last_checkpoint = time.monotonic()
        if stopping:
            raise Interrupted(step + 1, getattr(stop, "signum", None) or signal.SIGINT, [c.name for c in pack.cells])
    return t.states


def _set_up(pack: Pack, task: Task, train: Encoded, dev: Encoded, device: torch.device, resume: dict | None,
            states: list[CellState] | None, shard: tuple[int, int], meter: StepMeter | None) -> Training:
    """Check the shard, put the pack on its device in its precision, make its optimizer and
    schedule, seed or restore the RNG, and start the running sums."""
    spec = pack.cells[0].train
    if spec.batch_size % shard[1]:
        raise SpecError(f"train.batch_size={spec.batch_size} must be divisible by the {shard[1]} data-parallel processes")
    plan = StepPlan.of(spec, len(train))
    autocast = set_precision(pack, device, spec.bf16)
    pack.model.to(device).train()
    train = train.to(device)
    forward, multiple = (pack.model.base_model if pack.decoder else pack.model), 1  # a decoder's: hidden states
    layers = None  # the unpadded step's layer forwards; None: the eager ones
    if spec.unpadded:
        _check_unpadded(pack)
        if spec.compile:
            layers = varlen.compiled()
    elif spec.compile:
        forward, multiple = torch.compile(forward), 8  # widths rounded up: one graph serves all
    if spec.gradient_checkpointing:
        layers = checkpoint_layers(pack, layers)
    optimizer = make_optimizer(pack, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(plan.total, spec.warmup_ratio))
    # LoRA dropout draws from the global generator: seed it from the pack, or restore it on resume,
    # so the same spec gives bit-identical adapters on the CPU.
    torch.manual_seed(spec.seed)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        torch.set_rng_state(resume["rng"])
    packed = all(id(p) in pack.packed for p in pack.trainable)  # full / BitFit clip as before
    grads = GradBuffers(pack) if spec.fused_clip and packed else None
    return Training(pack, task, train, dev, device, plan, shard, autocast, forward, multiple, optimizer, schedule,
                    states or [CellState() for _ in range(pack.K)], meter if meter is not None else StepMeter(),
                    torch.zeros(pack.K, device=device), clock=time.perf_counter(), grads=grads, layers=layers)


UNPADDED_METHODS = ("lora", "head", "full", "bitfit")  # what model.varlen's layer forward computes


def _check_unpadded(pack: Pack) -> None:
    """SpecError unless the unpadded forward is written for the pack's model and method (an adapter
    that changes a layer's own computation, such as a prefix or a bottleneck, is not)."""
    method = pack.cells[0].lora.method
    if method not in UNPADDED_METHODS:
        raise SpecError(f"train.unpadded=true: lora.method={method!r} has no unpadded forward "
                        f"(use one of {', '.join(UNPADDED_METHODS)}, or train.unpadded=false)")
    try:
        varlen.check_supported(pack.base)
    except ValueError as err:
        raise SpecError(f"train.unpadded=true: {err}") from None


def _step(t: Training, step: int, stop: bool) -> bool | None:
    """One optimizer step of every cell. Under data parallelism, returns whether any process was
    asked to stop (agreed in the gradients' all-reduce, so that all stop after the same step);
    else None (the caller reads its own request after the step's bookkeeping)."""
    spec, K, b = t.spec, t.pack.K, t.spec.batch_size
    rank, world = t.shard
    epoch, within = divmod(step, t.plan.steps_per_epoch)
    if epoch not in t.orders:
        t.orders = {epoch: [epoch_order(len(t.train), c.train.resolved_data_seed, epoch, t.train.lengths, b,
                                        spec.group_by_length) for c in t.pack.cells]}
    rows = [t.orders[epoch][n][within * b : (within + 1) * b][rank::world] for n in range(K)]
    index = torch.cat(rows)
    losses, processed = _losses(t, index)
    losses.sum().backward()
    agreed = None
    if world > 1:
        flag = torch.tensor([float(stop)], device=t.device)
        all_reduce_mean_([p.grad for p in t.pack.trainable if p.grad is not None] + [flag])
        agreed = bool(flag.item() > 0)  # one host sync per step, under data parallelism only
    if spec.grad_clip is not None and t.grads is not None:
        t.grads.clip(spec.grad_clip)
    elif spec.grad_clip is not None:
        clip_per_cell(t.pack, spec.grad_clip)
    t.optimizer.step()
    t.schedule.step()
    if t.grads is not None:
        t.grads.zero()
    else:
        t.optimizer.zero_grad(set_to_none=True)
    t.loss_sum += losses.detach()
    t.seen += 1
    t.log_sum = losses.detach() if t.log_sum is None else t.log_sum + losses.detach()
    t.log_seen += 1
    _count(t, processed, index)
    return agreed


def _losses(t: Training, index: Tensor) -> tuple[Tensor, int]:
    """(each cell's mean loss (K,), token positions the model processed) of the batch of rows
    `index`: padded to its longest row, or unpadded (train.unpadded: ``model.varlen``)."""
    K = t.pack.K
    if t.spec.unpadded:
        inputs, labels, layout = t.train.varlen_batch(index, K)
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.autocast):
            if t.pack.decoder:
                hidden = varlen.decoder_hidden(t.pack.model, inputs["input_ids"], layout, t.layers)
                sums, counts = varlen_completion_losses(hidden, layout, t.pack.model.get_output_embeddings())
                return sums / counts, layout.n_tokens
            logits = varlen.classifier_logits(t.pack.model, inputs, layout, t.layers)
        return loss_per_cell(logits, labels, K, t.task.num_labels == 1), layout.n_tokens
    inputs, labels = t.train.batch(index, t.multiple)
    if t.spec.compile:
        for x in inputs.values():
            torch._dynamo.mark_dynamic(x, 1)
    with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.autocast):
        if t.pack.decoder:
            hidden = t.forward(**inputs, use_cache=False).last_hidden_state
            sums, counts = completion_losses(hidden, labels, t.pack.model.get_output_embeddings(), K)
            losses = sums / counts  # each cell's mean over its own completion tokens
        else:
            losses = loss_per_cell(t.forward(**inputs), labels, K, t.task.num_labels == 1)
    return losses, inputs["input_ids"].numel()


def _count(t: Training, padded: int, index: Tensor) -> None:
    t.meter.steps += 1
    if t.meter.steps == 1:
        _sync(t.device)
        now = time.perf_counter()
        t.meter.warmup_seconds, t.clock = now - t.clock, now
    else:
        t.meter.tokens_padded += padded
        t.meter.tokens_real += int(t.train.lengths[index].sum())


def _log(t: Training, step: int, on_log: Callable[[int, dict], None] | None) -> None:
    """A learning-curve point per cell: the mean training loss of the steps since the last one."""
    if t.shard[1] > 1:
        all_reduce_mean_([t.log_sum])
    mean_loss = (t.log_sum / t.log_seen).tolist()  # one host sync per log_every steps
    t.log_sum, t.log_seen = None, 0
    for n, loss in enumerate(mean_loss):
        if on_log is not None and not t.states[n].failed:
            on_log(n, {"kind": "train", "step": step + 1, "epoch": (step + 1) / t.plan.steps_per_epoch,
                       "train_loss": loss})


def _evaluate(t: Training, step: int, on_eval: Callable[[int, dict], None] | None) -> None:
    """Evaluate every cell after `step`: its mean training loss since the last evaluation and its
    dev metrics; keep the best, mark a cell whose loss is not finite as failed."""
    if t.shard[1] > 1:
        all_reduce_mean_([t.loss_sum])
    mean_loss = (t.loss_sum / t.seen).tolist()  # one host sync per evaluation
    t.loss_sum.zero_()
    t.seen = 0
    now = time.perf_counter()
    t.meter.train_seconds += now - t.clock
    results = evaluate(t.pack, t.dev, t.task, t.device, max(t.spec.batch_size, 64), t.autocast, t.tokenizer)
    held = (evaluate(t.pack, t.validation, t.task, t.device, max(t.spec.batch_size, 64), t.autocast, t.tokenizer)
            if t.validation is not None else None)
    t.clock = time.perf_counter()
    t.meter.eval_seconds += t.clock - now
    main = t.task.main_metric
    # chosen on the held-out split when there is one ("val_" metrics), else on dev itself
    chosen = f"{VAL}{main}" if held is not None else main
    for n, metrics in enumerate(results):
        if held is not None:
            metrics = {**metrics, **{f"{VAL}{k}": v for k, v in held[n].items()}}
        st = t.states[n]
        if st.failed:
            continue
        if not math.isfinite(mean_loss[n]):
            st.failed = f"training loss became {mean_loss[n]} at step {step + 1}"
            continue
        record = {"step": step + 1, "epoch": (step + 1) / t.plan.steps_per_epoch, "train_loss": mean_loss[n], **metrics}
        st.history.append(record)
        improved = st.best is None or _better(metrics[chosen], st.best[chosen], main)
        if improved:
            st.best = record
        if on_eval is not None:
            on_eval(n, {**record, "best": improved})


VAL = "val_"  # prefix of the held-out split's metrics in an evaluation record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _better(value: float, best: float, metric: str = "") -> bool:
    """Whether `value` beats `best`: higher, or lower for loss-like metrics (``LOWER_IS_BETTER``)."""
    if math.isnan(value):
        return False
    return math.isnan(best) or (value < best if metric in LOWER_IS_BETTER else value > best)
