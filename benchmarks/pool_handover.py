"""What a hand-over to minilottery's pool costs (threads.py), with its helper polling for work
(threads.SPIN_YIELDS looks) and asleep (0 looks), and what that makes of a training step.

    python benchmarks/pool_handover.py [--net resnet18] [--reps 10]

Prints the median time of a run_chunks of two small chunks after the caller spent 0-5 ms
elsewhere, then the milliseconds of a training step of --net (random CIFAR-shaped data) with
either setting, alternated in blocks of 4 steps, and the ratio of each pair.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minilottery import architectures, hparams, losses, nets, optim, threads  # noqa: E402

POLLING = threads.SPIN_YIELDS


def busy(seconds):
    """Keep this thread busy in Python, as a pass is between two hand-overs."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def handover(gap, looks, repeats=200):
    """Median seconds of a run_chunks of two small chunks, ``gap`` seconds after the last one.
    Each chunk is a sum over 32,768 values, which NumPy runs without the GIL (~10 us), as a
    chunk's kernels and products do."""
    threads.SPIN_YIELDS = looks
    values = np.ones((2, 1 << 15))

    def work(worker, items):
        np.add(values[items], 1, out=values[items])

    times = []
    for _ in range(repeats):
        busy(gap)
        start = time.perf_counter()
        threads.run_chunks(2, 1, work)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="resnet18", choices=["conv2", "conv4", "conv6", "resnet18", "vgg19"],
                        help="a network whose passes run on the pool (Lenet's do not)")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if threads.WORKERS < 2:
        sys.exit("the pool needs at least 2 cores; this process may run on 1")
    print(f"hand-over of two small chunks ({threads.WORKERS} workers), median of 200:")
    for gap in (0.0, 0.0002, 0.001, 0.005):
        polled, slept = handover(gap, POLLING), handover(gap, 0)
        print(f"  {gap * 1e3:3.1f} ms after the last: polling {polled * 1e6:5.0f} us, asleep {slept * 1e6:5.0f} us")

    hp = hparams.defaults(args.net)
    net = nets.build(args.net, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((hp.batch_size, *architectures.CIFAR_SHAPE)).astype(np.float32)
    y = rng.integers(0, 10, hp.batch_size)
    optimizer = optim.make(hp.optimizer, net)

    def step():
        _, dlogits = losses.softmax_cross_entropy(net.forward(x, train=True), y)
        net.backward(dlogits)
        optimizer.step(hp.lr)

    for _ in range(3):
        step()
    steps = {POLLING: [], 0: []}
    for rep in range(args.reps):
        for looks in (POLLING, 0) if rep % 2 == 0 else (0, POLLING):
            threads.SPIN_YIELDS = looks
            step()
            start = time.perf_counter()
            for _ in range(4):
                step()
            steps[looks].append((time.perf_counter() - start) / 4)
    threads.SPIN_YIELDS = POLLING
    ratios = [slept / polled for polled, slept in zip(steps[POLLING], steps[0])]
    print(f"{args.net} training step, {args.reps} alternated pairs of 4 steps: polling "
          f"{statistics.median(steps[POLLING]) * 1e3:.1f} ms, asleep {statistics.median(steps[0]) * 1e3:.1f} ms; "
          f"asleep / polling {min(ratios):.2f}-{max(ratios):.2f}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
