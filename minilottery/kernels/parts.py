"""A sparse stack's passes (Lenet) over a *part* of a batch: 32 samples, the batch in the
vector dimension, one core's share of a step or of an evaluation batch (kernels/stretch.py).

A part's activations are ``tiles[l][part]`` (in_l, LANES): ``tiles[l][part, i, t]`` is input i
of layer l for sample part * LANES + t, 0 past the last sample, as in kernels/sparse.py's tiles
of 64. One iteration of a parallel loop takes one part through every layer, touching only its
own samples' activations, so that no core reads what the other has just written (split by
output column instead, the stack's forward pass ran no faster on two threads than on one).

A layer's kept weights are given as the stretch holds them, compact: ``w`` the layer's kept
weights by column (kernels/sparse.py's ``col_start``, ``col_rows``), and for a backward pass by
row, ``positions`` the place in ``w`` of each kept weight listed by row.

Loops over a part's 32 lanes take two weights a round (four dot products): LLVM unrolls a
loop of 32 iterations whole before its loop vectoriser sees it, and Numba leaves the SLP
vectoriser, which would pack the unrolled copies, switched off (numba/numba#8852), so one
weight a round ran as 32 scalar instructions, 6x slower.

``evaluate_parts`` evaluates a batch this way (stretch.SparseStretch.evaluate); its NumPy twin
is ``evaluate_parts_numpy``, and the training passes' twins are in kernels/stretch.py.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel
from .registers import register_block
from .core import example_cross_entropy, gather_pixels
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
    """Softmax cross-entropy of the part's logits z (classes, LANES), each sample's as
    core.softmax_cross_entropy computes it: dz = (softmax - onehot) / samples, 0 past the last
    sample; returns the part's summed loss."""
    total = 0.0
    for t in range(LANES):
        if t < count:
            total += example_cross_entropy(z[:, t], labels[first + t], dz[:, t], samples)
        else:
            for k in range(z.shape[0]):
                dz[k, t] = 0
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
    unused = np.empty(z.shape[0], z.dtype)  # the loss's gradient, not wanted here
    total, correct = 0.0, 0
    for t in range(count):
        label = labels[first + t]
        total += example_cross_entropy(z[:, t], label, unused, samples)
        best = 0
        for k in range(1, z.shape[0]):
            if z[k, t] > z[best, t]:
                best = k
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


# ----------------------------------------------------------------------------- for the NumPy twins

def dense_weights(w, starts, rows, inputs):
    """W (inputs, out) from a layer's kept weights by column, 0 elsewhere."""
    columns = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    full = np.zeros((inputs, len(starts) - 1), w.dtype)
    full[rows, columns] = w
    return full


def into_parts(value, parts):
    """parts[p, i, t] = value[p * LANES + t, i] for the samples that exist, 0 past them."""
    parts[...] = 0
    for p in range(parts.shape[0]):
        block = value[p * LANES:(p + 1) * LANES]
        parts[p, :, :len(block)] = block.T


TWINS = [(evaluate_parts, evaluate_parts_numpy)]
