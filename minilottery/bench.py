"""Throughput benchmark: training and evaluation samples/s at the paper's batch size.

Training is timed on the real training loop (``train.Trainer.step``: batch, forward,
loss, backward, optimizer, with the mask) on the shipped MNIST or random data of
the network's input shape; evaluation on 10,000 images in batches of 1,000, as
``train.evaluate`` does every 100 iterations. Each figure is the median of
``repeats`` timings after a warm-up (which also triggers Numba compilation).

Densities below 1 install a random mask keeping that fraction of every prunable
weight, the situation of an IMP round at that Pm. ``sparse`` ("auto", "on", "off",
see sparse.py) chooses whether Dense layers train at their kept weights only.
"""
import statistics
import time

import numpy as np

from . import hparams, nets, train
from .datasets import Dataset


def random_data(input_shape, n_train=6000, n_test=10000, seed=0):
    """Random images and labels of the right shape: speed does not depend on the pixels."""
    rng = np.random.default_rng(seed)

    def images(n):
        return rng.random((n, *input_shape), dtype=np.float32)

    def labels(n):
        return rng.integers(0, 10, n)

    return Dataset("random", images(n_train), labels(n_train), images(1000), labels(1000),
                   images(n_test), labels(n_test))


def random_mask(net, density, seed=0):
    rng = np.random.default_rng(seed)
    return {name: (rng.random(mask.shape) < density).astype(net.dtype) for name, mask in net.masks.items()}


def median_rate(work, samples, repeats):
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(samples / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(net_name, density=1.0, iterations=500, repeats=5, data=None, hp=None, **build_options):
    """Training and evaluation samples/s of ``net_name`` with a random mask of ``density``."""
    hp = hp or hparams.defaults(net_name)
    net = nets.build(net_name, seed=0, **build_options)
    data = data or random_data(net_input_shape(net_name))
    if density < 1:
        net.set_mask(random_mask(net, density))
    trainer = train.Trainer(net, data, hp, seed=0)

    def train_steps():
        for _ in range(iterations):
            trainer.step()

    for _ in range(max(iterations // 5, 20)):  # warm-up: compilation, caches, allocator
        trainer.step()
    train_rate = median_rate(train_steps, iterations * hp.batch_size, repeats)
    x_eval, y_eval = data.x_test[:10000], data.y_test[:10000]
    train.evaluate(net, x_eval[:1000], y_eval[:1000])
    eval_rate = median_rate(lambda: train.evaluate(net, x_eval, y_eval), len(x_eval), repeats)
    kept = sum(float(m.sum()) for m in net.masks.values()) / net.count()
    sparse_layers = [name for name, leaf in net.leaves if getattr(leaf, "sparse", None) is not None]
    return {"net": net_name, "density": kept, "batch_size": hp.batch_size, "sparse": net.sparse,
            "sparse_layers": sparse_layers, "train_samples_per_s": train_rate, "eval_samples_per_s": eval_rate}


def net_input_shape(net_name):
    return (1, 28, 28) if hparams.defaults(net_name).dataset in ("mnist", "fashion-mnist") else (3, 32, 32)
