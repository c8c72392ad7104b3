"""A sparse Lenet trains a stretch of steps at a time: every step from one evaluation to the
next as one kernel call (kernels/stretch.py).

``Trainer.run`` stops training only at evaluations, checkpoints, snapshots and the end;
between two of them nothing but training steps runs, and nothing else reads or writes the
network. So when Lenet is a ``SparseStack``, those steps run as one call:
no Python between steps, each step's batch split across the cores, and θ, its gradient and
the optimizer's state held *compact* for the stretch (the kept weights and the biases, contiguous)
instead of scattered over the flat buffers. At its end they are written back where they
always live: ``net.params`` holds θ after the last step, ``net.grads`` that step's gradients
(0 at pruned weights), and the optimizer its moments and step count, as after the same
steps made one by one.

A run's evaluations of the stack go the same way (``SparseStretch.evaluate``, from
``Trainer.evaluate``): a part of 32 images per parallel iteration.

The numbers are those of ``Trainer.step`` up to float rounding: a step sums dW and db over
each part of its batch, then adds the parts (tests/test_stretch.py). They do not depend on
the number of threads. Lenet at Pm 5% on 2 cores: ~150 us a step against ~300 step by step
(docs/performance.md).
"""
import numpy as np

from . import optim
from .kernels import aligned_zeros
from .kernels import parts as part_kernels
from .kernels import stretch as kernels
from .sparse import SparseUpdate


class SparseStretch:
    """The compact θ of a SparseStack (kernels/stretch.py), its index, and the work arrays of
    its batch size."""

    def __init__(self, net, batch_size):
        stack = self.stack = net.sparse_stack
        self.net, self.batch_size = net, batch_size
        names = {id(leaf): name for name, leaf in net.leaves}
        spans, kept = [], []  # (start, stop) in theta of each layer's weights, then its biases
        cursor = 0
        for layer in stack.layers:
            name = names[id(layer.layer)]
            weight, bias = net.slices[f"{name}.weight"], net.slices[f"{name}.bias"]
            for positions in (weight.start + layer.col_pos, np.arange(bias.start, bias.stop)):
                kept.append(positions)
                spans.append((cursor, cursor + positions.size))
                cursor += positions.size
        # the flat positions of theta's values; the optimizer's moments gather in the same order
        self.update = SparseUpdate(np.zeros((0, 2), np.int64), np.concatenate(kept))
        self.theta = np.zeros(cursor, net.dtype)
        self.grad = np.zeros(cursor, net.dtype)
        self.partials = np.zeros((part_kernels.part_count(batch_size), cursor), net.dtype)
        self.losses = np.zeros(part_kernels.part_count(batch_size))
        self.weights = tuple(self.theta[start:stop] for start, stop in spans[0::2])
        self.biases = tuple(self.theta[start:stop] for start, stop in spans[1::2])
        self.partial_w = tuple(self.partials[:, start:stop] for start, stop in spans[0::2])
        self.partial_b = tuple(self.partials[:, start:stop] for start, stop in spans[1::2])
        self.by_column, self.by_row = (tuple(tuple(getattr(layer, name) for layer in stack.layers) for name in names)
                                       for names in (("col_start", "col_rows"), ("row_start", "row_cols")))
        # the place by column (theta's order) of each layer's k-th kept weight by row
        self.row_pos = tuple(by_row_to_by_column(layer) for layer in stack.layers)
        sizes = [layer.inputs for layer in stack.layers] + [stack.layers[-1].outputs]
        self.rows = np.zeros((len(self.losses), part_kernels.LANES, sizes[0]), net.dtype)
        self.tiles = tuple(aligned_zeros((len(self.losses), size, part_kernels.LANES), net.dtype) for size in sizes)
        self.grad_tiles = tuple(aligned_zeros((len(self.losses), size, part_kernels.LANES), net.dtype)
                                for size in sizes[1:])
        self.evaluation_tiles = None  # (parts, in_l, LANES) for an evaluation batch, made at the first

    def run(self, trainer, count):
        """``count`` steps of ``trainer``; returns (steps made, the last loss). Fewer steps were
        made when that loss is not finite: θ and the rest are those of the steps made."""
        net, optimizer, batches = self.net, trainer.optimizer, trainer.batches
        index = batches.take(count)
        labels = batches.y[index]
        images, scale = ((batches.pixels, net.dtype.type(255)) if batches.pixels is not None
                         else (batches.x.reshape(len(batches.x), -1), net.dtype.type(1)))
        hyper = [optimizer.hyperparameters(trainer.schedule(trainer.iteration + step), optimizer.t + 1 + step)
                 for step in range(count)]
        per_step = [np.array(values, net.dtype) for values in zip(*hyper)]   # each hyperparameter, step by step
        flat_params, kept = net.flat_params, self.update.kept
        self.theta[...] = flat_params[kept]
        state = optimizer.kept(self.update)                        # Adam's m and v, or momentum's buffer
        if isinstance(optimizer, optim.Adam):                       # per step: α / (1 - β1^t) and sqrt(1 - β2^t)
            kernel, rates = kernels.adam_stretch, (per_step[0], per_step[5], *hyper[0][1:5])
        else:                                                       # per step: the learning rate
            kernel, rates = kernels.momentum_stretch, (per_step[0], *hyper[0][1:])
        with net.sparse_cores():
            done, loss = kernel(images, index, scale, labels, self.weights, self.biases, *self.by_column, *self.by_row,
                                self.row_pos, self.rows, self.tiles, self.grad_tiles, self.partials, self.partial_w,
                                self.partial_b, self.losses, self.theta, self.grad, *state, *rates)
        flat_params[kept] = self.theta
        if done:
            net.flat_grads[kept] = self.grad
        optimizer.t += done
        net.forward_done = False  # the layers' caches do not hold this stretch's last pass
        return done, float(loss)


    def evaluate(self, x, y, batch):
        """Mean loss and accuracy of the network on (x, y), in batches of ``batch`` images, each
        split into parts of 32 across the cores as a training step is (kernels/parts.py):
        what ``train.evaluate`` gives, up to float rounding."""
        net = self.net
        self.theta[...] = net.flat_params[self.update.kept]
        most = part_kernels.part_count(min(batch, len(x)))  # parts in a batch
        sizes = [layer.inputs for layer in self.stack.layers] + [self.stack.layers[-1].outputs]
        if self.evaluation_tiles is None or self.evaluation_tiles[0].shape[0] < most:
            self.evaluation_tiles = tuple(aligned_zeros((most, size, part_kernels.LANES), net.dtype) for size in sizes)
        losses, correct = np.zeros(most), np.zeros(most, np.int64)
        flat = x.reshape(len(x), -1)
        total_loss, right = 0.0, 0
        with net.sparse_cores():
            for start in range(0, len(x), batch):
                images, labels = flat[start:start + batch], y[start:start + batch]
                count = part_kernels.part_count(len(images))
                part_kernels.evaluate_parts(images, labels, self.weights, self.biases, *self.by_column,
                                       self.evaluation_tiles, losses[:count], correct[:count])
                total_loss += losses[:count].sum()
                right += int(correct[:count].sum())
        return float(total_loss) / len(x), right / len(x)


def by_row_to_by_column(layer):
    """For a SparseDense's kept weights listed by row, the place of each in its list by column."""
    by_column_as_row = np.searchsorted(layer.positions, layer.col_pos)   # the row-order index of each
    place = np.empty_like(by_column_as_row)
    place[by_column_as_row] = np.arange(by_column_as_row.size)
    return place


def for_trainer(trainer, current=None):
    """The SparseStretch that trains ``trainer``'s steps, or None where they are made one by one:
    a network that is not a SparseStack now, an optimizer of another kind, augmented images, or
    images of another precision than the network's (a step would compute in theirs).
    ``current``: the one made last time, kept while the network's stack is the same."""
    net, batches = trainer.net, trainer.batches
    stack = net.sparse_stack
    if stack is None or not isinstance(trainer.optimizer, (optim.Adam, optim.Momentum)) or trainer.hp.augment:
        return None
    if batches.x.dtype != net.dtype:
        return None
    if current is not None and current.stack is stack and current.batch_size == batches.batch_size:
        return current
    return SparseStretch(net, batches.batch_size)
