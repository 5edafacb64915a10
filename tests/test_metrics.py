import numpy as np
import pytest

from cpsl_tf import labels, metrics
from tests.conftest import fixture_path


def test_matches_official_fixture_exactly():
    data = np.load(fixture_path("metrics.npz"))
    gt = labels.official_to_project_ignore(data["gt"])
    conf = metrics.confusion_matrix(gt, data["pred"], 19)
    assert conf.dtype == np.int64 and conf.shape == (19, 19)
    np.testing.assert_array_equal(conf, data["conf"])
    result = metrics.scores(conf)
    for key in ("miou", "mpa", "pa", "fwiou"):
        assert result[key] == float(data[key]), key
    # The official ignore value is accepted when named explicitly.
    np.testing.assert_array_equal(metrics.confusion_matrix(data["gt"], data["pred"], 19, 250), conf)


def test_scores_against_direct_counting(rng):
    gt = rng.integers(0, 5, size=(3, 20, 30))
    gt[0, :2] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 5, size=gt.shape)) % 5
    result = metrics.scores(metrics.confusion_matrix(gt, pred, 6))
    valid = gt != 255
    for k in range(5):
        inter = np.sum((gt == k) & (pred == k) & valid)
        union = np.sum(((gt == k) | (pred == k)) & valid)
        assert result["iou"][k] == pytest.approx(inter / union)
        assert result["acc"][k] == pytest.approx(inter / np.sum((gt == k) & valid))
    # Class 5 is absent from both: NaN and left out of the means.
    assert np.isnan(result["iou"][5]) and np.isnan(result["acc"][5])
    assert result["miou"] == pytest.approx(np.mean(result["iou"][:5]))
    assert result["pa"] == pytest.approx(np.mean((gt == pred)[valid]))


def test_subset_means_and_bad_predictions():
    conf = np.diag([10, 0, 5]).astype(np.int64)
    conf[1, 0] = 5
    result = metrics.scores(conf, subset=[0, 2])
    assert result["miou"] == pytest.approx((10 / 15 + 1.0) / 2)
    with pytest.raises(ValueError, match="class indices"):
        metrics.confusion_matrix(np.zeros(4), np.array([0, 1, 255, 0]), 3)


def test_matches_cityscapes_evaluator(tmp_path, rng):
    cv2 = pytest.importorskip("cv2")
    evaluator = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        reason="cityscapesscripts is a test dependency (pip install -e '.[dev]')")
    gt_files, pred_files, conf = [], [], np.zeros((19, 19), np.int64)
    for i in range(3):
        # Blocks of classes with some void ids, and predictions that are right 60 % of the time.
        train_ids = rng.integers(0, 19, size=(8, 16)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
        gt_ids = labels.train_ids_to_label_ids(train_ids)
        gt_ids[rng.random(gt_ids.shape) < 0.05] = 0
        wrong = rng.integers(0, 19, size=train_ids.shape).astype(np.uint8)
        pred_train = np.where(rng.random(train_ids.shape) < 0.6, train_ids, wrong).astype(np.uint8)
        gt_file = tmp_path / f"city_{i:06d}_000019_gtFine_labelIds.png"
        pred_file = tmp_path / f"city_{i:06d}_000019_pred.png"
        cv2.imwrite(str(gt_file), gt_ids)
        cv2.imwrite(str(pred_file), labels.train_ids_to_label_ids(pred_train))
        gt_files.append(str(gt_file))
        pred_files.append(str(pred_file))
        conf += metrics.confusion_matrix(labels.map_labels(gt_ids, "cityscapes"), pred_train, 19)
    args = evaluator.args
    args.evalInstLevelScore = False  # its instance-level path uses np.in1d, gone in NumPy 2.4
    args.quiet = True
    args.JSONOutput = False
    args.exportFile = str(tmp_path / "result.json")
    result = evaluator.evaluateImgLists(pred_files, gt_files, args)
    ours = metrics.scores(conf)
    for train_id, name in enumerate(labels.class_names(19)):
        cs_name = {"light": "traffic light", "sign": "traffic sign"}.get(name, name)
        assert result["classScores"][cs_name] == pytest.approx(ours["iou"][train_id], abs=1e-12), name
    assert result["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-12)


def test_total_variation_of_class_distributions():
    assert metrics.total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert metrics.total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
    # |0.75 - 0.5| + |0.25 - 0.5| = 0.5, halved.
    assert metrics.total_variation([0.75, 0.25], [0.5, 0.5]) == pytest.approx(0.25, abs=1e-15)
