"""A stack of sparse Dense layers with ReLU between them, one kernel call per pass.

Lenet-300-100 (the paper's Figure 2) trained as a sparse ticket, the limitation the paper
ends on. At Pm 5% it trains ~13,000 weights. Layer by layer (kernels/sparse.py), a step made
six kernel calls and four ReLU passes, each a few microseconds of dispatch and a parallel
region around a loop of a few microseconds more: fc2 and fc3 took 22 and 14 us a step
for 1,500 and 60 kept weights (a random mask at 5%). Here a whole forward pass is one call
and a whole backward pass another, with one parallel loop per layer, and the activations
stay in the tile layout of kernels/sparse.py
from the input to the logits and back (batch in the vector dimension:
``tiles[l][tile, i, t]`` is input i of layer l for sample tile * TILE + t, 0 past the last
sample), so nothing is transposed between layers.

A stack of L layers is given as tuples with one entry per layer, in order: ``weights[l]``
and ``weight_grads[l]`` are W_l and dW_l flattened (views of the network's flat buffers),
and its kept set K_l is indexed as in kernels/sparse.py, by column for the forward
(``col_starts``, ``col_rows``, ``col_pos``) and by row for the backward (``row_starts``,
``row_cols``, ``row_pos``). The kernels are ``prange`` loops whose every output is written
by one iteration, so the numbers do not depend on the thread count. Each has a NumPy twin
that runs the layers one at a time through dense products with W zero outside K.

A single sparse Dense layer (sparse.SparseDense: a conv net's fc layers, or Lenet's when
not all of them are sparse) runs these kernels as a stack of one: y = x W + b, and its dW,
db and dx, exactly as above with L = 1.
"""
import numpy as np
from numba import prange

from . import jit_parallel
from .registers import register_block
from .sparse import TILE, transpose_into_tiles, transpose_into_tiles_numpy


@jit_parallel
def stack_forward(x, weights, biases, col_starts, col_rows, col_pos, tiles, logits):
    """logits = the stack applied to x, keeping each layer's input in ``tiles``.

        h_0 = x,   h_(l+1) = max(h_l W_l + b_l, 0),   logits = h_(L-1) W_(L-1) + b_(L-1)

    x (N, in); tiles[l] (tiles, in_l, TILE), h_l transposed: filled here, read by
    ``stack_backward``; logits (N, out) is written.
    """
    samples = x.shape[0]
    layers = len(weights)
    zero = x.dtype.type(0)
    transpose_into_tiles(x, tiles[0])
    for layer in range(layers):
        w, b = weights[layer], biases[layer]
        starts, rows, positions = col_starts[layer], col_rows[layer], col_pos[layer]
        inputs = tiles[layer]
        outputs = b.size
        last = layer == layers - 1
        for q in prange(inputs.shape[0] * outputs):
            tile = q // outputs
            j = q - tile * outputs
            acc = register_block(1, TILE, inputs.dtype)[0]   # output j for the tile's samples
            for t in range(TILE):
                acc[t] = zero
            for k in range(starts[j], starts[j + 1]):
                weight = w[positions[k]]
                i = rows[k]
                for t in range(TILE):
                    acc[t] += weight * inputs[tile, i, t]
            first = tile * TILE
            count = min(TILE, samples - first)
            if last:
                for t in range(count):
                    logits[first + t, j] = acc[t] + b[j]
            else:
                # the next layer's input, after ReLU (a NaN stays NaN, as in np.maximum, so that a
                # diverging run shows in its loss); 0 past the last sample, where ReLU(b) would
                # otherwise add samples that do not exist to the next layer's dW and db
                next_input = tiles[layer + 1][tile, j]
                for t in range(TILE):
                    value = acc[t] + b[j]
                    next_input[t] = (zero if value < 0 else value) if t < count else zero


def kept_only(w, positions, rows):
    """W (rows, out) with every entry outside ``positions`` (of W flattened) set to 0."""
    dense = np.zeros_like(w)
    dense[positions] = w[positions]
    return dense.reshape(rows, -1)


def stack_forward_numpy(x, weights, biases, col_starts, col_rows, col_pos, tiles, logits):
    h = x
    for layer in range(len(weights)):
        transpose_into_tiles_numpy(h, tiles[layer])
        y = h @ kept_only(weights[layer], col_pos[layer], h.shape[1]) + biases[layer]
        h = np.maximum(y, 0)
    logits[...] = y


@jit_parallel
def stack_backward(dlogits, weights, weight_grads, bias_grads, row_starts, row_cols, row_pos, tiles, grad_tiles,
                   dx):
    """The gradients of every layer of the stack, from dL/dlogits, at kept weights only.

    With dy_l the gradient at layer l's output before ReLU (grad_tiles[l], (tiles, out_l,
    TILE), transposed like tiles; dy_(L-1) = dlogits):

        dW_l[i, j] = sum_n h_l[n, i] dy_l[n, j]     for kept (i, j)
        db_l[j]    = sum_n dy_l[n, j]
        dy_(l-1)[n, i] = (sum over kept (i, j) of dy_l[n, j] W_l[i, j]) if h_l[n, i] > 0, else 0

    Row i of dy_(l-1) is made whole by one iteration, which sums it for db_(l-1) too.
    dx = dL/dx (N, in) is written when it has rows; else the first layer skips dx and
    every input that is 0 for a whole tile (a background pixel in all of its 64 samples).
    """
    samples = dlogits.shape[0]
    layers = len(weights)
    zero = dlogits.dtype.type(0)
    dy_last, db_last = grad_tiles[layers - 1], bias_grads[layers - 1]
    transpose_into_tiles(dlogits, dy_last)
    for j in range(db_last.size):
        total = zero
        for tile in range(dy_last.shape[0]):
            for t in range(TILE):
                total += dy_last[tile, j, t]
        db_last[j] = total
    want_dx = dx.shape[0] > 0
    for layer in range(layers - 1, -1, -1):
        w, g, starts, columns, positions = (weights[layer], weight_grads[layer], row_starts[layer], row_cols[layer],
                                            row_pos[layer])
        h, dy = tiles[layer], grad_tiles[layer]
        first_layer = layer == 0
        need_input_grad = want_dx or not first_layer             # dy_(l-1), or dx, is wanted
        # dy_(l-1) and db_(l-1), written here; the first layer has neither (its stand-ins, of the
        # same types for Numba, are never written)
        below = grad_tiles[layer - 1] if not first_layer else dy
        db_below = bias_grads[layer - 1] if not first_layer else bias_grads[layer]
        for i in prange(h.shape[1]):
            total = zero
            for tile in range(h.shape[0]):
                active = need_input_grad
                for t in range(TILE):
                    active |= h[tile, i, t] != 0
                if not active:                                # adds nothing to dW, and no dx is wanted
                    if tile == 0:
                        for k in range(starts[i], starts[i + 1]):
                            g[positions[k]] = zero
                    continue
                acc = register_block(1, TILE, h.dtype)[0]       # row i of dy_(l-1) (or dx) for the tile
                for t in range(TILE):
                    acc[t] = zero
                for k in range(starts[i], starts[i + 1]):
                    j = columns[k]
                    p = positions[k]
                    dot = zero
                    for t in range(TILE):
                        dot += h[tile, i, t] * dy[tile, j, t]
                    g[p] = dot if tile == 0 else g[p] + dot
                    if need_input_grad:
                        weight = w[p]
                        for t in range(TILE):
                            acc[t] += weight * dy[tile, j, t]
                if not first_layer:
                    for t in range(TILE):
                        value = acc[t] if h[tile, i, t] > 0 else zero   # ReLU's derivative (0 past the last sample)
                        below[tile, i, t] = value
                        total += value
                elif want_dx:
                    first = tile * TILE
                    for t in range(min(TILE, samples - first)):
                        dx[first + t, i] = acc[t]
            if not first_layer:
                db_below[i] = total


def stack_backward_numpy(dlogits, weights, weight_grads, bias_grads, row_starts, row_cols, row_pos, tiles, grad_tiles,
                         dx):
    dy = dlogits
    samples = dlogits.shape[0]
    for layer in range(len(weights) - 1, -1, -1):
        transpose_into_tiles_numpy(dy, grad_tiles[layer])
        inputs = tiles[layer].shape[1]
        h = tiles[layer].transpose(0, 2, 1).reshape(-1, inputs)[:samples]      # (N, in)
        positions = row_pos[layer]
        bias_grads[layer][...] = dy.sum(axis=0)
        weight_grads[layer][positions] = (h.T @ dy).reshape(-1)[positions]
        below = dy @ kept_only(weights[layer], positions, inputs).T
        if layer > 0:
            dy = below * (h > 0)
        elif dx.shape[0]:
            dx[...] = below


TWINS = [
    (stack_forward, stack_forward_numpy),
    (stack_backward, stack_backward_numpy),
]
