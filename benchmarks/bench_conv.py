"""Conv-2/4/6 training and evaluation speed (samples/s), to set beside PyTorch's.

A training step is the paper's: forward, softmax cross-entropy, backward, Adam, at
batch 60 on CIFAR-shaped inputs (3x32x32), as /work/shared/bench/torch_conv.py times
PyTorch. Evaluation is a forward pass at batch 1000. Reports the median (min, max)
over --reps repetitions of --iters steps after --warmup steps.

    PYTHONPATH=. python benchmarks/bench_conv.py [--iters 30] [--reps 3] [--nets conv2,conv4,conv6]
"""
import argparse
import statistics
import time

import numpy as np

from minilottery import nets, optim
from minilottery.hparams import defaults
from minilottery.losses import softmax_cross_entropy


def samples_per_second(work, samples, iters, reps):
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(iters):
            work()
        rates.append(iters * samples / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="conv2,conv4,conv6")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--eval-batch", type=int, default=1000, help="0: no evaluation timing")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((3000, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, 10, 3000)
    for name in args.nets.split(","):
        net = nets.build(name, seed=0)
        opt = optim.Adam(net)
        lr = defaults(name).lr
        position = [0]

        def step():
            start = position[0] = (position[0] + args.batch) % (len(images) - args.batch)
            x, y = images[start:start + args.batch], labels[start:start + args.batch]
            _, dlogits = softmax_cross_entropy(net.forward(x, train=True), y)
            net.backward(dlogits)
            opt.step(lr)

        for _ in range(args.warmup):
            step()
        train = samples_per_second(step, args.batch, args.iters, args.reps)
        line = (f"{name}  train samples/s median {train[0]:7.1f} (min {train[1]:.1f}, max {train[2]:.1f}), "
                f"{1e3 * args.batch / train[0]:.1f} ms/step")
        if args.eval_batch:
            evaluation_batch = images[:args.eval_batch]
            net.forward(evaluation_batch)
            evaluate = samples_per_second(lambda: net.forward(evaluation_batch), args.eval_batch, 1, args.reps)
            line += (f"   eval (batch {args.eval_batch}) samples/s median {evaluate[0]:7.0f} "
                     f"(min {evaluate[1]:.0f}, max {evaluate[2]:.0f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
