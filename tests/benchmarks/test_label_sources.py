"""The label-source table: scores per source over runs and differences paired by run (no model run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("label_sources", REPO / "benchmarks" / "label_sources.py")
label_sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(label_sources)


def _run(st: float, sl: float, rectified: float) -> dict:
    def source(miou, share):
        return {"miou": miou, "mpa": miou + 0.1, "pa": 0.7, "rare_miou": miou / 2, "share": share}

    return {"sources": {"ST": source(st, [1.0, 0.0]), "SL": source(sl, [0.5, 0.5]),
                        "rectified": source(rectified, [0.75, 0.25])},
            "ground_truth_share": [0.5, 0.5]}


def test_paired_differences_and_the_distance_of_the_class_shares():
    text = label_sources.markdown([_run(0.20, 0.25, 0.26), _run(0.30, 0.31, 0.33)], "cmd")
    assert "| SL - ST | +3.0 ± 2.8 | +5.0, +1.0 |" in text
    assert "| rectified - SL | +1.5 ± 0.7 | +1.0, +2.0 |" in text
    # Total variation to the ground truth's shares: ST 50 %, SL 0 %, rectified 25 % in both runs.
    assert "| ST: argmax P_ST (self-training, w/o SL) | 25.0 ± 7.1 | 35.0 ± 7.1 | 70.0 ± 0.0 | 12.5 ± 3.5 " \
           "| 50.0 ± 0.0 | 2 |" in text
    assert "| 25.0 ± 0.0 | 2 |" in text
