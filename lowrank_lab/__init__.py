"""lowrank-lab: train LoRA adapters at many ranks and study their low-rank updates ΔW = (α/r)·B·A.

Homes, lowest first; each imports only its own and those below it:

    spec      the experiment spec (frozen dataclasses; load, override, expand)
    maths     pure torch functions: SVDs, φ, metrics; ``LowRankUpdate`` (A, B, scaling)
    model     the LoRA layer, base models, module labels
    store     every file and format: sweeps, cells, PEFT adapters, tables, figures
    train     training loops and the sweep runner
    analysis  updates in, tidy DataFrames out (opens no file)
    present   DataFrames in, figures, tables and report text out (no torch)
    workflow  one call per command: read via store, compute via analysis, draw via present

The notebook API (``lowrank_lab.api``) is importable from here, loaded on first use so that
``import lowrank_lab.present.plotting`` never imports torch::

    import lowrank_lab as ll
    sweep = ll.open_sweep("tests/fixtures/sweep")
    sweep.cells, sweep.phi(), sweep.amplification()
"""

__version__ = "0.1.0"

_API = ("open_sweep", "load_adapter", "compare", "Sweep", "Adapter")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from lowrank_lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lowrank_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
