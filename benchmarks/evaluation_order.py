"""Evaluation of Lenet on MNIST's validation and test sets in their own order and as a run
orders them (train.grouped_by_zeros), alternated in one process.

    python benchmarks/evaluation_order.py [--reps 10]          # on every core
    taskset -c 0 python benchmarks/evaluation_order.py         # on one, as an imp worker

Prints the fraction of pixels the first layer multiplies in each order, the milliseconds of
one evaluation of both sets (median over --reps), and the ratio of each alternated pair.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minilottery import datasets, nets, train  # noqa: E402
from minilottery.kernels.sparse_input import GROUP  # noqa: E402


def multiplied(x):
    """The fraction of pixels nonzero in any of each GROUP neighbouring images."""
    ink = x.reshape(len(x), -1) != 0
    whole = len(ink) // GROUP * GROUP
    return ink[:whole].reshape(-1, GROUP, ink.shape[1]).any(axis=1).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    data = datasets.load("mnist")
    net = nets.build("lenet", seed=0)
    orders = {"own order": [(data.x_val, data.y_val), (data.x_test, data.y_test)]}
    orders["grouped"] = [train.grouped_by_zeros(net, x, y) for x, y in orders["own order"]]
    for name, sets in orders.items():
        print(f"{name:9s}: multiplies {', '.join(f'{multiplied(x):.1%}' for x, _ in sets)} of the pixels "
              f"(validation, test); loss and accuracy {[train.evaluate(net, x, y) for x, y in sets]}")
    times = {name: [] for name in orders}
    for rep in range(args.reps):
        for name in (list(orders) if rep % 2 == 0 else list(orders)[::-1]):
            began = time.perf_counter()
            for x, y in orders[name]:
                train.evaluate(net, x, y)
            times[name].append(time.perf_counter() - began)
    for name, values in times.items():
        print(f"{name:9s}: {statistics.median(values) * 1e3:.1f} ms per evaluation of both sets")
    print("ratio per pair:", " ".join(f"{a / b:.2f}" for a, b in zip(times["own order"], times["grouped"])))


if __name__ == "__main__":
    main()
