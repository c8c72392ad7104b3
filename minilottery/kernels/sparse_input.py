"""Products that skip the zeros of their input: Lenet's layers on MNIST.

Four pixels in five of an MNIST digit are exactly 0 (the background; pixels are
x / 255 with no other normalisation, datasets.py), so of the first layer's products

    forward     y = x @ W + b       (N, 784) @ (784, 300)
    backward    dW = x^T dy         (784, N) @ (N, 300)

four fifths of the multiply-adds multiply by zero. BLAS does them all. Both are
``a @ b + bias`` with the zeros in a, and one kernel does them, with only the
multiply-adds a register block needs (the layer is layers.Dense; the data's density
decides per batch whether it calls it, ``Dense.skips_zeros``). Where two of Numba's
threads share the pass, fc2 runs its three products by the same kernel (nets.py), on
the zeros ReLU leaves; its dx = dy W^T reads W^T, which one more kernel lays out in
rows first (``transpose``):

    for a group of 4 rows of a, the columns of a where any of them is nonzero:
    out[group, block] += a[group, k] b[k, block]

    forward     a = x:   4 samples, the pixels nonzero in any of them (39% on MNIST)
    dW          a = x^T: 4 neighbouring pixels, the samples nonzero at any of them (28%)
    dx          a = dy:  4 samples, b = W^T

Each row of b (a W row, or a dy row) that is read serves GROUP accumulators of COLUMNS
columns, so the loop runs on the core's multiply-adds, not on loads from L2: one sample
at a time, every W row read per nonzero pixel served one accumulator and ran 2.3x slower.
The block of GROUP x COLUMNS accumulators must stay in the vector registers, so its size
follows the CPU (``AVX512``):

    AVX-512 (Zen 4): 4 x 64, 16 of its 32 registers
    AVX2 (Zen 2):    2 x 48, 12 of its 16 registers

On a Zen 2, 4 x 64 (32 registers' worth) spilled to memory: Lenet's first layer forward on
two cores took 270-710 us, BLAS's 270-290, 2 x 48 133-140 (dW 178, 211 and 104-106).
The inner loop takes two rows a round, so that LLVM vectorises it rather than unrolling it
whole first (Numba leaves the SLP vectoriser off): a loop over 32 columns, one row at a
time, ran scalar, 3x slower than BLAS.

Output columns go in blocks of COLUMNS; the last block is shifted left to end at the last
column (300 = 4 x 64 + 44: the last block is columns 236-299), so no block needs a
remainder loop; the shifted last group of rows writes only its new rows. Every output
is computed by one loop iteration in a fixed order, so the numbers do not depend on the
thread count. Each kernel has a NumPy twin ``<name>_numpy``.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel
from .registers import AVX512, register_block

# samples (forward) or pixels (dW) that share each row read, and output columns per block
GROUP, COLUMNS = (4, 64) if AVX512 else (2, 48)  # GROUP even: the inner loop takes two rows a round


def fits(samples, inputs, outputs):
    """Whether the kernel's blocks fit the layer: at least one whole group of samples and of
    pixels, and one column block."""
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
def matmul_skipping_zeros(a, b, bias, out):
    """out = a @ b + bias, skipping the columns of a that are 0 in a whole group of its rows.

    a (M, K) (x, or x^T: a transposed view is read as it lies), b (K, out), bias (out,),
    out (M, out) written; M >= GROUP, out >= COLUMNS.
    """
    rows, inner = a.shape
    outputs = b.shape[1]
    for group in prange(-(-rows // GROUP)):
        first = max(0, min(group * GROUP, rows - GROUP))  # the last group shifted back to fit
        fresh = group * GROUP - first                      # its rows an earlier group wrote
        nonzero_at = np.empty(inner, np.int64)             # where any row of the group is nonzero
        values = np.empty((inner, GROUP), a.dtype)         # a[group's rows, those columns]
        count = 0
        for k in range(inner):
            nonzero_at[count] = k
            nonzero = False
            for r in range(GROUP):
                value = a[first + r, k]
                values[count, r] = value
                nonzero |= value != 0
            count += nonzero
        acc = register_block(GROUP, COLUMNS, out.dtype)    # out[group, block]
        for block in range(-(-outputs // COLUMNS)):
            j0 = max(0, min(block * COLUMNS, outputs - COLUMNS))  # max(0, .): LLVM then knows j0 >= 0
            for r in range(GROUP):
                for c in range(COLUMNS):
                    acc[r, c] = 0
            for q in range(count):
                k = nonzero_at[q]
                for r in range(0, GROUP, 2):  # two rows a round (see the top)
                    v0, v1 = values[q, r], values[q, r + 1]
                    for c in range(COLUMNS):
                        w = b[k, j0 + c]
                        acc[r, c] += v0 * w
                        acc[r + 1, c] += v1 * w
            for r in range(GROUP):
                if r >= fresh:
                    for c in range(COLUMNS):
                        out[first + r, j0 + c] = acc[r, c] + bias[j0 + c]


def matmul_skipping_zeros_numpy(a, b, bias, out):
    out[...] = a @ b + bias


def forward_skipping_zeros(x, w, b, y):
    """y = x @ W + b: x (N, in) with N >= GROUP, W (in, out) with out >= COLUMNS, y (N, out) written."""
    matmul_skipping_zeros(x, w, b, y)


def weight_grad_skipping_zeros(x, dy, g):
    """g = dW = x^T dy: x (N, in) with in >= GROUP, dy (N, out) with out >= COLUMNS, g (in, out) written."""
    matmul_skipping_zeros(x.T, dy, np.zeros(dy.shape[1], dy.dtype), g)


def input_grad_skipping_zeros(dy, w, dx):
    """dx = dy W^T: dy (N, out) with N >= GROUP, W (in, out) with in >= COLUMNS, dx (N, in) written.
    BLAS on one thread: 51 us for fc2's (60, 100) x (100, 300); this, on two: 32 us."""
    w_t = np.empty(w.shape[::-1], w.dtype)
    transpose(w, w_t)
    matmul_skipping_zeros(dy, w_t, np.zeros(w.shape[0], w.dtype), dx)


@jit_parallel
def transpose(a, out):
    """out = a^T, written in rows first (a C-order copy of the transposed view), a's rows
    shared among the threads: 7.5 us for fc2's W on two threads, NumPy's copy 10.7 us on one."""
    rows, columns = a.shape
    for i in prange(rows):
        for j in range(columns):
            out[j, i] = a[i, j]


def transpose_numpy(a, out):
    out[...] = a.T


TWINS = [
    (nonzero_fraction, nonzero_fraction_numpy),
    (matmul_skipping_zeros, matmul_skipping_zeros_numpy),
    (transpose, transpose_numpy),
]
