import os
import sys
from pathlib import Path

# One BLAS thread: the tests' matrices are small, and on a loaded machine (CI, a run in
# the background) OpenBLAS threads waiting for each other made the suite 10x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The sparse thresholds fixed at the values measured on the Zen 5 machine, so that which
# layers go sparse does not depend on the machine; tests/test_calibration.py measures.
os.environ["MINILOTTERY_SPARSE_THRESHOLDS"] = "0.12,0.06"

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # cli.py lives at the top level


@pytest.fixture(scope="session")
def mnist():
    from minilottery import datasets
    return datasets.load("mnist")


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory):
    """The first 6,000 training and 1,000 test images of MNIST, as a --data-dir: evaluations
    (5,000 validation + 1,000 test images) then cost a fraction of the real ones."""
    from minilottery import datasets, idx
    folder = tmp_path_factory.mktemp("small-mnist")
    arrays = datasets.read_idx_folder(datasets.SHIPPED_MNIST)
    for part, count in (("train", 6000), ("test", 1000)):
        images, labels = arrays[part]
        images_stem, labels_stem = datasets.IDX_NAMES[part]
        idx.write_idx(folder / images_stem, images[:count])
        idx.write_idx(folder / labels_stem, labels[:count])
    return folder


def pytest_terminal_summary(terminalreporter):
    """The tally of the fault matrix (tests/test_faults.py), so that it can be read off a CI log."""
    outcomes = {key: [r for r in terminalreporter.stats.get(key, [])
                      if getattr(r, "when", "") == "call" and "test_faults.py" in r.nodeid]
                for key in ("passed", "failed")}
    tried = len(outcomes["passed"]) + len(outcomes["failed"])
    if tried:
        terminalreporter.write_line(f"fault matrix: {tried} faults and bad inputs tried, {len(outcomes['passed'])} "
                                    f"handled with nothing lost, {len(outcomes['failed'])} not")


@pytest.fixture(autouse=True)
def one_job_at_a_time(request, monkeypatch):
    """imp run in-process by a test trains its jobs in that process (where monkeypatch
    reaches them) unless the test gives --workers; a test marked auto_workers gets the default."""
    if "auto_workers" not in request.keywords:
        from minilottery import executors
        monkeypatch.setattr(executors, "default_workers", lambda experiment, cores=None, job_threads=None: 1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
