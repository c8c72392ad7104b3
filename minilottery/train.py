"""Training with the paper's measurement protocol (Appendix C).

Every run trains for its full budget of iterations. Every ``eval_every``
iterations (100 in the paper) it evaluates loss and accuracy on the 5,000
validation images and the 10,000 test images and appends them to a curve. After
the fact, the *early-stopping iteration* is the iteration of minimum validation
loss, and the accuracy the paper reports is the test accuracy at that iteration.
We also report the final test accuracy and the final training accuracy (on all
55,000 training images), the latter for the paper's generalisation-gap remark.

``train`` can stop at any iteration with a checkpoint (network, optimizer, data
order and random state) and continue from it later with identical numbers.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import optim, stretch
from .augment import flip_and_crop
from .datasets import Batches
from .layers import mostly_zeros
from .losses import softmax_cross_entropy

EVAL_BATCH = 1000


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the curve up to that point is kept."""

    def __init__(self, message, curve):
        super().__init__(message)
        self.curve = curve

    def __reduce__(self):  # so that a worker process can send it to the driver
        return type(self), (str(self), self.curve)


@dataclass
class Curve:
    """Validation and test loss/accuracy every ``eval_every`` iterations."""
    iteration: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)

    def append(self, iteration, val, test):
        self.iteration.append(int(iteration))
        self.val_loss.append(val[0])
        self.val_accuracy.append(val[1])
        self.test_loss.append(test[0])
        self.test_accuracy.append(test[1])

    def to_dict(self):
        return {key: list(value) for key, value in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values):
        return cls(**{key: list(values[key]) for key in cls().__dict__})


def evaluate(net, x, y, batch=EVAL_BATCH):
    """Mean cross-entropy loss and accuracy of ``net`` on (x, y), in evaluation mode."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch):
        logits = net.forward(x[start:start + batch], train=False)
        labels = y[start:start + batch]
        total_loss += softmax_cross_entropy(logits, labels)[0] * len(labels)
        correct += int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
    return total_loss / len(x), correct / len(x)


# Stretches of an image's pixels (of its flattened features) whose ink orders it in evaluation
INK_STRETCHES = 49


def grouped_by_zeros(net, x, y):
    """(x, y) with images that have their zeros in the same places next to each other, when
    ``net``'s first layer skips the zeros of images like these (``layers.Dense.skips_zeros``);
    else (x, y) as they are. The order is ``zeros_order``'s."""
    order = zeros_order(net, x)
    return (x, y) if order is None else (x[order], y[order])


def zeros_order(net, x):
    """An order of the images x that puts those with their zeros in the same places next to
    each other, or None when ``net``'s first layer would not skip their zeros.

    That layer multiplies, for a group of neighbouring images (4 with AVX-512, 2 with AVX2:
    kernels/sparse_input.py), every pixel nonzero in any of them: with 4, 38-39% of the pixels
    of MNIST's validation and test images in their own order, where one image has 19%. Sorted
    by which of 49 stretches of their pixels hold any ink, the 4 share more of their zeros:
    29.5-30.4%. An evaluation of both sets, 59.8 -> 53.8 ms on one core
    (benchmarks/evaluation_order.py); sorting and copying them, ~35 ms once per run of a Trainer.
    Each image gets the same logits in any order up to float rounding (BLAS may round a row by
    its place in the batch), so the accuracy is the same and the mean loss nearly so.
    """
    if net.input_layer is None or not len(x) or not mostly_zeros(np.ascontiguousarray(x)):
        return None
    ink = x.reshape(len(x), -1) != 0
    stretches = [part.any(axis=1) for part in np.array_split(ink, INK_STRETCHES, axis=1)]
    return np.lexsort(stretches[::-1])  # the first stretch decides first


def early_stopping(curve):
    """The paper's early-stopping point: the iteration of minimum validation loss.

    Returns (iteration, test accuracy at it). A NaN validation loss never wins.
    """
    losses = np.array(curve.val_loss, dtype=np.float64)
    losses[~np.isfinite(losses)] = np.inf
    best = int(np.argmin(losses))
    return curve.iteration[best], curve.test_accuracy[best]


def summarize(curve, final_train_accuracy):
    """The metrics reported for one training run (accuracies as fractions)."""
    stop_iteration, stop_accuracy = early_stopping(curve)
    return {
        "early_stop_iteration": stop_iteration,
        "test_accuracy_at_early_stop": stop_accuracy,
        "final_test_accuracy": curve.test_accuracy[-1],
        "final_train_accuracy": final_train_accuracy,
        "final_iteration": curve.iteration[-1],
    }


class Trainer:
    """One training run of ``net`` on ``data`` under hyperparameters ``hp``.

    Random state: the data order comes from ``seed``; dropout and augmentation
    from generators the trainer owns; all of it is in ``state()``.
    """

    def __init__(self, net, data, hp, seed, order_seed=None):
        """``order_seed`` seeds the minibatch order (default: derived from ``seed``)."""
        check_batch_size(hp, data)
        self.net, self.data, self.hp = net, data, hp
        self.batches = Batches(data.x_train, data.y_train, hp.batch_size,
                               seed=[seed, 7] if order_seed is None else order_seed,
                               pixels=getattr(data, "train_pixels", None))
        self.optimizer = optim.make(hp.optimizer, net, hp.momentum, hp.weight_decay, hp.nesterov)
        self.schedule = optim.Schedule(hp.lr, hp.warmup, tuple(hp.milestones), hp.gamma)
        self.augment_rng = np.random.default_rng([seed, 11])
        self.iteration = 0
        self.curve = Curve()
        self.last_loss = math.nan
        self.sorted_sets = None  # the validation and test sets as evaluation orders them
        self.stretch = None  # the stretch.SparseStretch that ``steps`` last used

    def step(self):
        """One iteration: a minibatch, forward, loss, backward, optimizer step."""
        x, y = self.batches.next()
        if self.hp.augment:
            x = flip_and_crop(x, self.augment_rng)
        # A diverging run overflows on its way to a NaN loss; the check below reports it
        # in one line, so NumPy's overflow warnings would only add noise before it.
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self.net.forward(x, train=True)
            loss, dlogits = softmax_cross_entropy(logits, y)
        if not math.isfinite(loss):
            raise self.diverged(loss)
        self.net.backward(dlogits)
        self.optimizer.step(self.schedule(self.iteration))
        self.iteration += 1
        self.last_loss = loss

    def steps(self, count):
        """``count`` iterations, as ``step`` makes them; a sparse Lenet's all in one kernel call
        (stretch.py), with the same numbers."""
        self.stretch = stretch.for_trainer(self, self.stretch)
        if self.stretch is None:
            for _ in range(count):
                self.step()
            return
        done, loss = self.stretch.run(self, count)
        self.iteration += done
        if done < count:
            raise self.diverged(loss)
        self.last_loss = loss

    def diverged(self, loss):
        return TrainingDiverged(f"loss became {loss} at iteration {self.iteration}: training diverged; "
                                f"try a smaller --lr (now {self.hp.lr}) or a warmup", self.curve)

    def evaluation_sets(self):
        """The validation and test sets in the order evaluation runs them (``grouped_by_zeros``),
        sorted at the first evaluation and kept."""
        if self.sorted_sets is None:
            data = self.data
            self.sorted_sets = (grouped_by_zeros(self.net, data.x_val, data.y_val),
                                grouped_by_zeros(self.net, data.x_test, data.y_test))
        return self.sorted_sets

    def record(self):
        """Evaluate on validation and test sets and append to the curve."""
        (x_val, y_val), (x_test, y_test) = self.evaluation_sets()
        self.curve.append(self.iteration, self.evaluate(x_val, y_val), self.evaluate(x_test, y_test))

    def evaluate(self, x, y):
        """``evaluate`` of the network; a sparse Lenet's by the stretch's kernels (stretch.py)."""
        self.stretch = stretch.for_trainer(self, self.stretch)
        if self.stretch is None or x.dtype != self.net.dtype:
            return evaluate(self.net, x, y)
        return self.stretch.evaluate(x, y, EVAL_BATCH)

    def run(self, until=None, on_eval=None, on_checkpoint=None, checkpoint_every=None, snapshots=()):
        """Train to iteration ``until`` (default: the full budget), evaluating on schedule.

        ``on_eval(trainer)`` runs after each evaluation (progress display);
        ``on_checkpoint(trainer)`` every ``checkpoint_every`` iterations;
        ``snapshots`` are iterations k at which θ_k is kept (for rewinding) in
        ``self.snapshots``.
        """
        until = self.hp.iterations if until is None else until
        self.snapshots = getattr(self, "snapshots", {})
        while True:
            if self.iteration in snapshots:
                self.snapshots[self.iteration] = self.net.snapshot()
            if self.iteration % self.hp.eval_every == 0 or self.iteration == self.hp.iterations:
                if not self.curve.iteration or self.curve.iteration[-1] != self.iteration:
                    self.record()
                    if on_eval:
                        on_eval(self)
            if self.iteration >= until:
                break
            if on_checkpoint and checkpoint_every and self.iteration and self.iteration % checkpoint_every == 0:
                on_checkpoint(self)
            self.steps(self.steps_to_next_stop(until, checkpoint_every if on_checkpoint else None, snapshots))
        return self

    def steps_to_next_stop(self, until, checkpoint_every, snapshots):
        """Iterations from here to the next one at which ``run`` does more than train."""
        here, every = self.iteration, self.hp.eval_every
        stops = [until, self.hp.iterations, (here // every + 1) * every, *snapshots]
        if checkpoint_every:
            stops.append((here // checkpoint_every + 1) * checkpoint_every)
        return min(stop for stop in stops if stop > here) - here

    def finish(self):
        """Metrics at the end of the budget, including training accuracy on all training data."""
        _, train_accuracy = self.evaluate(self.data.x_train, self.data.y_train)
        return summarize(self.curve, train_accuracy)

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        """Everything needed to continue this run exactly: plain arrays and JSON-able values."""
        arrays = {f"net.{k}": v for k, v in self.net.state().items()}
        arrays.update({f"optimizer.{k}": v for k, v in self.optimizer.state().items()})
        batches = self.batches.state()
        arrays["batches.order"] = batches["order"]
        info = {"iteration": self.iteration, "curve": self.curve.to_dict(),
                "batches.position": batches["position"], "batches.rng": batches["rng"],
                "dropout_rng": self.net.dropout_rng.bit_generator.state,
                "augment_rng": self.augment_rng.bit_generator.state,
                "snapshots": sorted(getattr(self, "snapshots", {}))}
        for k, weights in getattr(self, "snapshots", {}).items():
            arrays.update({f"snapshot.{k}.{name}": value for name, value in weights.items()})
        return arrays, info

    def load_state(self, arrays, info):
        self.net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
        self.optimizer.load_state({k[10:]: v for k, v in arrays.items() if k.startswith("optimizer.")})
        self.batches.load_state({"order": arrays["batches.order"], "position": info["batches.position"],
                                 "rng": info["batches.rng"]})
        self.net.dropout_rng.bit_generator.state = info["dropout_rng"]
        self.augment_rng.bit_generator.state = info["augment_rng"]
        self.iteration = int(info["iteration"])
        self.curve = Curve.from_dict(info["curve"])
        self.snapshots = {int(k): {name: arrays[f"snapshot.{k}.{name}"] for name in self.net.params}
                          for k in info.get("snapshots", [])}


def check_batch_size(hp, data):
    """A minibatch must fit in the training set (the check of every way of training)."""
    if hp.batch_size > len(data.x_train):
        raise ValueError(f"batch size {hp.batch_size} is larger than the training set ({len(data.x_train)})")


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Timer:
    """Wall time since creation, for progress lines."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.start
