"""``lowrank-lab``: each command parses its arguments, loads the spec, calls one library function
and says where the outputs went. Errors in inputs end with one line naming the culprit, exit 2."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

SPEC = click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))


def _check_overrides(ctx: click.Context, param: click.Parameter, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Each --set's syntax, checked while parsing: before click blames the stray half of a value the
    shell split (``--set sweep.r=[1, 8]`` unquoted) as an extra argument or a spec file."""
    from lowrank_lab.spec import SpecError, parse_override

    for text in overrides:
        try:
            parse_override(text)
        except SpecError as err:
            raise click.UsageError(str(err), ctx) from None
    return overrides


OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_check_overrides,
                         help="Override a spec field, e.g. --set sweep.r=[8,64] --set train.lr=2e-4.")
SWEEP = click.argument("sweep", type=click.Path(exists=True, file_okay=False, path_type=Path))


def user_errors(fn):
    """Turn the library's input errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            from lowrank_lab.errors import is_user_error  # imports nothing heavy: errors come first

            if not is_user_error(err):
                raise
            raise click.UsageError(str(err)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lowrank-lab")
def cli() -> None:
    """Train LoRA adapters at many ranks and study their low-rank updates ΔW = (α/r)·B·A."""


@cli.group()
def spec() -> None:
    """Inspect experiment specs."""


@spec.command("show")
@SPEC
@OVERRIDES
@user_errors
def spec_show(spec: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved spec (defaults + SPEC file + --set overrides) as JSON."""
    from lowrank_lab.spec import load_spec, spec_to_dict

    click.echo(json.dumps(spec_to_dict(load_spec(spec, overrides)), indent=2))


@cli.command("rank-sweep")
@SPEC
@OVERRIDES
@click.option("--device", default=None, help="Override train.device (auto, cpu, cuda, cuda:N).")
@user_errors
def rank_sweep(spec: Path | None, overrides: tuple[str, ...], device: str | None) -> None:
    """Train LoRA at every rank × seed × target set of SPEC (default: the embedded model and data).

    Ctrl-C (or SIGTERM) checkpoints the pack in progress; rerun the same command to resume."""
    from lowrank_lab.spec import load_spec
    from lowrank_lab.workflow.train import rank_sweep as train

    extra = (f"train.device={device}",) if device else ()
    status = train(load_spec(spec, overrides + extra), echo=click.echo, warn=lambda m: click.echo(m, err=True))
    if status:
        raise SystemExit(status)


# ---------------------------------------------------------------------------------------------
# Analyses of a saved sweep: each writes cached tables under SWEEP/analysis/.

BASE_MODEL = click.option("--base", "base_model", default=None, metavar="PATH|HUB_ID",
                          help="Load W0 from here instead of the model named in the sweep's spec.")
CSV = click.option("--csv", is_flag=True, help="Also write each analysis table as CSV beside its Parquet file.")
ANALYSIS_DEVICE = click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                               help="Where the dense SVDs of W0 and W0 + ΔW run (auto: the GPU when there is one).")


def _echo_paths(paths) -> None:
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command()
@SWEEP
@click.option("--side", "sides", multiple=True, default=("A",), show_default=True,
              type=click.Choice(["A", "B", "dW_right", "dW_left"]),
              help="Singular basis compared: A's right (the paper's), B's left, or ΔW's right/left.")
@BASE_MODEL
@CSV
@ANALYSIS_DEVICE
@user_errors
def subspace(sweep: Path, sides: tuple[str, ...], base_model: str | None, csv: bool, device: str) -> None:
    """φ between ranks, seeds and W0 vs ΔW (paper Fig. 3, 4, 6, 7, 8) for every layer and matrix;
    one table per side (phi.parquet for A, phi_B.parquet for B, …)."""
    from lowrank_lab.workflow.sweep import compute_subspace

    _echo_paths(compute_subspace(sweep, sides, base_model, csv=csv, device=device))


@cli.command()
@SWEEP
@BASE_MODEL
@CSV
@ANALYSIS_DEVICE
@user_errors
def amplify(sweep: Path, base_model: str | None, csv: bool, device: str) -> None:
    """‖UᵀW0V‖_F from ΔW, W0 and random, and the amplification factor (paper Table 7, App. H.4)."""
    from lowrank_lab.workflow.sweep import compute_amplification

    _echo_paths(compute_amplification(sweep, base_model, csv=csv, device=device))


@cli.command()
@SWEEP
@BASE_MODEL
@CSV
@ANALYSIS_DEVICE
@user_errors
def spectrum(sweep: Path, base_model: str | None, csv: bool, device: str) -> None:
    """Singular values, energy, stable/effective rank, rank_90, intruders and Eckart–Young of ΔW."""
    from lowrank_lab.workflow.sweep import compute_spectrum

    _echo_paths(compute_spectrum(sweep, base_model, csv=csv, device=device))


def _lambdas(ctx: click.Context, param: click.Parameter, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 1,0.5,0", ctx, param) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values) or 1.0 not in values:
        raise click.BadParameter(f"{text!r}: each λ in [0, 1], and 1 (the adapter itself) among them", ctx, param)
    return values


EVAL_DEVICE = click.option("--device", default="cpu", show_default=True, help="Device of the evaluation (cpu, cuda, cuda:N).")
EVAL_BATCH = click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
                          help="Dev examples per cell in one packed forward pass.")


@cli.command()
@SWEEP
@BASE_MODEL
@user_errors
def dynamics(sweep: Path, base_model: str | None) -> None:
    """How ΔW's subspaces form during training, from the factor snapshots (train.snapshot_every):
    φ(A_t, A_final), φ between ranks and seeds at each snapshot beside their random baselines,
    ‖ΔW_t‖_F, stable and effective rank, rank_90 and intruders against the step."""
    from lowrank_lab.workflow.dynamics import compute_dynamics

    _echo_paths(compute_dynamics(sweep, base_model, echo=click.echo))


@cli.command()
@SWEEP
@BASE_MODEL
@EVAL_DEVICE
@EVAL_BATCH
@user_errors
def truncate(sweep: Path, base_model: str | None, device: str, batch_size: int) -> None:
    """Eckart–Young: each LoRA ΔW truncated to k = 0, 1, 2, 4, … r directions and full fine-tuning's
    dense ΔW to k = 0 … 256 (and each matrix's rank_90); the dev metric and loss of W0 + ΔW_k, all
    truncations of a cell in one packed pass; the smallest k within 0.5 points, medians over seeds."""
    from lowrank_lab.workflow.truncate import compute_truncation

    _echo_paths(compute_truncation(sweep, base_model, device, batch_size, echo=click.echo))


@cli.command()
@SWEEP
@BASE_MODEL
@click.option("--general", default=None, metavar="TASK",
              help="Text never trained on, as a data.task name (default: vader-nyt; vader-amazon after NYT).")
@click.option("--general-path", default=None, metavar="PATH", help="data.path of the --general task (a file for 'file').")
@click.option("--max-general", default=400, show_default=True, type=click.IntRange(min=1),
              help="Sentences of the general text used.")
@click.option("--lambdas", default="1,0.75,0.5,0.25,0", show_default=True, callback=_lambdas,
              help="Scales λ of the intruder directions, comma-separated, 1 among them.")
@click.option("--r", "ranks", multiple=True, type=click.IntRange(min=1),
              help="Only the LoRA cells of this rank (repeatable; default: every rank).")
@EVAL_DEVICE
@EVAL_BATCH
@user_errors
def mitigate(sweep: Path, base_model: str | None, general: str | None, general_path: str | None, max_general: int,
             lambdas: tuple[float, ...], ranks: tuple[int, ...], device: str, batch_size: int) -> None:
    """Intruder dimensions (of W0 + ΔW, Shuttleworth et al. 2024, and of ΔW alone) scaled by λ: the
    dev metric and forgetting (a decoder's next-token loss on --general text minus the base's, an
    encoder's drift of its sentence vectors) for each λ, the trade-off, and Spearman's ρ of intruder
    count against forgetting across cells."""
    from lowrank_lab.workflow.mitigate import compute_mitigation

    _echo_paths(compute_mitigation(sweep, base_model, general, general_path, max_general, lambdas, device, batch_size,
                                   ranks or None, echo=click.echo))


@cli.command()
@SWEEP
@user_errors
def tables(sweep: Path) -> None:
    """Tables 2, 5, 6, 7, 18 and storage per matrix, as Markdown, LaTeX and CSV."""
    from lowrank_lab.workflow.report import write_tables

    _echo_paths(write_tables(sweep, echo=click.echo))


@cli.command()
@SWEEP
@BASE_MODEL
@click.option("--side", default="A", type=click.Choice(["A", "B", "dW_right", "dW_left"]), show_default=True,
              help="Which φ side the figures show (A: right singular vectors of A, the paper's).")
@click.option("--module", "modules", multiple=True, metavar="KIND",
              help="Matrix kind the φ figures show (q, k, v, o, gate, up, down, qkv; repeat for several). "
                   "Default: q and v, the paper's.")
@CSV
@ANALYSIS_DEVICE
@user_errors
def report(sweep: Path, base_model: str | None, side: str, modules: tuple[str, ...], csv: bool, device: str) -> None:
    """One Markdown and HTML report with every figure and table (computes missing tables first)."""
    from lowrank_lab.workflow.report import write_report

    _echo_paths(write_report(sweep, base_model, echo=click.echo, side=side, csv=csv, modules=modules, device=device))


# ---------------------------------------------------------------------------------------------
# Adapters lowrank-lab did not train (PEFT folders): tables and figures under --out.

BASE = click.option("--base", default=None, metavar="PATH|HUB_ID",
                    help="Base model (default: the adapter_config's base_model_name_or_path).")
OUT = click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
                   help="Output folder (default: ADAPTER/analysis).")


def _echo_notes(paths, notes) -> None:
    for note in notes:
        click.echo(f"note: {note}")
    _echo_paths(paths)


@cli.command()
@click.argument("adapter", type=click.Path(exists=True, file_okay=False, path_type=Path))
@BASE
@click.option("--original-base", default=None, metavar="PATH",
              help="For PiSSA/OLoRA-style inits: the base before PEFT mutated it.")
@OUT
@user_errors
def analyze(adapter: Path, base: str | None, original_base: str | None, out: Path | None) -> None:
    """Spectra, φ(W0, ΔW), amplification and intruders of a PEFT LoRA adapter (and its sub-folders)."""
    from lowrank_lab.workflow.external import analyze as analyze_adapters

    _echo_notes(*analyze_adapters(adapter, base, original_base, out))


@cli.command()
@click.argument("adapters", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@BASE
@OUT
@user_errors
def compare(adapters: tuple[Path, ...], base: str | None, out: Path | None) -> None:
    """φ and ΔW distances (Frobenius, spectral, principal angles) between every pair of ADAPTERS."""
    from lowrank_lab.workflow.external import compare as compare_adapters

    _echo_notes(*compare_adapters(adapters, base, out))


@cli.command("sample-data")
@click.argument("kind", type=click.Choice(["chat", "instruction"]))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@user_errors
def sample_data(kind: str, out: Path) -> None:
    """Write a chat- or instruction-format sample built from VADER (offline) for data.task=KIND."""
    from lowrank_lab.workflow.data import sample_data as write

    path, rows = write(kind, out)
    click.echo(f"{path}: {rows} rows of {kind} data from the VADER movie reviews")
