"""Sparse kernels: the tile layout of a sparse Dense layer, and its optimizer step, which
touches only the kept weights.

Frankle & Carbin (2019) end on a limitation: a winning ticket is sparse, but it is
trained as a dense W times a mask m, so a ticket at Pm = 5% costs as much to train as
the dense network. Within an IMP round m does not change, so the positions of the
kept weights can be indexed once and every step can walk only them. These kernels
read and write W and its gradient *in place in the network's flat buffers*, at kept
positions only: W is never copied and ``net.params`` stays exact. The layers' forward and
backward passes are in ``kernels/sparse_stack.py`` (one layer is a stack of one); the
readable layer that uses them is ``minilottery/sparse.py``.

Layout. The batch is the vector dimension: activations are transposed into tiles of
``TILE`` samples, ``xt[tile, i, t] = x[tile * TILE + t, i]`` (zero past the last
sample), so that one kept weight W[i, j] multiplies a contiguous row xt[tile, i, :]
of 64 samples, which LLVM turns into a few wide vector instructions. Lenet's batch
of 60 is one tile; an evaluation batch of 1,000 is 16.

Index structures of a layer with kept set K = {(i, j) : m[i, j] = 1}, W of shape
(in, out) flattened in C order (position p = i * out + j):

    by column (CSC):  col_start (out+1,), col_rows (|K|,), col_pos (|K|,)
    by row (CSR):     row_start (in+1,),  row_cols (|K|,), row_pos (|K|,)

The kernels are ``prange`` loops: a plain ``range`` loop over xt and an accumulator
vectorised worse (measured: 1.5x slower). A network with sparse layers runs them on
all of Numba's threads where those spin briefly between kernels (``helpers_spin`` in
``kernels/__init__.py``), and on one thread where a sleeping thread would take longer
to wake than the kernel runs (nets.Network.cores). Every output of a loop is written
by one iteration, so the numbers do not depend on the thread count. Each kernel has a
NumPy twin ``<name>_numpy`` of the same signature and effect; ``TWINS`` lists the pairs.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel
from .registers import BLOCK, transpose_block
from .core import adam_element, adam_update, momentum_element, momentum_update

TILE = 64  # samples per tile: four AVX-512 (eight AVX2) registers of float32


def tile_count(samples):
    return -(-samples // TILE)


# ----------------------------------------------------------------------------- transposes

@jit
def transpose_into_tiles(x, xt):
    """xt[tile, i, t] = x[tile * lanes + t, i] for the samples that exist; x (N, F), xt (tiles, F, lanes),
    lanes a multiple of 8: TILE here, kernels/stretch.py's LANES there.

    Entries past sample N are left as they are: callers allocate xt zeroed once per
    batch size, so they stay 0. Full 8 x 8 blocks go by vector shuffles
    (``transpose_block``): a batch of 60 MNIST images 13.2 -> 9.0 us, 1,000 of them
    242 -> 141 us. One value at a time took 0.28-0.31 ns each, even with the block's
    constant trip counts unrolled (5x faster than one loop nest with min() bounds).
    """
    samples, features = x.shape
    lanes = xt.shape[2]
    full_i = features - features % BLOCK
    source, dest = np.ascontiguousarray(x).reshape(-1), xt.reshape(-1)
    rows, columns = np.empty(BLOCK, np.int64), np.empty(BLOCK, np.int64)
    no_bias = np.zeros(BLOCK, xt.dtype)
    for tile in range(xt.shape[0]):
        first = tile * lanes
        count = min(lanes, samples - first)
        full_t = count - count % BLOCK
        for i0 in range(0, full_i, BLOCK):
            for t0 in range(0, full_t, BLOCK):  # 8 samples' runs of 8 features -> 8 features' runs of 8 samples
                for k in range(BLOCK):
                    rows[k] = (first + t0 + k) * features + i0
                    columns[k] = (tile * features + i0 + k) * lanes + t0
                transpose_block(source, rows, dest, columns, no_bias, 0)
            for t in range(full_t, count):       # the last samples of a partial tile
                for a in range(BLOCK):
                    xt[tile, i0 + a, t] = x[first + t, i0 + a]
        for i in range(full_i, features):        # the last features when F is not a multiple of 8
            for t in range(count):
                xt[tile, i, t] = x[first + t, i]


def transpose_into_tiles_numpy(x, xt):
    lanes = xt.shape[2]
    for tile in range(xt.shape[0]):
        block = x[tile * lanes:(tile + 1) * lanes]    # (count, F)
        xt[tile, :, :len(block)] = block.T


# ----------------------------------------------------------------------------- optimizers

@jit_parallel
def adam_update_kept(w, g, m, v, mask, spans, kept, m_kept, v_kept, step_size, beta1, beta2, eps,
                     weight_decay, bias2_root):
    """``core.adam_update`` on part of the flat buffers: the dense spans [start, stop) under
    the mask, then the weights at the flat positions ``kept`` (all kept: no mask).

    spans (S, 2): the parameters of layers trained densely, and biases; kept (|K|,):
    the flat positions of the kept weights of sparse layers, whose moments are the
    compact m_kept, v_kept (|K|,) (the optimizer's copy: contiguous, so a step reads
    two scattered arrays, w and g, instead of four). Pruned positions of sparse
    layers are never read or written, so they stay exactly 0.
    """
    for s in range(spans.shape[0]):
        # core's kernel on each span's views: a prange nested in this loop over spans
        # would not vectorise (6x slower, 819 against 139 us for Lenet's 266K weights)
        start, stop = spans[s, 0], spans[s, 1]
        adam_update(w[start:stop], g[start:stop], m[start:stop], v[start:stop], mask[start:stop],
                    step_size, beta1, beta2, eps, weight_decay, bias2_root)
    # Gather, update, scatter: the update of contiguous arrays vectorises (a loop that
    # reads w[kept[q]] does not, and its scalar sqrt and division cost 1.35x the whole).
    weights, grads = np.empty(kept.size, w.dtype), np.empty(kept.size, w.dtype)   # (|K|,)
    for q in prange(kept.size):
        weights[q] = w[kept[q]]
        grads[q] = g[kept[q]]
    for q in prange(kept.size):
        weights[q], m_kept[q], v_kept[q] = adam_element(weights[q], grads[q], m_kept[q], v_kept[q], step_size,
                                                        beta1, beta2, eps, weight_decay, bias2_root)
    for q in prange(kept.size):
        w[kept[q]] = weights[q]


def adam_update_kept_numpy(w, g, m, v, mask, spans, kept, m_kept, v_kept, step_size, beta1, beta2, eps,
                           weight_decay, bias2_root):
    from .core import adam_update_numpy
    for start, stop in spans:
        part = slice(start, stop)
        adam_update_numpy(w[part], g[part], m[part], v[part], mask[part], step_size, beta1, beta2, eps,
                          weight_decay, bias2_root)
    weights = w[kept]
    adam_update_numpy(weights, g[kept], m_kept, v_kept, np.ones_like(weights), step_size, beta1, beta2, eps,
                      weight_decay, bias2_root)
    w[kept] = weights


@jit_parallel
def momentum_update_kept(w, g, buf, mask, spans, kept, buf_kept, lr, momentum, weight_decay, nesterov):
    """``core.momentum_update`` on the dense spans under the mask, then at the kept
    positions, whose momentum buffer is the compact buf_kept (|K|,)."""
    for s in range(spans.shape[0]):  # core's kernel on each span's views, as in adam_update_kept
        start, stop = spans[s, 0], spans[s, 1]
        momentum_update(w[start:stop], g[start:stop], buf[start:stop], mask[start:stop], lr, momentum, weight_decay,
                        nesterov)
    for q in prange(kept.size):
        i = kept[q]
        w[i], buf_kept[q] = momentum_element(w[i], g[i], buf_kept[q], lr, momentum, weight_decay, nesterov)


def momentum_update_kept_numpy(w, g, buf, mask, spans, kept, buf_kept, lr, momentum, weight_decay, nesterov):
    from .core import momentum_update_numpy
    for start, stop in spans:
        part = slice(start, stop)
        momentum_update_numpy(w[part], g[part], buf[part], mask[part], lr, momentum, weight_decay, nesterov)
    weights = w[kept]
    momentum_update_numpy(weights, g[kept], buf_kept, np.ones_like(weights), lr, momentum, weight_decay, nesterov)
    w[kept] = weights


TWINS = [
    (transpose_into_tiles, transpose_into_tiles_numpy),
    (adam_update_kept, adam_update_kept_numpy),
    (momentum_update_kept, momentum_update_kept_numpy),
]
