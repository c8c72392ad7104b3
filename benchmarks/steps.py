"""A fixed number of training steps of one network on random inputs, for timing whole
processes of two checkouts against each other (docs/performance.md).

Builds the network with its paper defaults (hparams.defaults), takes three steps to warm
up, then times ``steps`` steps of forward, softmax cross-entropy, backward and the
optimizer on one random batch, and prints the milliseconds per step. Run it in turn under
each checkout, for example with hyperfine or /usr/bin/time:

    PYTHONPATH=CHECKOUT python benchmarks/steps.py lenet 60 4000
    PYTHONPATH=CHECKOUT python benchmarks/steps.py resnet18 128 12
"""
import sys
import time

import numpy as np

from minilottery import hparams, nets, optim
from minilottery.losses import softmax_cross_entropy


def main(name, batch, steps):
    net = nets.build(name, seed=0)
    hp = hparams.defaults(name)
    opt = optim.make(hp.optimizer, net, hp.momentum, hp.weight_decay, hp.nesterov)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *net.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def step():
        _, dlogits = softmax_cross_entropy(net.forward(x, train=True), y)
        net.backward(dlogits)
        opt.step(hp.lr)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(f"{name}: {(time.perf_counter() - start) / steps * 1e3:.3f} ms per step of {batch}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python benchmarks/steps.py NET BATCH STEPS   (e.g. lenet 60 4000)")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
