"""Where a dense Lenet training step goes, phase by phase, and what running the products left to
BLAS two at a time (kernels/blas.py) makes of it.

    python benchmarks/lenet_step.py [--steps 3000] [--pairs 30]

First the microseconds of each layer's forward and backward, the optimizer and the minibatch,
averaged over --steps steps on MNIST (the wrappers that time them add a little each). Then two
trainers of the same network, one with the products side by side and one with each on this
thread's OpenBLAS alone, alternate in blocks of 100 steps, --pairs times, and the median ratio
of the pairs is printed (below 1: side by side is faster). Run it alone on the machine; with
NUMBA_NUM_THREADS=1 it measures one core.
"""
import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minilottery import datasets, hparams, nets, train  # noqa: E402


def trainer(data, side_by_side=True):
    net = nets.build("lenet", seed=0)
    net.blas_side_by_side = net.blas_side_by_side and side_by_side
    return train.Trainer(net, data, hparams.defaults("lenet"), seed=0)


def by_phase(data, steps):
    """Microseconds per step of each timed call, and of the whole step."""
    timed = trainer(data)
    timed.steps(200)  # compilation, caches
    spent = collections.defaultdict(float)

    def wrap(owner, method, label):
        call = getattr(owner, method)

        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            result = call(*args, **kwargs)
            spent[label] += time.perf_counter() - start
            return result
        setattr(owner, method, timed_call)

    for name, leaf in timed.net.leaves:
        wrap(leaf, "forward", f"{name} forward")
        wrap(leaf, "backward", f"{name} backward")
    wrap(timed.optimizer, "step", "optimizer")
    wrap(timed.batches, "next", "minibatch")
    start = time.perf_counter()
    timed.steps(steps)
    total = time.perf_counter() - start
    return {label: seconds / steps * 1e6 for label, seconds in spent.items()}, total / steps * 1e6


def side_by_side_ratio(data, pairs, block=100):
    """Median over pairs of (µs a step side by side) / (µs a step on one OpenBLAS thread)."""
    together, alone = trainer(data, True), trainer(data, False)
    for each in (together, alone):
        each.steps(block)
    ratios, times = [], ([], [])
    for _ in range(pairs):
        pair = []
        for each, kept in zip((together, alone), times):
            start = time.perf_counter()
            each.steps(block)
            kept.append((time.perf_counter() - start) / block * 1e6)
            pair.append(kept[-1])
        ratios.append(pair[0] / pair[1])
    return statistics.median(ratios), min(ratios), max(ratios), statistics.median(times[0]), statistics.median(times[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps timed by phase")
    parser.add_argument("--pairs", type=int, default=30, help="pairs of 100-step blocks in the comparison")
    args = parser.parse_args()
    data = datasets.load("mnist")
    phases, step = by_phase(data, args.steps)
    for label, micros in phases.items():
        print(f"{label:20s} {micros:7.1f} us")
    print(f"{'step':20s} {step:7.1f} us")
    median, low, high, together, alone = side_by_side_ratio(data, args.pairs)
    print(f"side by side {together:.1f} us a step, one OpenBLAS thread {alone:.1f}: "
          f"ratio {median:.3f} (pairs {low:.3f}-{high:.3f}, {args.pairs} pairs of 100 steps)")


if __name__ == "__main__":
    main()
