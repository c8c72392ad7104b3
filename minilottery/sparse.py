"""Training that gets cheaper as the ticket gets sparser.

Frankle & Carbin (2019) name this limitation at the end of the paper: winning tickets
are sparse, but they are "not optimized for modern libraries or hardware" — trained
as a dense W times a mask m, a ticket at Pm = 5% costs as much as the dense network.

Within an IMP round m is fixed. So once per mask (``Network.set_mask``) every Dense
layer below the training threshold (under ``sparse="auto"``; the threshold is measured on
the machine by calibration.py; in Lenet, every layer once its first is below the stack's own
threshold) or every
layer (under "on") gets a ``SparseDense``: the
positions of its kept weights K = {(i, j) : m[i, j] = 1}, indexed by column and by row.
From then on a training step touches only K:

    forward     y = x @ W + b           sparse x dense, W read at K only
    backward    dx = dy @ W^T           the same index, by row
                dW[i, j] = sum_n x[n, i] dy[n, j]   only for (i, j) in K (sampled product)
    optimizer   Adam / momentum walk only the flat positions of K (``SparseUpdate``)

A network made of Dense layers with ReLU between them (Lenet) whose layers are all sparse
runs each pass as one kernel call instead (``SparseStack``): the same sums up to float
rounding, without a call per layer and the ReLU layers' own passes; and a run trains it a
stretch of steps at a time (stretch.py).

W and dW are not copied: the kernels (kernels/sparse_stack.py) read and write them where
they live, in the network's flat buffers, so ``net.params`` is always exact (pruned
entries 0, kept entries the trained values) and anyone may write to it between
steps. In sparse mode ``net.grads`` of a sparse layer holds dL/dW at kept positions
and 0 at pruned ones (the dense path leaves x^T dy there, which the masked optimizer
then ignores). Only the optimizer keeps a compact copy: its moments at K
(``Optimizer.kept`` in optim.py), written back into its flat state by ``state()``.
"""
import contextlib

import numpy as np

from . import calibration
from .kernels import aligned_zeros
from .kernels import sparse as kernels
from .kernels import sparse_stack
from .layers import Dense, Flatten, ReLU

MODES = ("auto", "on", "off")

# A Dense layer is trained sparse under "auto" when its density (kept / all weights) is
# below the training threshold, or when it belongs to a stack whose first layer is below
# the stack threshold (``compress``); evaluation batches (train=False, more than one tile) use
# the sparse kernel only below the evaluation threshold and otherwise BLAS on the masked
# W (exactly 0 at pruned entries: the same numbers). All three are measured on the machine
# by calibration.py, once, and cached: where BLAS and these kernels break even depends
# on the BLAS, its kernels and the cores it runs on. (On the Zen 5 machine of
# docs/performance-sparse.md they were 0.13 and 0.065, on two idle cores.)

# The optimizer walks a sparse layer's kept positions only below this density; above
# it, the layer's slice is updated as one masked dense span. Walking kept positions
# costs ~3 ns each (gathering W and dW from scattered cache lines), the dense masked
# pass ~0.5 ns per weight, kept or not: they meet at ~0.16 (measured on Lenet's 266K
# weights with Adam); 0.12 leaves a margin.
OPTIMIZER_DENSITY_THRESHOLD = 0.12
SHORT_SPAN = 4096  # values: a span of the flat buffers shorter than this is walked position by position


class SparseDense:
    """Forward and backward of one Dense layer, y = x @ W + b, at the kept weights only."""

    def __init__(self, layer, mask, blas_evaluation=False, cores=contextlib.nullcontext):
        inputs, outputs = layer.params["weight"].shape
        self.layer, self.inputs, self.outputs = layer, inputs, outputs
        self.dtype = layer.params["weight"].dtype
        rows, cols = np.nonzero(mask)                       # kept (i, j), row by row
        self.positions = rows * outputs + cols              # W.flat positions, increasing
        self.row_start = np.searchsorted(rows, np.arange(inputs + 1))            # (in+1,)
        self.row_cols, self.row_pos = cols, self.positions                        # (|K|,)
        by_column = np.argsort(cols, kind="stable")
        self.col_start = np.searchsorted(cols[by_column], np.arange(outputs + 1))  # (out+1,)
        self.col_rows, self.col_pos = rows[by_column], self.positions[by_column]  # (|K|,)
        self.blas_evaluation = blas_evaluation  # evaluation batches (train=False) go through BLAS
        self.cores = cores  # the threading each kernel runs under, if not the pass's (see compress)
        self.weight, self.weight_grad = layer.params["weight"].reshape(-1), layer.grads["weight"].reshape(-1)
        self.no_dx = np.zeros((0, inputs), self.dtype)     # tells the kernel to skip dx
        self.scratch = {}  # batch size -> (xt, dyt), zero past the last sample
        self.x = None      # the input, when forward used BLAS instead of filling xt
        layer.grads["weight"][...] = 0                      # pruned gradients read 0, and stay so

    def tiles(self, samples):
        """Transposed tiles of x and dy for this batch size, allocated once."""
        if samples not in self.scratch:
            tiles = kernels.tile_count(samples)
            self.scratch[samples] = (aligned_zeros((tiles, self.inputs, kernels.TILE), self.dtype),
                                     aligned_zeros((tiles, self.outputs, kernels.TILE), self.dtype))
        return self.scratch[samples]

    def runs_kernels(self, samples, train):
        """Whether a pass of ``samples`` uses these kernels: a training pass always; an evaluation
        batch of more than one tile only below the evaluation threshold (``blas_evaluation``)."""
        return train or not self.blas_evaluation or samples <= kernels.TILE

    def forward(self, x, train=False):
        bias = self.layer.params["bias"]
        if not self.runs_kernels(x.shape[0], train):
            self.x = x                                      # the dense layer's product: pruned entries of W are 0
            return self.layer.dense_forward(x)
        self.x = None
        xt, _ = self.tiles(x.shape[0])                      # (tiles, in, TILE): x, kept for backward
        y = np.empty((x.shape[0], self.outputs), x.dtype)   # (N, out)
        with self.cores():                                  # this layer as a stack of one
            sparse_stack.stack_forward(x, (self.weight,), (bias,), (self.col_start,), (self.col_rows,),
                                       (self.col_pos,), (xt,), y)
        return y

    def backward(self, dy, need_dx=True):
        # dW at kept (i, j) only, db, and dx = dy W^T unless this is the network's first layer
        samples = dy.shape[0]
        xt, dyt = self.tiles(samples)
        if self.x is not None:                              # forward skipped the transpose
            kernels.transpose_into_tiles(self.x, xt)
        dx = np.empty((samples, self.inputs), dy.dtype) if need_dx else self.no_dx   # (N, in)
        with self.cores():
            sparse_stack.stack_backward(dy, (self.weight,), (self.weight_grad,), (self.layer.grads["bias"],),
                                        (self.row_start,), (self.row_cols,), (self.row_pos,), (xt,), (dyt,), dx)
        return dx if need_dx else None


class SparseStack:
    """A network that is Dense layers with ReLU between them (Lenet), every one a SparseDense,
    run as one kernel call a pass (kernels/sparse_stack.py) instead of one or two a layer.

    Its activations stay in the layers' own tiles (``SparseDense.tiles``) from the input to
    the logits and back, and it fills the same gradients as the layers would. It does not
    fill the layers' own caches (``ReLU.y``, ``Flatten.shape``): a backward pass follows the
    forward pass that went the same way (``Network.backward``).
    """

    def __init__(self, layers):
        self.layers = layers                                  # the SparseDense of each Dense, in order
        self.weights = tuple(layer.weight for layer in layers)
        self.biases = tuple(layer.layer.params["bias"] for layer in layers)
        self.weight_grads = tuple(layer.weight_grad for layer in layers)
        self.bias_grads = tuple(layer.layer.grads["bias"] for layer in layers)
        self.by_column = tuple(tuple(getattr(layer, name) for layer in layers)
                               for name in ("col_start", "col_rows", "col_pos"))
        self.by_row = tuple(tuple(getattr(layer, name) for layer in layers)
                            for name in ("row_start", "row_cols", "row_pos"))
        self.scratch = {}  # batch size -> (tiles, grad_tiles): each layer's (xt, dyt)
        self.input_shape = None  # of the last forward's x, for the dL/dx the backward returns

    def runs_kernels(self, samples, train):
        """Whether a pass of ``samples`` runs here: when every layer would run its kernels."""
        return all(layer.runs_kernels(samples, train) for layer in self.layers)

    def tiles(self, samples):
        if samples not in self.scratch:
            xt, dyt = zip(*(layer.tiles(samples) for layer in self.layers))
            self.scratch[samples] = (tuple(xt), tuple(dyt))
        return self.scratch[samples]

    def forward(self, x):
        """Logits (N, classes) of x (N, ...)."""
        samples = x.shape[0]
        tiles, _ = self.tiles(samples)
        logits = np.empty((samples, self.layers[-1].outputs), x.dtype)
        sparse_stack.stack_forward(x.reshape(samples, -1), self.weights, self.biases, *self.by_column, tiles, logits)
        self.input_shape = x.shape
        return logits

    def backward(self, dlogits, input_grad=False):
        """Fill every layer's gradients; return dL/dx (the shape of x) if ``input_grad``, else None."""
        samples = dlogits.shape[0]
        tiles, grad_tiles = self.tiles(samples)
        first = self.layers[0]
        dx = np.empty((samples, first.inputs), dlogits.dtype) if input_grad else first.no_dx
        sparse_stack.stack_backward(dlogits, self.weights, self.weight_grads, self.bias_grads, *self.by_row, tiles,
                                    grad_tiles, dx)
        return dx.reshape(self.input_shape) if input_grad else None


def stackable(net):
    """Whether ``net`` is Dense layers with ReLU between them, after an optional Flatten:
    what ``SparseStack`` runs."""
    kinds = [type(layer) for _, layer in net.layers]
    if kinds and kinds[0] is Flatten:
        kinds = kinds[1:]
    return len(kinds) % 2 == 1 and all(kind is (Dense if index % 2 == 0 else ReLU) for index, kind in enumerate(kinds))


def stack(net):
    """A SparseStack for ``net`` when it is stackable and every Dense layer is sparse, else None."""
    fully_connected = [leaf for _, leaf in net.leaves if isinstance(leaf, Dense)]
    if not (stackable(net) and fully_connected and all(leaf.sparse is not None for leaf in fully_connected)):
        return None
    return SparseStack([leaf.sparse for leaf in fully_connected])


class SparseUpdate:
    """What the optimizer walks when some layers are sparse: the dense spans of the flat
    buffers, masked as usual, and the flat positions of the sparse layers' kept weights."""

    def __init__(self, spans, kept):
        self.spans = np.array(spans, np.int64).reshape(-1, 2)   # (S, 2) [start, stop)
        self.kept = np.asarray(kept, np.int64)                   # (|K| over sparse layers,)


def use_sparse(mode, density, train_threshold=0.0):
    if mode not in MODES:
        raise ValueError(f"unknown sparse mode {mode!r}; choose auto, on or off")
    return mode == "on" or (mode == "auto" and density < train_threshold)


def thresholds(net, mode):
    """(train, evaluation, stack) thresholds for ``mode``: the network's own (an imp run fixes
    them in its config.json), else measured, and only when "auto" meets a sparse enough mask."""
    if mode != "auto":
        return 0.0, 0.0, 0.0
    if net.sparse_thresholds is not None:
        return calibration.as_three(net.sparse_thresholds)
    densities = [float(net.masks[f"{name}.weight"].mean()) for name, leaf in net.leaves if isinstance(leaf, Dense)]
    if not densities or min(densities) >= calibration.ASK_BELOW:
        return 0.0, 0.0, 0.0  # nothing here is sparse enough to be worth asking
    return calibration.thresholds()[:3]


def compress(net, mode):
    """Give each Dense layer of ``net`` a SparseDense for its current mask, or none.

    Returns the SparseUpdate for the optimizer, or None when it should make its
    usual dense masked pass (no layer is sparse enough for walking kept positions).
    """
    dense_spans, kept, cursor = [], [], 0
    train_threshold, evaluation_threshold, stack_threshold = thresholds(net, mode)
    # Lenet's passes already run under net.sparse_cores(); a Winograd network's run under its
    # pool's, so there each sparse kernel enters net.sparse_cores() itself
    cores = net.sparse_cores if net.pool_threads else contextlib.nullcontext
    fully_connected = [(leaf_name, leaf) for leaf_name, leaf in net.leaves if isinstance(leaf, Dense)]
    # A stack whose first layer is below the stack threshold trains all its layers sparse, as a
    # SparseStack, whose training runs in stretches (stretch.py), cheaper than its layers one at a
    # time: the later ones are small (Lenet's fc2 and fc3 hold 12% of its weights), and under the
    # paper's rates the output layer, pruned at half the rate, stays denser than the first
    whole_stack = (stackable(net) and bool(fully_connected)
                   and use_sparse(mode, float(net.masks[f"{fully_connected[0][0]}.weight"].mean()), stack_threshold))
    for leaf_name, leaf in fully_connected:
        name = f"{leaf_name}.weight"
        mask = net.masks[name]
        density = float(mask.mean())
        blas_evaluation = mode == "auto" and density >= evaluation_threshold
        leaf.sparse = (SparseDense(leaf, mask, blas_evaluation, cores)
                       if whole_stack or use_sparse(mode, density, train_threshold) else None)
        if leaf.sparse is not None and density < OPTIMIZER_DENSITY_THRESHOLD:
            span = net.slices[name]
            dense_spans.append((cursor, span.start))
            kept.append(span.start + leaf.sparse.positions)
            cursor = span.stop
    if not kept:
        return None  # the optimizer's dense masked pass over everything
    dense_spans.append((cursor, net.flat_params.size))
    # a short span (the biases between sparse layers; a small layer above the optimizer's
    # threshold, such as Lenet's fc3 under the paper's rates) is walked as kept positions: as a
    # pass of its own it would cost a parallel region, a few microseconds, where ~3 ns a position
    # is less
    short = [(start, stop) for start, stop in dense_spans if stop - start < SHORT_SPAN]
    kept += [start + np.flatnonzero(net.flat_mask[start:stop]) for start, stop in short]
    return SparseUpdate([s for s in dense_spans if s[1] - s[0] >= SHORT_SPAN], np.sort(np.concatenate(kept)))
