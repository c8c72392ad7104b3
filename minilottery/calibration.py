"""Where a Dense layer becomes cheaper sparse: measured on this machine, once, and cached.

sparse.py trains a Dense layer at its kept weights only when the layer's density is
below a threshold, and evaluates it with the sparse kernel below a second, lower one.
Where the sparse kernels overtake BLAS depends on the BLAS NumPy loaded and the
kernels it chose (OpenBLAS's Haswell or SkylakeX), on how many cores it may use, and
on the CPU, so the thresholds are measured rather than assumed. At the first sparse
enough mask, ``thresholds()`` times Lenet (784-300-100-10, the paper's batch of 60
MNIST images) with every layer at each density of ``GRID``, through the dense path and through the
sparse kernels, one training step and one evaluation batch of 1,000 at a time, and
takes the density at which the two cost the same (a straight line through the sparse
timings against the dense path's median), less a margin for noise. That takes about
four seconds. Those sparse timings are of Lenet's layers one at a time, as a conv net's Dense
layers run (timed as a stack, the break-even rose from 0.145-0.148 to 0.197 on two cores, and
Conv-2's fc layers trained at 0.17 0.89x as fast as dense). Lenet itself trains as one
``sparse.SparseStack``, in stretches of steps (stretch.py), far cheaper than its layers one
at a time, and evaluates by the stretch's kernels too: a third threshold, for a stack, is
where a run's work breaks even, whole steps as ``Trainer.steps`` makes them and a step's share
of the evaluations (``EVALUATED_PER_STEP``), the stretch's against the dense path's.

The result is kept in a small JSON file, ``sparse-thresholds.json`` in minilottery's
cache folder (``$MINILOTTERY_CACHE``, else ``$XDG_CACHE_HOME/minilottery``, else
``~/.cache/minilottery``), under a signature of the machine: CPU, NumPy, BLAS and its
kernels, cores in use, and the version of this calibration. A later process with the
same signature reads it; another machine, another BLAS or another core count measures
afresh. Delete the file to measure again; set ``MINILOTTERY_SPARSE_THRESHOLDS=TRAIN,EVALUATION``
(for instance 0.12,0.06; the stack then goes by TRAIN) or ``TRAIN,EVALUATION,STACK`` to fix
them instead, as the tests do.
"""
import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import files, threads
from .kernels.registers import AVX512

GRID = (0.02, 0.04, 0.07, 0.1, 0.14, 0.2, 0.28, 0.4)  # densities timed, every layer at one density
MARGIN = 0.9  # the thresholds sit this fraction of the way to the measured break-even
ASK_BELOW = 0.5  # sparse.compress asks only when some layer is sparser than this
# Images a run evaluates per training step: Lenet's 5,000 validation and 10,000 test images
# every 100 steps (the paper's Appendix C); a stack's threshold weighs its evaluations so
EVALUATED_PER_STEP = 150
ENVIRONMENT = "MINILOTTERY_SPARSE_THRESHOLDS"
CACHE_FILE = "sparse-thresholds.json"
VERSION = 10  # part of the signature: a change to how calibrate() measures makes it measure again


class Thresholds(NamedTuple):
    train: float       # train a layer sparse below this density
    evaluation: float  # evaluate it with the sparse kernel below this one (else BLAS on the masked W)
    stack: float       # train a stack (Lenet) sparse, as stretch.py's stretches, below this density of its first layer
    source: str = ""   # where they came from, for bench's report


_known = {}  # signature -> Thresholds, for this process


def cache_folder():
    if os.environ.get("MINILOTTERY_CACHE"):
        return Path(os.environ["MINILOTTERY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minilottery"


def signature():
    """What the break-even depends on: the CPU, NumPy and its BLAS, the BLAS kernels, the cores."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except (KeyError, TypeError, AttributeError):
        blas = "unknown BLAS"
    kernels = os.environ.get("OPENBLAS_CORETYPE", "chosen by OpenBLAS")
    vectors = "avx512" if AVX512 else "avx2 or less"  # "AMD EPYC" names both a Zen 2 and a Zen 4 here
    return (f"{cpu} | {vectors} | numpy {np.__version__} | {blas} | kernels {kernels} | cores {threads.WORKERS} "
            f"| calibration {VERSION}")


def fixed(text):
    """Thresholds from MINILOTTERY_SPARSE_THRESHOLDS=TRAIN,EVALUATION[,STACK] (STACK: TRAIN if not given)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(0 <= value <= 1 for value in values):
        raise ValueError(f"{ENVIRONMENT}={text!r}: give two densities between 0 and 1, for training and "
                         f"evaluation, and optionally a third for a stack, e.g. {ENVIRONMENT}=0.12,0.06 or "
                         f"0.12,0.06,0.3, or unset it to measure them")
    return Thresholds(*as_three(values), f"fixed by {ENVIRONMENT}")


def as_three(values):
    """(train, evaluation, stack) from two or three thresholds: a run's config.json from before
    stacks had a threshold of their own holds two, and its stacks went by the training one."""
    values = tuple(float(value) for value in values)
    return values if len(values) == 3 else (*values, values[0])


def thresholds():
    """The (train, evaluation) thresholds for this machine: fixed, cached or measured now."""
    if os.environ.get(ENVIRONMENT):
        return fixed(os.environ[ENVIRONMENT])
    key = signature()
    if key not in _known:
        _known[key] = _cached(key) or _measure_and_keep(key)
    return _known[key]


def thresholds_on(cores=None):
    """``thresholds()`` for jobs that run on ``cores`` cores each (an imp run's workers): measured
    with this process on that many cores, then back to its own."""
    own = threads.WORKERS
    if os.environ.get(ENVIRONMENT) or not cores or cores == own:
        return thresholds()
    threads.use_cores(cores)
    try:
        return thresholds()
    finally:
        threads.use_cores(own)


def _cached(key):
    path = cache_folder() / CACHE_FILE
    try:
        entry = files.read_json(path)[key]
        return Thresholds(float(entry["train"]), float(entry["evaluation"]), float(entry["stack"]),
                          f"measured {entry['measured']}, cached in {path}")
    except (files.RunFileError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None  # no file, no entry for this machine, or a damaged file: measure afresh


def _measure_and_keep(key):
    measured = calibrate()
    path = cache_folder() / CACHE_FILE
    try:
        entries = files.read_json(path)
        entries = entries if isinstance(entries, dict) else {}
    except (files.RunFileError, OSError):
        entries = {}
    entries[key] = measured
    try:
        files.write_json(path, entries)
        where = f"cached in {path}"
    except (files.RunFileError, OSError):
        where = f"not cached: {path} is not writable"  # measured again by the next process
    return Thresholds(measured["train"], measured["evaluation"], measured["stack"],
                      f"measured {measured['measured']}, {where}")


def break_even(densities, sparse_seconds, dense_seconds):
    """MARGIN times the density at which a straight line through the sparse timings (the
    sparse kernels' work grows with the kept weights) meets the dense path's median cost,
    which does not depend on density; between 0 and the densest of ``densities``.
    A line through all points is steadier than the first crossing on a noisy machine."""
    slope, intercept = np.polyfit(densities, sparse_seconds, 1)
    dense = statistics.median(dense_seconds)
    if slope <= 0:
        return float(densities[-1]) if intercept < dense else 0.0
    return float(np.clip(MARGIN * (dense - intercept) / slope, 0.0, densities[-1]))


def seconds_per_call(work, calls):
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) / calls


def calibrate(grid=GRID, steps=10, repeats=5):
    """Time Lenet dense and sparse at every density of ``grid``: a dict with the three thresholds."""
    from . import datasets, hparams, nets, optim, train
    from .losses import softmax_cross_entropy
    rng = np.random.default_rng(0)
    # MNIST's own images: the dense path skips their zeros (kernels/sparse_input.py), random ones it would not
    mnist = datasets.load("mnist")
    images = mnist.x_train
    chosen = rng.choice(len(images), 60, replace=False)
    x, labels = images[chosen], rng.integers(0, 10, 60)
    x_eval = images[rng.choice(len(images), 1000, replace=False)]
    y_eval = rng.integers(0, 10, len(x_eval))
    net = nets.build("lenet", seed=0, sparse="off")
    optimizer = optim.Adam(net)
    # whole steps as a run trains them (Trainer.steps): a stretch of the stack (stretch.py) when
    # sparse, the dense path's steps otherwise
    few = datasets.Dataset("calibration", x, labels, x[:0], labels[:0], x[:0], labels[:0],
                           train_pixels=mnist.train_pixels[chosen])
    trainer = train.Trainer(net, few, hparams.defaults("lenet"), seed=0)

    def train_step():
        _, dlogits = softmax_cross_entropy(net.forward(x, train=True), labels)
        net.backward(dlogits)
        optimizer.step(1e-3)

    seconds = {(kind, mode): [] for kind in ("train", "evaluation", "stretch") for mode in ("on", "off")}
    for density in grid:
        net.set_mask({name: (rng.random(mask.shape) < density).astype(net.dtype) for name, mask in net.masks.items()})
        fastest = {}
        # The fewest seconds of ``repeats`` timings, sparse and dense in turn: on a shared machine others
        # only ever add time, and its speed moves from one second to the next (it can halve), so each
        # mode is timed beside the other. Timing all of one mode first gave one core's main job
        # thresholds of 0.23 / 0.30 where sparse breaks even at 0.11-0.15 / 0.05-0.08.
        for _ in range(repeats):
            for mode in ("on", "off"):  # "on": the sparse kernels for training and evaluation alike
                net.set_sparse(mode)
                net.sparse_stack = None                    # one layer at a time (the docstring says why)
                train_step()                               # untimed: the new index's scratch is touched first
                net.forward(x_eval)
                train = seconds_per_call(train_step, steps)
                # as a network with sparse layers evaluates: where Numba's threads share its passes,
                # a layer evaluated through BLAS runs on one OpenBLAS thread (nets.Network.sparse_cores)
                with net.sparse_cores():
                    evaluation = seconds_per_call(lambda: net.forward(x_eval), 3)
                net.set_sparse(mode)                       # the stack back, for a stretch
                trainer.steps(1)                           # untimed, as above
                stretch = seconds_per_call(lambda: trainer.steps(steps), 1) / steps
                # and a step's share of the run's evaluations, made by the same trainer
                stretch += EVALUATED_PER_STEP * seconds_per_call(lambda: trainer.evaluate(x_eval, y_eval), 1) / len(
                    x_eval)
                fastest["train", mode] = min(train, fastest.get(("train", mode), np.inf))
                fastest["evaluation", mode] = min(evaluation, fastest.get(("evaluation", mode), np.inf))
                fastest["stretch", mode] = min(stretch, fastest.get(("stretch", mode), np.inf))
        for key, value in fastest.items():
            seconds[key].append(value)
    return {"train": break_even(grid, seconds["train", "on"], seconds["train", "off"]),
            "evaluation": break_even(grid, seconds["evaluation", "on"], seconds["evaluation", "off"]),
            "stack": break_even(grid, seconds["stretch", "on"], seconds["stretch", "off"]),
            "measured": datetime.date.today().isoformat(), "densities": list(grid),
            "seconds": {f"{kind} {'sparse' if mode == 'on' else 'dense'}": values
                        for (kind, mode), values in seconds.items()}}
