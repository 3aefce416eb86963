"""store.exported: the committed results' format (data/<table>.parquet beside its sidecar), written
and read in one place; the middle layer comes from the sidecar."""

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from lowrank_lab.store import exported, files
from lowrank_lab.store import tables as st

pytest.importorskip("pyarrow")
ROOT = Path(__file__).resolve().parents[2]


def table() -> pd.DataFrame:
    return pd.DataFrame({"targets": ["", "q,v", "q,v"], "layer": [None, 0, 3], "value": [0.1, 1 / 3, 2 / 3]})


def test_a_written_table_reads_back_as_written_with_its_sidecar(tmp_path):
    written = table().astype({"layer": "Int64"})
    exported.write(tmp_path, "amplification", written, {"layers": [0, 1, 2, 3], "kept": "every row"})
    back = exported.read(tmp_path, "amplification")
    pd.testing.assert_frame_equal(back, written)
    meta = exported.read_sidecar(tmp_path, "amplification")
    assert meta["rows_kept"] == 3 and meta["format"] == exported.FORMAT and meta["kept"] == "every row"
    assert exported.names(tmp_path) == ["amplification"]


@pytest.mark.parametrize("layers, middle", [([0, 1, 2, 3, 4, 5], 2), (list(range(30)), 14), ([7], 7), ([1, 4], 1)])
def test_the_middle_layer_is_the_sidecars(tmp_path, layers, middle):
    exported.write(tmp_path, "phi", table(), {"layers": layers})
    assert exported.middle_layer(tmp_path, "phi") == middle


def test_a_missing_table_or_layer_list_names_the_file(tmp_path):
    with pytest.raises(files.RunError, match="results.parquet: not in the exported results"):
        exported.read(tmp_path, "results")
    exported.write(tmp_path, "results", table(), {})
    with pytest.raises(files.RunError, match="results.json: no 'layers'"):
        exported.middle_layer(tmp_path, "results")


def test_a_parquet_copy_of_a_cached_table_reads_as_its_csv(tmp_path):
    table().to_csv(tmp_path / "phi.csv", index=False)
    as_csv = st.read_csv_table(tmp_path / "phi.csv")
    exported.parquet_copy(tmp_path / "phi.csv")
    (tmp_path / "phi.csv").unlink()
    pd.testing.assert_frame_equal(exported.read_analysis(tmp_path, "phi"), as_csv)


def test_every_committed_sidecar_of_a_layered_table_names_its_layers():
    for path in sorted((ROOT / "figures" / "results").glob("*/data/*.parquet")):
        layers = exported.layers_of(pd.read_parquet(path))
        if layers:
            recorded = exported.read_sidecar(path.parent.parent, path.stem)["layers"]
            assert set(layers) <= set(recorded), path


def test_export_records_the_layers_of_the_whole_table(tmp_path):
    """The sidecar holds the layers before rows are cut, so the middle layer is the model's."""
    export = runpy.run_path(str(ROOT / "figures" / "export_results.py"))
    sweep = tmp_path / "sweep"
    (sweep / "analysis").mkdir(parents=True)
    amp = pd.DataFrame({"targets": "q,v", "module": "q", "layer": [0, 1, 2, 3, 4], "r": 4, "value": 1.0})
    amp.to_csv(sweep / "analysis" / "amplification.csv", index=False)
    files.write_json(sweep / "analysis" / "amplification.json",
                     {"rows": 5, "sweep_spec": {"sweep": {"out_dir": "runs"}}})
    argv, sys.argv = sys.argv, ["export_results.py", str(sweep), "--out", str(tmp_path / "out")]
    try:
        export["main"]()
    finally:
        sys.argv = argv
    assert exported.read_sidecar(tmp_path / "out", "amplification")["layers"] == [0, 1, 2, 3, 4]
    assert exported.middle_layer(tmp_path / "out", "amplification") == 2
