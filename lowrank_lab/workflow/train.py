"""``lowrank-lab rank-sweep``: claim the sweep folder, train its cells, say how it ended.

The claim (the spec against a rerun's, the paths, the lock) comes before torch, data and model
load, so a refused run says so at once; training is ``train.sweep.train_claimed``; the closing
summary is ``workflow.report.sweep_summary``. Interrupts end with the shell's status for the
signal (the pack in progress checkpointed, finished cells kept).
"""

from __future__ import annotations

from collections.abc import Callable

from lowrank_lab.spec import ExperimentSpec
from lowrank_lab.store import layout
from lowrank_lab.store.files import DiskFull


def rank_sweep(spec: ExperimentSpec, echo: Callable[[str], None] = print,
               warn: Callable[[str], None] = print) -> int:
    """Train every unfinished cell of `spec`'s sweep; print the results table and where they are.
    Returns the exit status: 0, 1 when a cell failed (NaN loss) or the disk filled up while saving
    (``DiskFull``), 128 + signal when interrupted (rerun the same command to resume), 130 on a
    KeyboardInterrupt outside a pack."""
    try:
        with layout.claim_sweep(spec) as sweep:
            from lowrank_lab.train.interrupt import Interrupted
            from lowrank_lab.train.sweep import train_claimed

            try:
                train_claimed(spec, sweep, echo)
            except Interrupted as err:
                warn(str(err))
                return err.exit_code
    except KeyboardInterrupt:
        warn("interrupted; rerun to resume (finished cells are kept)")
        return 130
    except DiskFull as err:  # one line naming the file; the finished cells are kept, a rerun finishes
        warn(str(err))
        return err.exit_code
    from lowrank_lab.workflow.report import sweep_summary

    echo(sweep_summary(sweep))
    echo(f"results: {sweep}")
    return 1 if layout.read_manifest(sweep).names("failed") else 0
