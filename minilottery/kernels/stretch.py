"""Training steps of a sparse stack (Lenet), a whole stretch of them as one kernel call.

A training step made from Python (train.Trainer.step) is six calls: gather a minibatch,
the stack's forward pass (kernels/sparse_stack.py), the loss (kernels/core.py), the
stack's backward pass, the optimizer (kernels/sparse.py), and the bookkeeping between
them. At Pm 5% Lenet's kernels leave ~35 us of such Python in a step of ~280. And the
kernels read and write W and dW where they live, in the network's flat buffers, at
positions that touch more than half of fc1's cache lines for 5% of its weights; the
optimizer, split across the cores by position, writes the lines that the next forward
pass, split by column, reads on the other core.

Here the same kernels run one step after another inside one call, on a *compact* θ:
the stack's kept weights and its biases, layer after layer, each layer's weights in the
order of its flat positions (row by row), then its biases:

    theta = [W_0 at K_0, b_0, W_1 at K_1, b_1, ...]      grad, m, v: the same order

``weights[l]``, ``biases[l]`` (and ``weight_grads[l]``, ``bias_grads[l]``) are the views of
theta (of grad) that hold layer l's parts, and the stack's index arrays point into them
instead of into the flat buffers: ``col_pos[l][k]`` is the place in ``weights[l]`` of the
k-th kept weight by column, ``row_pos[l]`` counts 0, 1, ... by row. So each step reads
and writes ~14,000 contiguous values instead of scattered ones, and Adam runs over them
as one vectorised loop. The numbers are those of the step-by-step path: the same loops
over the same values in the same order.

Step s trains on the images ``images[index[s]] / scale`` (uint8 pixels with scale 255,
or float images with scale 1) and ``labels[s]`` with Adam's ``step_sizes[s]`` and
``bias2_roots[s]`` (optim.Adam.hyperparameters). When a step's loss is not finite the
call returns before that step's backward pass, so θ is that of the step before.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel
from .core import (adam_element, adam_update_numpy, gather_pixels, gather_pixels_numpy, softmax_cross_entropy,
                   softmax_cross_entropy_numpy)
from .sparse_stack import stack_backward, stack_backward_numpy, stack_forward, stack_forward_numpy


@jit_parallel
def adam_compact(theta, grad, m, v, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    """``core.adam_update`` without a mask: every value of the compact θ is kept."""
    for q in prange(theta.size):
        theta[q], m[q], v[q] = adam_element(theta[q], grad[q], m[q], v[q], step_size, beta1, beta2, eps,
                                            weight_decay, bias2_root)


def adam_compact_numpy(theta, grad, m, v, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    adam_update_numpy(theta, grad, m, v, np.ones_like(theta), step_size, beta1, beta2, eps, weight_decay, bias2_root)


@jit
def train_stretch(images, index, scale, labels, step_sizes, bias2_roots, beta1, beta2, eps, weight_decay, x, logits,
                  dlogits, weights, biases, col_starts, col_rows, col_pos, tiles, weight_grads, bias_grads,
                  row_starts, row_cols, row_pos, grad_tiles, no_dx, theta, grad, m, v):
    """``index.shape[0]`` training steps; returns (steps made, the last step's loss).

    images (N, F); index, labels (steps, batch); x (batch, F), logits and dlogits (batch,
    classes): work arrays; the stack's arrays as in kernels/sparse_stack.py, pointing into
    theta and grad as described above; m, v: Adam's moments in theta's order.
    """
    loss = 0.0
    for step in range(index.shape[0]):
        gather_pixels(images, index[step], scale, x)
        stack_forward(x, weights, biases, col_starts, col_rows, col_pos, tiles, logits)
        loss = softmax_cross_entropy(logits, labels[step], dlogits)
        if not np.isfinite(loss):
            return step, loss
        stack_backward(dlogits, weights, weight_grads, bias_grads, row_starts, row_cols, row_pos, tiles, grad_tiles,
                       no_dx)
        adam_compact(theta, grad, m, v, step_sizes[step], beta1, beta2, eps, weight_decay, bias2_roots[step])
    return index.shape[0], loss


def train_stretch_numpy(images, index, scale, labels, step_sizes, bias2_roots, beta1, beta2, eps, weight_decay, x,
                        logits, dlogits, weights, biases, col_starts, col_rows, col_pos, tiles, weight_grads,
                        bias_grads, row_starts, row_cols, row_pos, grad_tiles, no_dx, theta, grad, m, v):
    # each step through the stack's twins, which take W (in, out) flattened and flat positions
    layers = range(len(weights))
    shapes = [(tiles[l].shape[1], biases[l].size) for l in layers]
    by_column = [flat_positions(col_starts[l], col_rows[l], shapes[l], by_column=True) for l in layers]
    by_row = [flat_positions(row_starts[l], row_cols[l], shapes[l], by_column=False) for l in layers]
    loss = 0.0
    for step in range(index.shape[0]):
        full = tuple(np.zeros(rows * columns, theta.dtype) for rows, columns in shapes)
        for l in layers:
            full[l][by_column[l]] = weights[l][col_pos[l]]
        full_grads = tuple(np.zeros_like(w) for w in full)
        gather_pixels_numpy(images, index[step], scale, x)
        stack_forward_numpy(x, full, biases, col_starts, col_rows, tuple(by_column), tiles, logits)
        loss = softmax_cross_entropy_numpy(logits, labels[step], dlogits)
        if not np.isfinite(loss):
            return step, loss
        stack_backward_numpy(dlogits, full, full_grads, bias_grads, row_starts, row_cols, tuple(by_row), tiles,
                             grad_tiles, no_dx)
        for l in layers:
            weight_grads[l][row_pos[l]] = full_grads[l][by_row[l]]
        adam_compact_numpy(theta, grad, m, v, step_sizes[step], beta1, beta2, eps, weight_decay, bias2_roots[step])
    return index.shape[0], loss


def flat_positions(starts, others, shape, by_column):
    """Positions in W (in, out) flattened of a layer's kept weights, indexed by column
    (``others``: their rows) or by row (``others``: their columns)."""
    rows, columns = shape
    outer = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    return others * columns + outer if by_column else outer * columns + others


TWINS = [
    (adam_compact, adam_compact_numpy),
    (train_stretch, train_stretch_numpy),
]
