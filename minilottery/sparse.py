"""Training that gets cheaper as the ticket gets sparser.

Frankle & Carbin (2019) name this limitation at the end of the paper: winning tickets
are sparse, but they are "not optimized for modern libraries or hardware" — trained
as a dense W times a mask m, a ticket at Pm = 5% costs as much as the dense network.

Within an IMP round m is fixed. So once per mask (``Network.set_mask``) every Dense
layer below ``DENSITY_THRESHOLD`` gets a ``SparseDense``: the positions of its kept
weights K = {(i, j) : m[i, j] = 1}, indexed by column and by row. From then on a
training step touches only K:

    forward     y = x @ W + b           sparse x dense, W read at K only
    backward    dx = dy @ W^T           the same index, by row
                dW[i, j] = sum_n x[n, i] dy[n, j]   only for (i, j) in K (sampled product)
    optimizer   Adam / momentum walk only the flat positions of K (kernels/sparse.py)

Nothing is copied: the kernels read and write W, dW and the optimizer state where
they live, in the network's flat buffers. So ``net.params`` is always exact (pruned
entries 0, kept entries the trained values). In sparse mode ``net.grads`` of a
sparse layer holds dL/dW at kept positions and 0 at pruned ones (the dense path
leaves x^T dy there, which the masked optimizer then ignores).
"""
import numpy as np

from .kernels import single_threaded
from .kernels import sparse as kernels
from .layers import Dense

MODES = ("auto", "on", "off")

# A Dense layer is trained sparse under "auto" when its density (kept / all weights) is
# below this. Measured on Lenet, all layers at one density, CPU time with one BLAS
# thread (docs/performance-sparse.md): a training step breaks even at a density of
# 0.3, an evaluation batch of 1,000 at 0.22, and a round (100 steps per evaluation
# of 15,000 images) at 0.25. OpenBLAS on two idle cores speeds the dense path up by
# up to 1.5x (our kernels use one thread), which moves the break-even to ~0.15-0.2.
DENSITY_THRESHOLD = 0.2

# The optimizer walks a sparse layer's kept positions one by one only below this
# density; above it, the layer's slice is updated as one masked dense span. Walking
# kept positions scattered over W, dW, m and v costs ~4 ns each (a cache line per
# array and weight), the dense masked pass ~0.5 ns per weight, kept or not: the two
# meet at 0.5 / 4 = 0.125 (measured on Lenet's 266K weights with Adam).
OPTIMIZER_DENSITY_THRESHOLD = 0.12


class SparseDense:
    """Forward and backward of one Dense layer, y = x @ W + b, at the kept weights only."""

    def __init__(self, layer, mask):
        inputs, outputs = layer.params["weight"].shape
        self.layer, self.outputs = layer, outputs
        rows, cols = np.nonzero(mask)                       # kept (i, j), row by row
        self.positions = rows * outputs + cols              # W.flat positions, increasing
        self.row_start = np.searchsorted(rows, np.arange(inputs + 1))            # (in+1,)
        self.row_cols, self.row_pos = cols, self.positions                        # (|K|,)
        by_column = np.argsort(cols, kind="stable")
        self.col_start = np.searchsorted(cols[by_column], np.arange(outputs + 1))  # (out+1,)
        self.col_rows, self.col_pos = rows[by_column], self.positions[by_column]  # (|K|,)
        self.no_dx = np.zeros((0, inputs), layer.params["weight"].dtype)
        self.scratch = {}  # batch size -> (xt, dyt), zero past the last sample
        layer.grads["weight"][...] = 0                      # pruned gradients read 0, and stay so

    def tiles(self, samples):
        """Transposed tiles of x and dy for this batch size, allocated once."""
        if samples not in self.scratch:
            tiles, dtype = kernels.tile_count(samples), self.no_dx.dtype
            self.scratch[samples] = (np.zeros((tiles, self.no_dx.shape[1], kernels.TILE), dtype),
                                     np.zeros((tiles, self.outputs, kernels.TILE), dtype))
        return self.scratch[samples]

    def forward(self, x, train=False):
        xt, _ = self.tiles(x.shape[0])
        self.xt = xt                                        # (tiles, in, TILE): x, for backward
        y = np.empty((x.shape[0], self.outputs), x.dtype)   # (N, out)
        params = self.layer.params
        single_threaded(kernels.sparse_forward, x, params["weight"].reshape(-1), params["bias"],
                        self.col_start, self.col_rows, self.col_pos, xt, y)
        return y

    def backward(self, dy, need_dx=True):
        # dW at kept (i, j) only, db, and dx = dy W^T unless this is the network's first layer
        layer, samples = self.layer, dy.shape[0]
        _, dyt = self.tiles(samples)
        dx = np.empty((samples, self.no_dx.shape[1]), dy.dtype) if need_dx else self.no_dx
        single_threaded(kernels.sparse_backward, self.xt, dy, layer.params["weight"].reshape(-1),
                        layer.grads["weight"].reshape(-1), layer.grads["bias"],
                        self.row_start, self.row_cols, self.row_pos, dyt, dx)
        return dx if need_dx else None


class SparseUpdate:
    """What the optimizer walks when some layers are sparse: the dense spans of the flat
    buffers, masked as usual, and the flat positions of the sparse layers' kept weights."""

    def __init__(self, spans, kept):
        self.spans = np.array(spans, np.int64).reshape(-1, 2)   # (S, 2) [start, stop)
        self.kept = np.asarray(kept, np.int64)                   # (|K| over sparse layers,)


def use_sparse(mode, density):
    if mode not in MODES:
        raise ValueError(f"unknown sparse mode {mode!r}; choose auto, on or off")
    return mode == "on" or (mode == "auto" and density < DENSITY_THRESHOLD)


def compress(net, mode):
    """Give each Dense layer of ``net`` a SparseDense for its current mask, or none.

    Returns the SparseUpdate for the optimizer, or None when it should make its
    usual dense masked pass (no layer is sparse enough for walking kept positions).
    """
    dense_spans, kept, cursor = [], [], 0
    for leaf_name, leaf in net.leaves:
        if not isinstance(leaf, Dense):
            continue
        name = f"{leaf_name}.weight"
        mask = net.masks[name]
        density = float(mask.mean())
        leaf.sparse = SparseDense(leaf, mask) if use_sparse(mode, density) else None
        if leaf.sparse is not None and density < OPTIMIZER_DENSITY_THRESHOLD:
            span = net.slices[name]
            dense_spans.append((cursor, span.start))
            kept.append(span.start + leaf.sparse.positions)
            cursor = span.stop
    if not kept:
        return None  # the optimizer's dense masked pass over everything
    dense_spans.append((cursor, net.flat_params.size))
    return SparseUpdate([s for s in dense_spans if s[1] > s[0]], np.concatenate(kept))
