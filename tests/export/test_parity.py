"""The float32 gate's arithmetic: NaN logits fail it (a NaN would pass "max(diff) > tolerance"), and its
bound grows with the logits' scale."""

from __future__ import annotations

import numpy as np
import pytest

from cpsl_tf.export.parity import Agreement, float32_gate


def _outputs(logits):
    return {"logits": logits, "class_map": np.zeros(logits.shape[:-1], np.uint8)}


def _report(agreement: Agreement) -> dict:
    return {"max_abs_logit_diff": agreement.max_abs_logit_diff,
            "max_abs_reference_logit": agreement.max_abs_reference_logit,
            "non_finite_logits": agreement.non_finite_logits,
            "argmax_agreement": agreement.agreeing_pixels / agreement.pixels}


def test_nan_logits_fail_the_float32_gate():
    reference = np.zeros((1, 4, 4, 3), np.float32)
    candidate = reference.copy()
    candidate[0, 1, 1, 2] = np.nan
    agreement = Agreement(max_abs_logit_diff=0.0)
    agreement.add(_outputs(reference), _outputs(candidate), _outputs(candidate))
    gate = float32_gate(_report(agreement))
    assert agreement.non_finite_logits and not gate["passed"]
    assert any("non-finite" in f for f in gate["failures"])


def test_finite_logits_within_tolerance_pass():
    reference = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32)
    agreement = Agreement(max_abs_logit_diff=0.0)
    agreement.add(_outputs(reference), _outputs(reference + 5e-5), _outputs(reference + 5e-5))
    gate = float32_gate(_report(agreement))
    assert gate["passed"] and not agreement.non_finite_logits
    assert abs(agreement.max_abs_logit_diff - 5e-5) < 1e-6


@pytest.mark.parametrize("scale, shift, passes", [
    (50.0, 3e-4, True),    # bound 1e-4 + 1e-5 * 50 = 6e-4
    (50.0, 1e-3, False),
    (1.0, 3e-4, False),    # bound 1e-4 + 1e-5 = 1.1e-4
])
def test_logit_bound_is_relative_to_the_logits_scale(scale, shift, passes):
    reference = np.full((1, 4, 4, 3), 0.5, np.float32)
    reference[0, 0, 0, 0] = -scale
    agreement = Agreement(max_abs_logit_diff=0.0)
    candidate = reference + np.float32(shift)
    agreement.add(_outputs(reference), _outputs(candidate), _outputs(candidate))
    gate = float32_gate(_report(agreement), max_abs_logit_diff=1e-4, max_relative_logit_diff=1e-5)
    assert agreement.max_abs_reference_logit == scale
    assert gate["gates"]["logit_tolerance"] == pytest.approx(1e-4 + 1e-5 * scale)
    assert gate["passed"] is passes
