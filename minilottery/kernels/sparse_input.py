"""Products that skip the zeros of their input: Lenet's first layer on MNIST.

Four pixels in five of an MNIST digit are exactly 0 (the background; pixels are
x / 255 with no other normalisation, datasets.py), so of the first layer's products

    forward     y = x @ W + b       (N, 784) @ (784, 300)
    backward    dW = x^T dy         (784, N) @ (N, 300)

four fifths of the multiply-adds multiply by zero. BLAS does them all. These kernels
do only those a register block needs (the layer is layers.Dense; the data's density
decides per batch whether it calls them, see ``worth_skipping``):

    forward     for a group of S = 4 samples, the pixels where any of them is nonzero
                (39% of all on MNIST): y[group, block] += x[group, i] W[i, block]
    dW          for a group of P = 4 neighbouring pixels, the samples where any of them
                is nonzero (28%): dW[group, block] += x[n, group] dy[n, block]

Each W row (or dy row) that is read serves 4 accumulators of 64 columns, so the loop
runs on the core's multiply-adds, not on loads from L2: one sample at a time, every W
row read per nonzero pixel served one accumulator and ran 2.3x slower than this.
Output columns go in blocks of 64; the last block is shifted left to end at the last
column (300 = 4 x 64 + 44: the last block is columns 236-299), so no block needs a
remainder loop; the shifted last group of samples or pixels writes only its new rows.
Every output is computed by one loop iteration in a fixed order, so the numbers do not
depend on the thread count. Each kernel has a NumPy twin ``<name>_numpy``.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel, register_block

GROUP = 4     # samples (forward) or pixels (dW) that share each row read
COLUMNS = 64  # output columns per register block: four AVX-512 registers of float32


def fits(samples, inputs, outputs):
    """Whether the kernels' blocks fit the layer: at least one whole group and column block."""
    return samples >= GROUP and inputs >= GROUP and outputs >= COLUMNS


@jit
def nonzero_fraction(x):
    """The fraction of entries of x that are not 0 (a flat array)."""
    count = 0
    for i in range(x.size):
        count += x[i] != 0
    return count / max(x.size, 1)


def nonzero_fraction_numpy(x):
    return np.count_nonzero(x) / max(x.size, 1)


@jit_parallel
def forward_skipping_zeros(x, w, b, y):
    """y = x @ W + b, skipping the pixels that are 0 in a whole group of samples.

    x (N, in), w (in, out), b (out,), y (N, out) written; N >= GROUP, out >= COLUMNS.
    """
    samples, inputs = x.shape
    outputs = w.shape[1]
    for group in prange(-(-samples // GROUP)):
        first = max(0, min(group * GROUP, samples - GROUP))  # the last group shifted back to fit
        fresh = group * GROUP - first                         # its rows an earlier group wrote
        pixels = np.empty(inputs, np.int64)                   # where any of the group is nonzero
        values = np.empty((inputs, GROUP), x.dtype)           # x[group's samples, those pixels]
        count = 0
        for i in range(inputs):
            pixels[count] = i
            nonzero = False
            for s in range(GROUP):
                value = x[first + s, i]
                values[count, s] = value
                nonzero |= value != 0
            count += nonzero
        acc = register_block(GROUP, COLUMNS, y.dtype)         # y[group, block]
        for block in range(-(-outputs // COLUMNS)):
            j0 = max(0, min(block * COLUMNS, outputs - COLUMNS))  # max(0, .): LLVM then knows j0 >= 0
            for s in range(GROUP):
                for c in range(COLUMNS):
                    acc[s, c] = 0
            for k in range(count):
                i = pixels[k]
                for s in range(GROUP):
                    value = values[k, s]
                    for c in range(COLUMNS):
                        acc[s, c] += value * w[i, j0 + c]
            for s in range(GROUP):
                if s >= fresh:
                    for c in range(COLUMNS):
                        y[first + s, j0 + c] = acc[s, c] + b[j0 + c]


def forward_skipping_zeros_numpy(x, w, b, y):
    y[...] = x @ w + b


@jit_parallel
def weight_grad_skipping_zeros(x, dy, g):
    """g = x^T dy (dW of y = x @ W + b), skipping the samples that are 0 at a whole group of pixels.

    x (N, in), dy (N, out), g (in, out) written; in >= GROUP, out >= COLUMNS.
    """
    samples, inputs = x.shape
    outputs = dy.shape[1]
    for group in prange(-(-inputs // GROUP)):
        first = max(0, min(group * GROUP, inputs - GROUP))
        fresh = group * GROUP - first
        rows = np.empty(samples, np.int64)                    # samples nonzero at any of the group
        values = np.empty((samples, GROUP), x.dtype)          # x[those samples, group's pixels]
        count = 0
        for n in range(samples):
            rows[count] = n
            nonzero = False
            for p in range(GROUP):
                value = x[n, first + p]
                values[count, p] = value
                nonzero |= value != 0
            count += nonzero
        acc = register_block(GROUP, COLUMNS, g.dtype)         # dW[group, block]
        for block in range(-(-outputs // COLUMNS)):
            j0 = max(0, min(block * COLUMNS, outputs - COLUMNS))
            for p in range(GROUP):
                for c in range(COLUMNS):
                    acc[p, c] = 0
            for k in range(count):
                n = rows[k]
                for p in range(GROUP):
                    value = values[k, p]
                    for c in range(COLUMNS):
                        acc[p, c] += value * dy[n, j0 + c]
            for p in range(GROUP):
                if p >= fresh:
                    for c in range(COLUMNS):
                        g[first + p, j0 + c] = acc[p, c]


def weight_grad_skipping_zeros_numpy(x, dy, g):
    g[...] = x.T @ dy


TWINS = [
    (nonzero_fraction, nonzero_fraction_numpy),
    (forward_skipping_zeros, forward_skipping_zeros_numpy),
    (weight_grad_skipping_zeros, weight_grad_skipping_zeros_numpy),
]
