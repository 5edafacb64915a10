"""Shared test helpers: paths to the official fixtures and small generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# Outputs of the official routines (tests/fixtures/official/README.md) and an independent PyTorch
# implementation of the official network (tests/reference/), copied into the repository from the project's
# shared material so that a clone alone runs every test.
FIXTURES = REPO / "tests" / "fixtures" / "official"
REFERENCE = REPO / "tests" / "reference"


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(f"official fixture {path} is missing from the repository")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
