"""One experiment spec: frozen dataclasses with defaults, spec files that state only what differs.

A spec file (TOML, in ``analyses/``) has one table per section::

    [sweep]
    r = [8, 64]
    seeds = [0, 1]

    [data]
    task = "glue:SST-2"

and ``--set section.key=value`` overrides any field (``--set sweep.r=[1,2,4]``,
``--set train.lr=2e-4``). Defaults live only in the dataclasses of ``spec.sections``; each
field's meaning is written once, as the comment above it. ``expand_sweep`` turns an
``ExperimentSpec`` into concrete ``CellSpec``s, one per trained model. Reading and overriding
live in ``spec.load``; both are re-exported here. stdlib only.

One home per quantity: the fields a sweep sets per cell (``lora.r``, ``lora.targets``,
``lora.scaling_rule``, ``lora.init``, ``lora.method``, ``train.seed``) are refused in a spec
(``lora.r is set by the sweep: use sweep.r``). Every number must be finite.
"""

from lowrank_lab.spec.load import (build_spec, cell_from_dict, changed_keys, load_spec, parse_override,
                                   spec_to_dict)
from lowrank_lab.spec.cells import CellSpec, expand_sweep
from lowrank_lab.spec.sections import (ADAPTER_METHODS, EMBEDDED_MODEL, INITS, LABEL_KINDS, MATRIX_KINDS, METHODS, SCALING_RULES,
                                       SECTIONS, DataSpec, ExperimentSpec, LoRASpec, ModelSpec, SpecError,
                                       SweepSpec, TrainSpec)
from lowrank_lab.spec.sections import ALL_LINEAR, REPORTERS, TARGET_KINDS, TEXT_METRICS, budget_r, kind_order, needs_model_kinds

__all__ = ["REPORTERS", "TEXT_METRICS", "ADAPTER_METHODS", "EMBEDDED_MODEL", "INITS", "LABEL_KINDS", "MATRIX_KINDS", "METHODS", "SCALING_RULES", "SECTIONS",
           "CellSpec", "DataSpec", "ExperimentSpec", "LoRASpec", "ModelSpec", "SpecError", "SweepSpec", "TrainSpec",
           "build_spec", "cell_from_dict", "changed_keys", "expand_sweep", "load_spec", "parse_override",
           "spec_to_dict", "ALL_LINEAR", "TARGET_KINDS", "budget_r", "kind_order", "needs_model_kinds"]
