"""Training and evaluation speed (samples/s) of any network, to set beside PyTorch's.

A training step is the paper's: forward, softmax cross-entropy, backward and the
network's own optimizer (hparams.defaults: Adam for Lenet and Conv-2/4/6, momentum for
Resnet-18 and VGG-19) at its batch size, on random inputs of its shape (3x32x32 for the
conv nets, as /work/shared/bench/torch_conv.py times PyTorch). Evaluation is a forward
pass at batch 1000. Reports the median (min, max) over --reps repetitions of --iters
steps after --warmup steps. With --reps 1 --eval-batch 0 it times one fixed piece of
work, for whole processes of two checkouts timed against each other:

    PYTHONPATH=. python benchmarks/bench_conv.py [--iters 30] [--reps 3] [--nets conv2,conv4,conv6]
    PYTHONPATH=CHECKOUT python benchmarks/bench_conv.py --nets lenet --iters 4000 --reps 1 --eval-batch 0
    PYTHONPATH=CHECKOUT python benchmarks/bench_conv.py --nets lenet --density 0.05 --iters 20000 --reps 1 --eval-batch 0

--density below 1 installs a random mask keeping that fraction of every prunable weight
(bench.random_mask), as at that Pm of an IMP round; Dense layers then train sparse where
calibration.py says they pay.
"""
import argparse
import statistics
import time

import numpy as np

from minilottery import bench, nets, optim
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
    parser.add_argument("--batch", type=int, default=None, help="default: the network's (hparams.defaults)")
    parser.add_argument("--eval-batch", type=int, default=1000, help="0: no evaluation timing")
    parser.add_argument("--density", type=float, default=1.0, help="fraction of weights kept, by a random mask")
    args = parser.parse_args()

    for name in args.nets.split(","):
        net = nets.build(name, seed=0)
        if args.density < 1:
            net.set_mask(bench.random_mask(net, args.density))
        hp = defaults(name)
        opt = optim.make(hp.optimizer, net, hp.momentum, hp.weight_decay, hp.nesterov)
        lr, batch = hp.lr, args.batch or hp.batch_size
        rng = np.random.default_rng(0)
        images = rng.random((3000, *net.input_shape), dtype=np.float32)
        labels = rng.integers(0, 10, 3000)
        position = [0]

        def step():
            start = position[0] = (position[0] + batch) % (len(images) - batch)
            x, y = images[start:start + batch], labels[start:start + batch]
            _, dlogits = softmax_cross_entropy(net.forward(x, train=True), y)
            net.backward(dlogits)
            opt.step(lr)

        for _ in range(args.warmup):
            step()
        train = samples_per_second(step, batch, args.iters, args.reps)
        line = (f"{name}  train samples/s median {train[0]:7.1f} (min {train[1]:.1f}, max {train[2]:.1f}), "
                f"{1e3 * batch / train[0]:.2f} ms/step of {batch}")
        if args.eval_batch:
            evaluation_batch = images[:args.eval_batch]
            net.forward(evaluation_batch)
            evaluate = samples_per_second(lambda: net.forward(evaluation_batch), args.eval_batch, 1, args.reps)
            line += (f"   eval (batch {args.eval_batch}) samples/s median {evaluate[0]:7.0f} "
                     f"(min {evaluate[1]:.0f}, max {evaluate[2]:.0f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
