"""Batch norm's four kernels at Resnet-18's three map shapes (128 images), ms per call.

Each kernel runs over the channels on minilottery's pool, as conv.BatchNorm2d runs it;
the figure is the median of --reps calls. Run it in two checkouts, one after the other,
to compare them:

    PYTHONPATH=. python benchmarks/bench_batchnorm.py [--reps 40]
"""
import argparse
import statistics
import time

import numpy as np

from minilottery import threads
from minilottery.conv import over_channels
from minilottery.kernels import batchnorm

SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]  # Resnet-18's stages


def milliseconds(call, reps):
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    reps = parser.parse_args().reps
    rng = np.random.default_rng(0)
    print(f"{'shape':>20} {'statistics':>11} {'affine+ReLU':>12} {'dγ, dβ':>8} {'dx':>8}")
    for shape in SHAPES:
        channels = shape[1]
        x, dy = rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)
        mean, var = np.empty(channels, np.float32), np.empty(channels, np.float32)
        ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        sums = np.empty(channels, np.float32), np.empty(channels, np.float32)
        y, dx = np.empty_like(x), np.empty_like(x)
        calls = [
            (batchnorm.channel_statistics, (x, mean, var)),
            (batchnorm.channel_affine, (x, ones, zeros, True, y)),
            (batchnorm.batchnorm_backward_sums, (dy, x, zeros, ones, ones, zeros, True, *sums)),
            (batchnorm.batchnorm_input_grad, (dy, x, zeros, ones, ones, ones, zeros, True, zeros, zeros, dx)),
        ]
        with threads.pool_owns_cores():
            figures = [milliseconds(lambda: over_channels(kernel, channels, *args), reps) for kernel, args in calls]
        print(f"{str(shape):>20} " + " ".join(f"{f:>{w}.3f}" for f, w in zip(figures, (11, 12, 8, 8))))


if __name__ == "__main__":
    main()
