import os
import sys
from pathlib import Path

# One BLAS thread: the tests' matrices are small, and on a loaded machine (CI, a run in
# the background) OpenBLAS threads waiting for each other made the suite 10x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # cli.py lives at the top level


@pytest.fixture(scope="session")
def mnist():
    from minilottery import datasets
    return datasets.load("mnist")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
