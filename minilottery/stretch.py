"""A sparse Lenet trains a stretch of steps at a time: every step from one evaluation to the
next as one kernel call (kernels/stretch.py).

``Trainer.run`` stops training only at evaluations, checkpoints, snapshots and the end;
between two of them nothing but training steps runs, and nothing else reads or writes the
network. So when Lenet is a ``SparseStack`` trained by Adam, those steps run as one call:
no Python between steps, and θ, its gradient and Adam's moments held *compact* for the
stretch (the kept weights and the biases, contiguous) instead of scattered over the flat
buffers. At its end they are written back where they always live: ``net.params`` holds θ
after the last step, ``net.grads`` that step's gradients (0 at pruned weights), and the
optimizer its moments and step count, exactly as after the same steps made one by one.

A step is the same arithmetic on the same values in the same order as ``Trainer.step``
with a SparseStack, so the numbers are identical (tests/test_stretch.py).
"""
import numpy as np

from . import optim
from .kernels import stretch as kernels
from .sparse import SparseUpdate


class SparseStretch:
    """The compact θ of a SparseStack, its index, and the work arrays of its batch size."""

    def __init__(self, net, batch_size):
        stack = self.stack = net.sparse_stack
        self.net, self.batch_size = net, batch_size
        names = {id(leaf): name for name, leaf in net.leaves}
        parts, kept = [], []  # (start, stop) in theta of each layer's weights, then its biases
        cursor = 0
        for layer in stack.layers:
            name = names[id(layer.layer)]
            weight, bias = net.slices[f"{name}.weight"], net.slices[f"{name}.bias"]
            for positions in (weight.start + layer.positions, np.arange(bias.start, bias.stop)):
                kept.append(positions)
                parts.append((cursor, cursor + positions.size))
                cursor += positions.size
        # the flat positions of theta's values; the optimizer's moments gather in the same order
        self.update = SparseUpdate(np.zeros((0, 2), np.int64), np.concatenate(kept))
        self.theta = np.zeros(cursor, net.dtype)
        self.grad = np.zeros(cursor, net.dtype)
        views = [(self.theta[start:stop], self.grad[start:stop]) for start, stop in parts]
        self.weights, self.weight_grads = zip(*views[0::2])
        self.biases, self.bias_grads = zip(*views[1::2])
        # the stack's index, pointing into each layer's weights in theta: by row, theta's own order
        self.col_pos = tuple(np.searchsorted(layer.positions, layer.col_pos) for layer in stack.layers)
        self.row_pos = tuple(np.arange(layer.positions.size) for layer in stack.layers)
        self.tiles, self.grad_tiles = stack.tiles(batch_size)
        first, last = stack.layers[0], stack.layers[-1]
        self.x = np.empty((batch_size, first.inputs), net.dtype)
        self.logits = np.empty((batch_size, last.outputs), net.dtype)
        self.dlogits = np.empty_like(self.logits)
        self.no_dx = first.no_dx

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
        step_sizes, _, _, _, _, bias2_roots = (np.array(values, net.dtype) for values in zip(*hyper))
        beta1, beta2, eps, weight_decay = hyper[0][1:5]
        flat_params, kept = net.flat_params, self.update.kept
        self.theta[...] = flat_params[kept]
        m, v = optimizer.kept(self.update)
        with net.sparse_cores():
            done, loss = kernels.train_stretch(
                images, index, scale, labels, step_sizes, bias2_roots, beta1, beta2, eps, weight_decay, self.x,
                self.logits, self.dlogits, self.weights, self.biases, *self.stack.by_column[:2], self.col_pos,
                self.tiles, self.weight_grads, self.bias_grads, *self.stack.by_row[:2], self.row_pos,
                self.grad_tiles, self.no_dx, self.theta, self.grad, m, v)
        flat_params[kept] = self.theta
        if done:
            net.flat_grads[kept] = self.grad
        optimizer.t += done
        net.forward_done = False  # the layers' caches do not hold this stretch's last pass
        return done, float(loss)


def for_trainer(trainer, current=None):
    """The SparseStretch that trains ``trainer``'s steps, or None where they are made one by one:
    a network that is not a SparseStack now, an optimizer other than Adam, augmented images, or
    images of another precision than the network's (a step would compute in theirs). ``current``: the one made last time, kept
    while the network's stack is the same."""
    net, batches = trainer.net, trainer.batches
    stack = net.sparse_stack
    if stack is None or not isinstance(trainer.optimizer, optim.Adam) or trainer.hp.augment:
        return None
    if batches.x.dtype != net.dtype:
        return None
    if current is not None and current.stack is stack and current.batch_size == batches.batch_size:
        return current
    return SparseStretch(net, batches.batch_size)
