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

from . import datasets, hparams, nets, train
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


def describe(results, compared):
    """Lines of ``bench``'s report; with ``compared``, results come in pairs (mode, off)."""
    lines = []
    for index, r in enumerate(results):
        layers = ",".join(r["sparse_layers"]) or "none"
        lines.append(f"{r['net']} density {r['density']:.4f} batch {r['batch_size']} sparse {r['sparse']} "
                     f"(sparse layers: {layers}): train {r['train_samples_per_s']:,.0f} samples/s, "
                     f"eval {r['eval_samples_per_s']:,.0f} samples/s")
        if compared and index % 2 == 1:  # the pair (--sparse MODE, off) at one density
            mine = results[index - 1]
            lines.append(f"    {mine['sparse']} / off: train x{mine['train_samples_per_s'] / r['train_samples_per_s']:.2f}, "
                         f"eval x{mine['eval_samples_per_s'] / r['eval_samples_per_s']:.2f}")
    return lines


def net_input_shape(net_name):
    return datasets.IMAGE_SHAPES[hparams.defaults(net_name).dataset]


# Images in each dataset's training and test files (the paper holds 5,000 training images out).
DATASET_IMAGES = {"mnist": (60_000, 10_000), "fashion-mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}


def seconds_per_call(work, budget, least=3):
    """Mean wall time of ``work()``, called at least ``least`` times and for about ``budget`` seconds."""
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < budget:
        work()
        calls += 1
    return (time.perf_counter() - start) / calls


def branch_seconds(hp, input_shape, budget=2.0, sparse="auto"):
    """How long one branch of ``hp`` trains here, from a short timing of training steps and of
    evaluation: iterations × step + every evaluation of the validation and test sets + the
    final training accuracy. Returns (seconds, timings)."""
    net = nets.build(hp.net, seed=0, input_shape=input_shape, dropout=hp.dropout, sparse=sparse)
    data = random_data(input_shape, n_train=max(4 * hp.batch_size, 1000), n_test=train.EVAL_BATCH)
    trainer = train.Trainer(net, data, hp, seed=0)
    for _ in range(3):  # compilation, caches, allocator
        trainer.step()
    step = seconds_per_call(trainer.step, budget / 2)
    train.evaluate(net, data.x_test, data.y_test)
    per_image = seconds_per_call(lambda: train.evaluate(net, data.x_test, data.y_test), budget / 2) / len(data.x_test)
    train_images, test_images = DATASET_IMAGES.get(hp.dataset, (60_000, 10_000))
    evaluations = hp.iterations // hp.eval_every + 1 + (hp.iterations % hp.eval_every != 0)
    seconds = (hp.iterations * step + evaluations * (datasets.VALIDATION_SIZE + test_images) * per_image
               + (train_images - datasets.VALIDATION_SIZE) * per_image)
    return seconds, {"step_s": step, "eval_s_per_image": per_image}
