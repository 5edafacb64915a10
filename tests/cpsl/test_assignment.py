"""online_assignment: Sinkhorn over bank + current rows once the bank is full, current rows returned."""

from __future__ import annotations

import numpy as np

from cpsl_tf.cpsl.assignment import online_assignment
from cpsl_tf.cpsl.memory_bank import MemoryBank
from tests.cpsl.test_sinkhorn import official_sinkhorn_numpy


def test_bank_rows_enter_only_when_full(rng):
    k, d = 5, 4
    prototypes = rng.normal(size=(k, d)).astype(np.float32)
    r = rng.dirichlet(np.ones(k)).astype(np.float32)
    current = rng.uniform(-1, 1, (6, k)).astype(np.float32)
    bank = MemoryBank(8, d)

    def score(rows):
        return rows @ prototypes.T

    np.testing.assert_allclose(online_assignment(current, bank, score, r).numpy(),
                               official_sinkhorn_numpy(current, r, 0.05, 3), rtol=1e-4, atol=1e-6)
    rows = rng.normal(size=(8, d)).astype(np.float32) * 0.2
    bank.enqueue(rows)
    expected = official_sinkhorn_numpy(np.concatenate([score(rows), current]), r, 0.05, 3)[-6:]
    np.testing.assert_allclose(online_assignment(current, bank, score, r).numpy(), expected,
                               rtol=1e-4, atol=1e-6)
