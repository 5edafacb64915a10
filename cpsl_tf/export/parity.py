"""The parity gate: an exported model must reproduce the Keras model on target images.

Figures (written into the manifest's ``parity`` object): ``max_abs_logit_diff`` (over all pixels and
classes, at input resolution), ``max_abs_reference_logit`` (the largest |logit| of the Keras model on the same
images), ``argmax_agreement`` (fraction of pixels whose class agrees),
``miou_keras`` and ``miou_onnx`` (same labelled evaluation set; each runner's class map, brought to the
label with the nearest rule, scored by the one evaluation loop ``cpsl_tf.evaluation.evaluate.evaluate``).
Gates: float32 ``max_abs_logit_diff <= atol + rtol * max_abs_reference_logit`` (1e-4 and 1e-4 by default)
and ``argmax_agreement >= 0.9999``; reduced precision is gated on the mIoU drop instead.

Why the relative term: float32 itself cannot promise less. ``benchmarks/float32_noise.py`` runs the same
weights in float64: DeepLab-v2 R101 at 1024x2048 (random initialisation, max |logit| 2.6) is 1.44e-4 from
its own float64 self in Keras, and its ONNX export 1.46e-4 from Keras; an absolute 1e-4 failed it for
rounding alone. A wrong op moves logits by their own scale, 10^4 times the bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpsl_tf.evaluation.evaluate import evaluate
from cpsl_tf.export.runners import Runner
from cpsl_tf.export.samples import eval_dataset
from cpsl_tf.metrics import scores


class ParityError(RuntimeError):
    """An exported model failed its parity gate; the message carries the figures."""


@dataclass
class Agreement:
    """The running comparison of a candidate's outputs with the reference's, batch by batch."""

    max_abs_logit_diff: float | None = None
    max_abs_reference_logit: float = 0.0
    non_finite_logits: bool = False
    agreeing_pixels: int = 0
    pixels: int = 0

    def add(self, reference: dict, candidate: dict, candidate_logits: dict | None) -> None:
        if candidate_logits is not None and "logits" in candidate_logits:
            difference = np.abs(candidate_logits["logits"] - reference["logits"])
            finite = np.isfinite(difference)
            # NaN would slip through max() and through "diff > tolerance" comparisons: recorded apart.
            self.non_finite_logits |= not bool(finite.all())
            diff = float(difference[finite].max()) if finite.any() else 0.0
            self.max_abs_logit_diff = (diff if self.max_abs_logit_diff is None
                                       else max(self.max_abs_logit_diff, diff))
            magnitude = np.abs(reference["logits"])
            magnitude = magnitude[np.isfinite(magnitude)]
            if magnitude.size:
                self.max_abs_reference_logit = max(self.max_abs_reference_logit, float(magnitude.max()))
        self.agreeing_pixels += int((candidate["class_map"] == reference["class_map"]).sum())
        self.pixels += reference["class_map"].size


def _miou(conf: np.ndarray | None) -> float | None:
    return None if conf is None else float(scores(conf)["miou"])


def measure(reference: Runner, candidate: Runner, samples: Sequence, *, batch_size: int = 2,
            logits_candidate: Runner | None = None) -> dict:
    """Compare ``candidate`` with ``reference`` (Keras) on ``samples``, through the one evaluation loop
    (``cpsl_tf.evaluation.evaluate.evaluate``): each runner's class map is scored against the labels.

    ``logits_candidate`` supplies logits when ``candidate`` only emits a class map (an argmax
    artefact is compared through its own graph with the logits exposed,
    ``cpsl_tf.export.onnx_export.with_logits_output``).
    """
    agreement = Agreement(max_abs_logit_diff=0.0 if logits_candidate is not None else None)

    def predict(images):
        batch = images.numpy()
        ref, cand = reference(batch), candidate(batch)
        agreement.add(ref, cand, logits_candidate(batch) if logits_candidate is not None else cand)
        return {"keras": ref["class_map"], "candidate": cand["class_map"]}

    dataset = eval_dataset(samples, reference.input_size, batch_size, reference.num_classes)
    confusions = evaluate(predict, dataset, reference.num_classes)
    if agreement.pixels == 0:
        raise ValueError("the parity gate needs at least one image")
    return {
        "max_abs_logit_diff": agreement.max_abs_logit_diff,
        "max_abs_reference_logit": agreement.max_abs_reference_logit,
        "non_finite_logits": agreement.non_finite_logits,
        "argmax_agreement": agreement.agreeing_pixels / agreement.pixels,
        "miou_keras": _miou(confusions.get("keras")),
        "miou_onnx": _miou(confusions.get("candidate")),
        "num_images": len(samples),
        "num_pixels": agreement.pixels,
        "labelled": bool(confusions),
    }


def second_runtime_parity(onnx_path, manifest: dict, samples: Sequence, batch_size: int,
                          min_agreement: float) -> dict | None:
    """OpenCV's DNN module against ONNX Runtime on the same float32 graph and images: the class maps must
    agree on at least ``min_agreement`` of the pixels. ``None`` when OpenCV has no DNN module."""
    try:
        import cv2
    except ImportError:
        return None
    if not hasattr(cv2, "dnn"):  # OpenCV builds without the DNN module
        return None
    from cpsl_tf.export.runners import OnnxRunner, OpenCvDnnRunner

    result = measure(OnnxRunner(onnx_path, manifest), OpenCvDnnRunner(onnx_path, manifest), samples,
                     batch_size=batch_size)
    agreement = result["argmax_agreement"]
    failures = [] if agreement >= min_agreement else [
        f"OpenCV DNN agrees with ONNX Runtime on {100 * agreement:.4f} % of the pixels "
        f"< {100 * min_agreement:.2f} %"]
    return {"runtime": f"opencv-dnn {cv2.__version__}", "argmax_agreement": agreement,
            "num_images": result["num_images"], "min_argmax_agreement": min_agreement,
            "failures": failures, "passed": not failures}


def logit_tolerance(max_abs_reference_logit: float, max_abs_logit_diff: float,
                    max_relative_logit_diff: float) -> float:
    """The float32 gate's bound on |logit difference|: ``atol + rtol * max |reference logit|``."""
    return max_abs_logit_diff + max_relative_logit_diff * max_abs_reference_logit


def float32_gate(report: dict, max_abs_logit_diff: float = 1e-4, min_argmax_agreement: float = 0.9999,
                 max_relative_logit_diff: float = 1e-4) -> dict:
    """Add ``gates`` and ``passed`` to a float32 parity report."""
    tolerance = logit_tolerance(report.get("max_abs_reference_logit", 0.0), max_abs_logit_diff,
                                max_relative_logit_diff)
    gates = {"max_abs_logit_diff": max_abs_logit_diff, "max_relative_logit_diff": max_relative_logit_diff,
             "logit_tolerance": tolerance, "min_argmax_agreement": min_argmax_agreement}
    failures = []
    if report["max_abs_logit_diff"] is None or report["max_abs_logit_diff"] > tolerance:
        failures.append(f"max |logit diff| {report['max_abs_logit_diff']} > {tolerance:.3g} "
                        f"({max_abs_logit_diff:g} + {max_relative_logit_diff:g} x max |logit| "
                        f"{report.get('max_abs_reference_logit', 0.0):.3g}; benchmarks/float32_noise.py "
                        "measures the network's own float32 rounding)")
    if report.get("non_finite_logits"):
        failures.append("non-finite logits (NaN or infinity) in the Keras or the exported model")
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
    bound = report.get("gates", {}).get("logit_tolerance")
    text = (f"max|logit diff| {'n/a' if diff is None else f'{diff:.3g}'}"
            f"{'' if bound is None else f' (bound {bound:.3g})'}, argmax agreement "
            f"{100 * report['argmax_agreement']:.4f} %, mIoU keras {pct(report.get('miou_keras'))} / "
            f"exported {pct(report.get('miou_onnx'))} on {report['num_images']} images")
    if report.get("miou_drop") is not None:
        text += f", mIoU drop vs float32 {100 * report['miou_drop']:.2f} points"
    return text
