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
dimension, as in kernels/sparse.py). Its gradient is the part's sum (``partials[part]``);
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

Loops over a part's 32 lanes take two weights a round (four dot products): LLVM unrolls a
loop of 32 iterations whole before its loop vectoriser sees it, and Numba leaves the SLP
vectoriser, which would pack the unrolled copies, switched off (numba/numba#8852), so one
weight a round ran as 32 scalar instructions, 6x slower.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel, register_block
from .core import (adam_element, adam_update_numpy, gather_pixels, momentum_element, momentum_update_numpy,
                   softmax_cross_entropy_numpy)
from .sparse import transpose_into_tiles

LANES = 32  # samples per part: two AVX-512 registers of float32


def part_count(samples):
    return -(-samples // LANES)


@jit
def gather_part(images, index, scale, rows, x):
    """x[i, t] = images[index[t], i] / scale for the part's samples t (the batch's ``index`` from
    its first); x (F, LANES). The images go through ``rows`` (LANES, F) as floats."""
    count = index.size
    gather_pixels(images, index, scale, rows[:count])
    transpose_into_tiles(rows[:count], x.reshape(1, x.shape[0], LANES))


@jit
def forward_part(h, w, b, starts, rows, out, count, relu):
    """out[j, t] = sum over kept (i, j) of w_ij h[i, t], + b[j], through ReLU if ``relu``, for the
    part's samples t < count (0 past them); w: the layer's kept weights by column."""
    zero = h.dtype.type(0)
    for j in range(b.size):
        acc = register_block(2, LANES, h.dtype)
        for t in range(LANES):
            acc[0, t] = zero
            acc[1, t] = zero
        k, end = starts[j], starts[j + 1]
        # two weights a round: one at a time, the loop over t ran scalar (the module's docstring)
        while k + 1 < end:
            w0, w1, i0, i1 = w[k], w[k + 1], rows[k], rows[k + 1]
            for t in range(LANES):
                acc[0, t] += w0 * h[i0, t]
                acc[1, t] += w1 * h[i1, t]
            k += 2
        if k < end:
            w0, i0 = w[k], rows[k]
            for t in range(LANES):
                acc[0, t] += w0 * h[i0, t]
        for t in range(LANES):
            value = acc[0, t] + acc[1, t] + b[j]
            if relu:
                value = zero if value < 0 else value  # a NaN stays NaN, as in np.maximum
            out[j, t] = value if t < count else zero


@jit
def loss_part(z, labels, first, count, samples, dz):
    """Softmax cross-entropy of the part's logits z (classes, LANES) as core.softmax_cross_entropy
    computes it: dz = (softmax - onehot) / samples, 0 past the last sample; returns the part's
    summed loss."""
    classes = z.shape[0]
    total = 0.0
    for t in range(LANES):
        if t >= count:
            for k in range(classes):
                dz[k, t] = 0
            continue
        top = z[0, t]
        for k in range(1, classes):
            top = max(top, z[k, t])
        norm = 0.0
        for k in range(classes):
            dz[k, t] = np.exp(z[k, t] - top)
            norm += dz[k, t]
        label = labels[first + t]
        total += np.log(norm) + top - z[label, t]
        for k in range(classes):
            dz[k, t] = dz[k, t] / norm / samples
        dz[label, t] -= 1.0 / samples
    return total


@jit
def bias_part(dy, db):
    """db[j] = sum_t dy[j, t]: the part's bias gradient."""
    for j in range(db.size):
        total = dy.dtype.type(0)
        for t in range(LANES):
            total += dy[j, t]
        db[j] = total


@jit
def backward_hidden_part(h, dy, w, starts, columns, positions, below, dw):
    """A hidden layer's part: dw[p] = sum_t h[i, t] dy[j, t] for kept (i, j) at place p of w, and
    below[i, t] = (sum over kept (i, j) of w_ij dy[j, t]) if h[i, t] > 0 else 0 (ReLU's derivative
    below), row by row."""
    zero = h.dtype.type(0)
    for i in range(h.shape[0]):
        hi = register_block(1, LANES, h.dtype)[0]
        acc = register_block(2, LANES, h.dtype)
        for t in range(LANES):
            hi[t] = h[i, t]
            acc[0, t] = zero
            acc[1, t] = zero
        k, end = starts[i], starts[i + 1]
        while k + 1 < end:                       # two a round, as in forward_part
            j0, j1, p0, p1 = columns[k], columns[k + 1], positions[k], positions[k + 1]
            w0, w1 = w[p0], w[p1]
            dot0, dot1 = zero, zero
            for t in range(LANES):
                dot0 += hi[t] * dy[j0, t]
                dot1 += hi[t] * dy[j1, t]
                acc[0, t] += w0 * dy[j0, t]
                acc[1, t] += w1 * dy[j1, t]
            dw[p0], dw[p1] = dot0, dot1
            k += 2
        if k < end:
            j0, p0 = columns[k], positions[k]
            w0 = w[p0]
            dot0 = zero
            for t in range(LANES):
                dot0 += hi[t] * dy[j0, t]
                acc[0, t] += w0 * dy[j0, t]
            dw[p0] = dot0
        for t in range(LANES):
            below[i, t] = acc[0, t] + acc[1, t] if hi[t] > 0 else zero


@jit
def backward_first_part(h, dy, starts, rows, dw):
    """The first layer's part (no dL/dx wanted): dw[k] = sum_t h[i, t] dy[j, t] for its kept
    weights by column, in theta's order."""
    zero = h.dtype.type(0)
    for j in range(dy.shape[0]):
        dyj = register_block(1, LANES, h.dtype)[0]
        for t in range(LANES):
            dyj[t] = dy[j, t]
        k, end = starts[j], starts[j + 1]
        # four a round: fewer, and LLVM unrolled the loop over t and left it scalar (4x slower)
        while k + 3 < end:
            i0, i1, i2, i3 = rows[k], rows[k + 1], rows[k + 2], rows[k + 3]
            dot0, dot1, dot2, dot3 = zero, zero, zero, zero
            for t in range(LANES):
                dot0 += h[i0, t] * dyj[t]
                dot1 += h[i1, t] * dyj[t]
                dot2 += h[i2, t] * dyj[t]
                dot3 += h[i3, t] * dyj[t]
            dw[k], dw[k + 1], dw[k + 2], dw[k + 3] = dot0, dot1, dot2, dot3
            k += 4
        while k < end:
            i0 = rows[k]
            dot0 = zero
            for t in range(LANES):
                dot0 += h[i0, t] * dyj[t]
            dw[k] = dot0
            k += 1


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


@jit
def evaluate_part(part, x, labels, weights, biases, col_starts, col_rows, tiles):
    """A part of an evaluation batch x (N, F) through the stack: returns its summed loss (as
    core.softmax_cross_entropy computes it) and how many of its images the logits' first
    maximum labels right (np.argmax)."""
    samples, layers = x.shape[0], len(weights)
    first = part * LANES
    count = min(LANES, samples - first)
    transpose_into_tiles(x[first:first + count], tiles[0][part:part + 1])
    for layer in range(layers):
        forward_part(tiles[layer][part], weights[layer], biases[layer], col_starts[layer], col_rows[layer],
                     tiles[layer + 1][part], count, layer < layers - 1)
    z = tiles[layers][part]
    total, correct = 0.0, 0
    for t in range(count):
        top, best = z[0, t], 0
        for k in range(1, z.shape[0]):
            if z[k, t] > top:
                top, best = z[k, t], k
        norm = 0.0
        for k in range(z.shape[0]):
            norm += np.exp(z[k, t] - top)
        label = labels[first + t]
        total += np.log(norm) + top - z[label, t]
        correct += best == label
    return total, correct


@jit_parallel
def evaluate_parts(x, labels, weights, biases, col_starts, col_rows, tiles, losses, correct):
    """An evaluation batch, a part of 32 images an iteration: losses[part], correct[part]."""
    for part in prange(losses.size):
        losses[part], correct[part] = evaluate_part(part, x, labels, weights, biases, col_starts, col_rows, tiles)


def evaluate_parts_numpy(x, labels, weights, biases, col_starts, col_rows, tiles, losses, correct):
    h = x
    for l in range(len(weights)):
        into_parts(h, tiles[l])
        y = h @ dense_weights(weights[l], col_starts[l], col_rows[l], h.shape[1]) + biases[l]
        h = np.maximum(y, 0) if l < len(weights) - 1 else y
    into_parts(h, tiles[-1])
    shifted = h - h.max(axis=1, keepdims=True)
    each = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(h)), labels]
    right = np.argmax(h, axis=1) == labels
    for p in range(losses.size):
        losses[p], correct[p] = each[p * LANES:(p + 1) * LANES].sum(), right[p * LANES:(p + 1) * LANES].sum()


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


def dense_weights(w, starts, rows, inputs):
    """W (inputs, out) from a layer's kept weights by column, 0 elsewhere."""
    columns = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    full = np.zeros((inputs, len(starts) - 1), w.dtype)
    full[rows, columns] = w
    return full


def compact(dense, starts, rows):
    """A layer's (in, out) array at its kept weights, by column: theta's order."""
    return dense[rows, np.repeat(np.arange(len(starts) - 1), np.diff(starts))]


def into_parts(value, parts):
    """parts[p, i, t] = value[p * LANES + t, i] for the samples that exist, 0 past them."""
    parts[...] = 0
    for p in range(parts.shape[0]):
        block = value[p * LANES:(p + 1) * LANES]
        parts[p, :, :len(block)] = block.T


TWINS = [
    (adam_stretch, adam_stretch_numpy),
    (momentum_stretch, momentum_stretch_numpy),
]
EVALUATION_TWINS = [(evaluate_parts, evaluate_parts_numpy)]
