"""Training steps of a sparse stack (Lenet), a whole stretch of them as one kernel call,
each step's batch split across the cores.

A training step made from Python (train.Trainer.step) is six calls: gather a minibatch,
the stack's forward pass (kernels/sparse_stack.py), the loss, the backward pass, the
optimizer, and the bookkeeping between them: ~35 us of a ~280 us step of Lenet at Pm 5%.
And those passes split each layer's outputs across the two cores, so both read the whole
of every activation the other just wrote, and W and dW, at scattered flat positions.

Here a stretch of steps is one call, and each step splits the *batch*: the samples are
cut into parts of ``LANES`` (32), and one iteration of a parallel loop takes its part
through the whole step, gather, forward pass, loss and backward pass, touching only its
own samples' activations (``tiles[l][part]``, (in_l, LANES): the batch in the vector
dimension; a part's passes are kernels/parts.py's). Its gradient is the part's sum (``partials[part]``);
the parts' sums are added, in order, and the optimizer updates θ: two parallel loops a step.

θ is *compact*: the stack's kept weights and its biases, layer after layer, each layer's
weights in the order of its columns (kernels/sparse.py's ``col_*`` index), then its
biases:

    theta = [W_0 at K_0 by column, b_0, W_1 at K_1 by column, b_1, ...]     grad, m, v alike

``weights[l]``, ``biases[l]`` are the views of theta that hold layer l's parts, and
``partial_w[l]``, ``partial_b[l]`` (parts, ...) those of ``partials``. The forward pass and
the first layer's dW walk the weights by column, in theta's order; a hidden layer's
backward pass walks them by row for dL/dx, through ``row_pos[l]`` (the place in
``weights[l]`` of the k-th kept weight by row).

Step s trains on the images ``images[index[s]] / scale`` (uint8 pixels with scale 255, or
float images with scale 1) and ``labels[s]``, then updates θ with Adam (``adam_stretch``) or
SGD with momentum (``momentum_stretch``) as optim.py's optimizers do. When a step's loss is
not finite the call returns before that step's update, so θ is that of the step before. The
numbers are those of a step by step up to float rounding (dW and db are summed part by part);
they do not depend on the number of threads.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel
from .core import adam_element, adam_update_numpy, momentum_element, momentum_update_numpy, softmax_cross_entropy_numpy
from .parts import (LANES, backward_first_part, backward_hidden_part, bias_part, dense_weights, forward_part,
                    gather_part, into_parts, loss_part)


@jit
def train_part(part, images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols,
               row_pos, rows, tiles, grad_tiles, partial_w, partial_b):
    """One part's share of a step: its samples through the stack and back, its sums of dW and db
    in partial_w[l][part], partial_b[l][part]; returns its summed loss."""
    samples, layers = index.size, len(weights)
    first = part * LANES
    count = min(LANES, samples - first)
    gather_part(images, index[first:first + count], scale, rows[part], tiles[0][part])
    for layer in range(layers):
        forward_part(tiles[layer][part], weights[layer], biases[layer], col_starts[layer], col_rows[layer],
                     tiles[layer + 1][part], count, layer < layers - 1)
    loss = loss_part(tiles[layers][part], labels, first, count, samples, grad_tiles[layers - 1][part])
    for layer in range(layers - 1, 0, -1):
        bias_part(grad_tiles[layer][part], partial_b[layer][part])
        backward_hidden_part(tiles[layer][part], grad_tiles[layer][part], weights[layer], row_starts[layer],
                             row_cols[layer], row_pos[layer], grad_tiles[layer - 1][part], partial_w[layer][part])
    bias_part(grad_tiles[0][part], partial_b[0][part])
    backward_first_part(tiles[0][part], grad_tiles[0][part], col_starts[0], col_rows[0], partial_w[0][part])
    return loss


@jit_parallel
def train_parts(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols, row_pos,
                rows, tiles, grad_tiles, partial_w, partial_b, losses):
    for part in prange(losses.size):
        losses[part] = train_part(part, images, index, scale, labels, weights, biases, col_starts, col_rows,
                                  row_starts, row_cols, row_pos, rows, tiles, grad_tiles, partial_w, partial_b)


@jit_parallel
def add_parts(partials, grad):
    """grad = partials[0] + partials[1] + ..., added in that order."""
    for q in prange(grad.size):
        grad[q] = partials[0, q]
    for part in range(1, partials.shape[0]):
        for q in prange(grad.size):
            grad[q] += partials[part, q]


@jit_parallel
def adam_compact(theta, grad, m, v, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    """``core.adam_update`` without a mask: every value of the compact θ is kept."""
    for q in prange(theta.size):
        theta[q], m[q], v[q] = adam_element(theta[q], grad[q], m[q], v[q], step_size, beta1, beta2, eps,
                                            weight_decay, bias2_root)


@jit_parallel
def momentum_compact(theta, grad, buf, lr, momentum, weight_decay, nesterov):
    """``core.momentum_update`` without a mask."""
    for q in prange(theta.size):
        theta[q], buf[q] = momentum_element(theta[q], grad[q], buf[q], lr, momentum, weight_decay, nesterov)


@jit
def train_step(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols, row_pos,
               rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, grad):
    """One step's passes: returns its mean loss and, when that is finite, fills grad."""
    train_parts(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols, row_pos,
                rows, tiles, grad_tiles, partial_w, partial_b, losses)
    loss = 0.0
    for part in range(losses.size):
        loss += losses[part]
    loss /= index.size
    if np.isfinite(loss):
        add_parts(partials, grad)
    return loss


@jit
def adam_stretch(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols, row_pos,
                 rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, theta, grad, m, v, step_sizes,
                 bias2_roots, beta1, beta2, eps, weight_decay):
    """``index.shape[0]`` training steps with Adam; returns (steps made, the last step's loss).

    images (N, F); index, labels (steps, batch); rows (parts, LANES, F): each part's images as
    floats; tiles[l] (parts, in_l, LANES) for each layer's input and, last, the logits;
    grad_tiles[l] (parts, out_l, LANES); partials (parts, |θ|); losses (parts,); m, v: Adam's
    moments in theta's order; step s's hyperparameters as optim.Adam.hyperparameters gives them.
    """
    loss = 0.0
    for step in range(index.shape[0]):
        loss = train_step(images, index[step], scale, labels[step], weights, biases, col_starts, col_rows,
                          row_starts, row_cols, row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b,
                          losses, grad)
        if not np.isfinite(loss):
            return step, loss
        adam_compact(theta, grad, m, v, step_sizes[step], beta1, beta2, eps, weight_decay, bias2_roots[step])
    return index.shape[0], loss


@jit
def momentum_stretch(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols,
                     row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, theta, grad, buf, lrs,
                     momentum, weight_decay, nesterov):
    """``adam_stretch`` with SGD and momentum (optim.Momentum): buf, its buffer in theta's order;
    step s at learning rate lrs[s]."""
    loss = 0.0
    for step in range(index.shape[0]):
        loss = train_step(images, index[step], scale, labels[step], weights, biases, col_starts, col_rows,
                          row_starts, row_cols, row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b,
                          losses, grad)
        if not np.isfinite(loss):
            return step, loss
        momentum_compact(theta, grad, buf, lrs[step], momentum, weight_decay, nesterov)
    return index.shape[0], loss


# ----------------------------------------------------------------------------- NumPy twin

def train_step_numpy(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols,
                     row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, grad):
    """``train_step`` with dense products on W (in, out), zero outside K, made from the compact θ."""
    layers = range(len(weights))
    h = images[index].astype(grad.dtype) / scale                         # (N, F)
    samples = h.shape[0]
    for p in range(losses.size):
        part = h[p * LANES:(p + 1) * LANES]
        rows[p, :len(part)] = part
    full = [dense_weights(weights[l], col_starts[l], col_rows[l], tiles[l].shape[1]) for l in layers]
    inputs = []
    for l in layers:
        inputs.append(h)
        y = h @ full[l] + biases[l]
        h = np.maximum(y, 0) if l < len(weights) - 1 else y
    for l, value in enumerate(inputs + [h]):
        into_parts(value, tiles[l])
    dy = np.empty_like(h)
    softmax_cross_entropy_numpy(h, labels, dy)                           # dy: of the batch's mean loss
    shifted = h - h.max(axis=1, keepdims=True)
    each = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(samples), labels]
    losses[...] = [each[p * LANES:(p + 1) * LANES].sum() for p in range(losses.size)]
    loss = losses.sum() / samples
    if not np.isfinite(loss):
        return loss
    for l in reversed(layers):
        into_parts(dy, grad_tiles[l])
        for p in range(losses.size):
            mine = slice(p * LANES, (p + 1) * LANES)
            partial_b[l][p] = dy[mine].sum(axis=0)
            partial_w[l][p] = compact(inputs[l][mine].T @ dy[mine], col_starts[l], col_rows[l])
        dy = (dy @ full[l].T) * (inputs[l] > 0)
    grad[...] = partials.sum(axis=0)
    return loss


def adam_stretch_numpy(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols,
                       row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, theta, grad, m, v,
                       step_sizes, bias2_roots, beta1, beta2, eps, weight_decay):
    loss = 0.0
    for step in range(index.shape[0]):
        loss = train_step_numpy(images, index[step], scale, labels[step], weights, biases, col_starts, col_rows,
                                row_starts, row_cols, row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b,
                                losses, grad)
        if not np.isfinite(loss):
            return step, loss
        adam_update_numpy(theta, grad, m, v, np.ones_like(theta), step_sizes[step], beta1, beta2, eps, weight_decay,
                          bias2_roots[step])
    return index.shape[0], loss


def momentum_stretch_numpy(images, index, scale, labels, weights, biases, col_starts, col_rows, row_starts, row_cols,
                           row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b, losses, theta, grad, buf,
                           lrs, momentum, weight_decay, nesterov):
    loss = 0.0
    for step in range(index.shape[0]):
        loss = train_step_numpy(images, index[step], scale, labels[step], weights, biases, col_starts, col_rows,
                                row_starts, row_cols, row_pos, rows, tiles, grad_tiles, partials, partial_w, partial_b,
                                losses, grad)
        if not np.isfinite(loss):
            return step, loss
        momentum_update_numpy(theta, grad, buf, np.ones_like(theta), lrs[step], momentum, weight_decay, nesterov)
    return index.shape[0], loss


def compact(dense, starts, rows):
    """A layer's (in, out) array at its kept weights, by column: theta's order."""
    return dense[rows, np.repeat(np.arange(len(starts) - 1), np.diff(starts))]


TWINS = [
    (adam_stretch, adam_stretch_numpy),
    (momentum_stretch, momentum_stretch_numpy),
]
