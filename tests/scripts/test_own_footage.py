"""configs/own_footage.json, the real use case: a labelled simulator in the GTA5 layout -> unlabelled footage
in a folder. Its warm-up trains (--quick) on a tiny stand-in of both, and evaluating the result says that
there is nothing to score and how to look at or score the model instead."""

from __future__ import annotations

import shutil

import pytest

from cpsl_tf.evaluation.cli import main as evaluate
from cpsl_tf.training.cli import main as train
from tests.conftest import REPO


@pytest.mark.slow  # a real warm-up: about 20 s on 2 cores
def test_own_footage_trains_without_target_labels_and_evaluation_says_so(tiny_bench, tmp_path, capsys):
    footage = tmp_path / "footage"
    (footage / "drive1").mkdir(parents=True)
    for image in sorted((tiny_bench / "target" / "leftImg8bit" / "train").rglob("*.png"))[:4]:
        shutil.copy(image, footage / "drive1" / image.name.replace("_leftImg8bit", ""))
    run = tmp_path / "run"
    assert train(["--config", str(REPO / "configs" / "own_footage.json"), "--quick", "--stage", "warmup",
                  "--run-dir", str(run), "--set", f"data.source_root={tiny_bench / 'source'}",
                  "--set", f"data.target_root={footage}", "--set", "warmup.mode=source_only"]) == 0
    capsys.readouterr()
    assert evaluate(["--checkpoint", str(run / "warmup" / "model.weights.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"error: {footage}: none of its 4 folder images has a ground-truth label" in err
    assert "nothing to score" in err and "--label-root DIR" in err and "Traceback" not in err
