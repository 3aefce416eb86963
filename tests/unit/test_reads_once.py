"""A command reads each file once and hands the objects to every analysis that needs them: a fresh
`report` of the fixture sweep opens every adapter file once, never loads the base model (each W0
comes from its safetensors shard) and reads each W0 once."""

import shutil
from collections import Counter
from pathlib import Path

from lowrank_lab.store import base_weights, peft_format, tensors
from lowrank_lab.store import tables as st
from lowrank_lab.workflow.report import write_report

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sweep"


def test_a_fresh_report_reads_each_adapter_and_the_base_once(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    opened, loaded, w0 = Counter(), Counter(), Counter()

    def read_tensors(path):
        opened[Path(path).resolve()] += 1
        return tensors.read_tensors(path)

    def load_model(name, *args, **kwargs):
        loaded[str(name)] += 1
        return real_load(name, *args, **kwargs)

    def shard_W0(self, path):
        w0[path] += 1
        return real_W0(self, path)

    real_load, real_W0 = base_weights.load_model, base_weights.ShardReader.W0
    monkeypatch.setattr(peft_format, "read_tensors", read_tensors)
    monkeypatch.setattr(base_weights, "load_model", load_model)
    monkeypatch.setattr(base_weights.ShardReader, "W0", shard_W0)
    base_weights.base_reader.cache_clear()  # no base left loaded by another test
    write_report(sweep, base_model=str(FIXTURE / "base"), echo=lambda *_: None)

    adapters = sorted(p.resolve() for p in sweep.glob("cells/*/adapter/adapter_model.safetensors"))
    assert len(adapters) >= 24  # 4 ranks × 2 seeds × 3 target sets
    assert {p: opened[p] for p in adapters} == dict.fromkeys(adapters, 1)
    assert not loaded and len(w0) >= 16 and set(w0.values()) == {1}  # 4 layers × q, k, v, o at least
    assert all(st.is_current(sweep, name) for name in st.TABLES)  # and every table was computed
