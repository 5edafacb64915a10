"""The parity gate: an exported model must reproduce the Keras model on target images.

Figures (written into the manifest's ``parity`` object): ``max_abs_logit_diff`` (over all pixels and
classes, at input resolution), ``argmax_agreement`` (fraction of pixels whose class agrees),
``miou_keras`` and ``miou_onnx`` (same labelled evaluation set, ``cpsl_tf.metrics``). Gates: float32
``max_abs_logit_diff <= 1e-4`` and ``argmax_agreement >= 0.9999``; reduced precision is gated on the mIoU
drop instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpsl_tf.export.preprocess import class_map_to_size
from cpsl_tf.export.runners import Runner
from cpsl_tf.export.samples import batches
from cpsl_tf.metrics import confusion_matrix, scores


class ParityError(RuntimeError):
    """An exported model failed its parity gate; the message carries the figures."""


def _miou(conf: np.ndarray | None) -> float | None:
    return None if conf is None else float(scores(conf)["miou"])


def measure(reference: Runner, candidate: Runner, samples: Sequence, *, batch_size: int = 2,
            logits_candidate: Runner | None = None) -> dict:
    """Compare ``candidate`` with ``reference`` (Keras) on ``samples``.

    ``logits_candidate`` supplies logits when ``candidate`` only emits a class map (an argmax
    artefact is compared through a logits twin converted from the same deploy function).
    """
    num_classes = reference.num_classes
    max_diff = 0.0 if logits_candidate is not None else None
    agree = total = 0
    conf_ref = conf_cand = None
    for batch, labels in batches(samples, reference.input_size, batch_size, reference.align_corners):
        ref = reference(batch)
        cand = candidate(batch)
        logits_source = logits_candidate(batch) if logits_candidate is not None else cand
        if "logits" in logits_source:
            diff = float(np.abs(logits_source["logits"] - ref["logits"]).max())
            max_diff = diff if max_diff is None else max(max_diff, diff)
        agree += int((cand["class_map"] == ref["class_map"]).sum())
        total += ref["class_map"].size
        for index, label in enumerate(labels):
            if label is None:
                continue
            size = label.shape[:2]
            ref_conf = confusion_matrix(label, class_map_to_size(ref["class_map"][index], size),
                                        num_classes)
            cand_conf = confusion_matrix(label, class_map_to_size(cand["class_map"][index], size),
                                         num_classes)
            conf_ref = ref_conf if conf_ref is None else conf_ref + ref_conf
            conf_cand = cand_conf if conf_cand is None else conf_cand + cand_conf
    if total == 0:
        raise ValueError("the parity gate needs at least one image")
    return {
        "max_abs_logit_diff": max_diff,
        "argmax_agreement": agree / total,
        "miou_keras": _miou(conf_ref),
        "miou_onnx": _miou(conf_cand),
        "num_images": len(samples),
        "num_pixels": total,
        "labelled": conf_ref is not None,
    }


def evaluate_miou(runner: Runner, samples: Sequence, batch_size: int = 2) -> float:
    """mIoU of one runner on labelled samples."""
    conf = None
    for batch, labels in batches(samples, runner.input_size, batch_size, runner.align_corners):
        maps = runner(batch)["class_map"]
        for class_map, label in zip(maps, labels):
            if label is None:
                raise ValueError("evaluate_miou needs labelled samples")
            part = confusion_matrix(label, class_map_to_size(class_map, label.shape[:2]), runner.num_classes)
            conf = part if conf is None else conf + part
    return float(scores(conf)["miou"])


def float32_gate(report: dict, max_abs_logit_diff: float = 1e-4,
                 min_argmax_agreement: float = 0.9999) -> dict:
    """Add ``gates`` and ``passed`` to a float32 parity report."""
    gates = {"max_abs_logit_diff": max_abs_logit_diff, "min_argmax_agreement": min_argmax_agreement}
    failures = []
    if report["max_abs_logit_diff"] is None or report["max_abs_logit_diff"] > max_abs_logit_diff:
        failures.append(f"max |logit diff| {report['max_abs_logit_diff']} > {max_abs_logit_diff}")
    if report["argmax_agreement"] < min_argmax_agreement:
        failures.append(f"argmax agreement {report['argmax_agreement']:.6f} < {min_argmax_agreement}")
    return {**report, "gates": gates, "failures": failures, "passed": not failures}


def miou_drop_gate(report: dict, reference_miou: float | None, max_drop: float) -> dict:
    """Gate a reduced-precision model on its mIoU drop (fraction, 0.01 = 1 point) vs float32."""
    failures = []
    drop = None
    if reference_miou is not None and report["miou_onnx"] is not None:
        drop = reference_miou - report["miou_onnx"]
        if drop > max_drop:
            failures.append(f"mIoU drop {100 * drop:.2f} points > {100 * max_drop:.2f} "
                            f"(float32 {100 * reference_miou:.2f}, "
                            f"this model {100 * report['miou_onnx']:.2f})")
    return {**report, "miou_float32_onnx": reference_miou, "miou_drop": drop,
            "gates": {"max_miou_drop": max_drop}, "failures": failures, "passed": not failures}


def describe(report: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    diff = report.get("max_abs_logit_diff")
    text = (f"max|logit diff| {'n/a' if diff is None else f'{diff:.3g}'}, argmax agreement "
            f"{100 * report['argmax_agreement']:.4f} %, mIoU keras {pct(report.get('miou_keras'))} / "
            f"exported {pct(report.get('miou_onnx'))} on {report['num_images']} images")
    if report.get("miou_drop") is not None:
        text += f", mIoU drop vs float32 {100 * report['miou_drop']:.2f} points"
    return text
