"""The analyses that run a sweep's cells side by side in threads (analysis.sweep.map_runs) give
the same tables as one cell after another, whatever order the threads finish in."""

import pandas as pd
import torch

from lowrank_lab.analysis import sweep as sa
from lowrank_lab.workflow.sweep import SweepInputs


def _tables(sweep, threads: int) -> dict[str, pd.DataFrame]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = SweepInputs(sweep)
        tables = sa.spectrum_frames(inputs.runs, inputs.W0, inputs.full)
        tables["amplification"] = sa.amplification_frame(inputs.runs, inputs.W0)
        return tables
    finally:
        torch.set_num_threads(before)


def test_threaded_tables_equal_sequential(analyzed):
    alone, threaded = _tables(analyzed, 1), _tables(analyzed, 4)
    assert len(alone["intruders"]) > 0 and len(alone["amplification"]) > 0
    for name in ("intruders", "amplification", "spectrum"):
        pd.testing.assert_frame_equal(threaded[name], alone[name], check_exact=False, rtol=1e-10)


def test_map_runs_keeps_order_and_restores_threads(analyzed):
    inputs = SweepInputs(analyzed)
    sweep_runs = sa.lora_runs(inputs.runs)
    torch.set_num_threads(3)
    names = sa.map_runs(lambda run: run.path.name, sweep_runs, inputs.W0)
    assert names == [run.path.name for run in sweep_runs] and len(names) > 1
    assert torch.get_num_threads() == 3
