"""The report's summary: it says when W0 is not the published model's (the embedded decoder's
4-bit quantised W0, a base with random weights), and lists skipped entries so that names holding commas stay apart."""

from types import SimpleNamespace

import pandas as pd

from lowrank_lab.present.entry import View
from lowrank_lab.present.report import summary

W0 = "Q4_1-quantised (4-bit GGUF) and dequantised to float32"


def _spec(provenance: dict) -> dict:
    return {"model": {"name": "embedded-causal"}, "data": {"task": "vader"},
            "sweep": {"r": [1], "seeds": [0], "targets": ["all-linear"], "scaling_rules": ["alpha/r"],
                      "inits": ["kaiming"], "baselines": []}, "provenance": provenance}


def test_the_summary_names_a_quantised_w0_and_only_then():
    quantised = "\n".join(summary(_spec({"model": {"w0": W0}}), {}, [], View(), ["A"]))
    plain = "\n".join(summary(_spec({"model": {"kind": "encoder"}}), {}, [], View(), ["A"]))
    assert f"**W0.** {W0}" in quantised and "Table 7" in quantised
    assert "**W0.**" not in plain


def test_the_summary_says_when_the_base_had_random_weights_and_only_then():
    weights = "random (seed 0), from the config alone: model.random_init"
    random = "\n".join(summary(_spec({"model": {"weights": weights}}), {}, [], View(), ["A"]))
    read = "\n".join(summary(_spec({"model": {"weights": "read from the checkpoint"}}), {}, [], View(), ["A"]))
    assert f"**Base.** Its weights are {weights}" in random and "**Base.**" not in read


def test_skipped_entries_are_listed_apart():
    shown = [SimpleNamespace(skipped=True, entry=SimpleNamespace(paper=p)) for p in ("A (2025), Fig. 2", "Table 5")]
    text = "\n".join(summary(_spec({}), {"results": pd.DataFrame()}, shown, View(), ["A"]))
    assert "A (2025), Fig. 2; Table 5." in text
