"""The ``Network`` that holds one of the paper's networks (architectures.py), and ``build``.

A ``Network`` is a list of named layers run in order. It owns three flat buffers,
one each for the parameters θ, their gradients and the mask m, and rebinds every
layer's arrays to views of them. So ``net.params["fc1.weight"]`` is an ordinary
float32 array of shape (784, 300), while the optimizer updates all of θ in one
fused pass and skips every position where m = 0.

Public contract: ``build(name, seed=...)`` returns a network with
``forward(x, train=...)`` giving logits and ``backward(dlogits)`` filling ``grads``;
``params`` and ``grads`` share keys like ``"fc1.weight"``; ``masks`` holds a 0/1
array for every prunable weight. Dense weights are (in_features, out_features).
With ``sparse`` ("auto", the default, "on" or "off"; see sparse.py) Dense layers of a
sparse enough mask train at their kept weights only (Lenet's all of them, in one kernel call
a pass, once its first layer is sparse enough): ``params`` stay exact, and ``grads`` of such
a layer hold dL/dW at kept positions and 0 at pruned ones.
"""
import contextlib

import numpy as np

from . import hparams, threads
from .architectures import BUILDERS, CIFAR_SHAPE, MNIST_SHAPE
from .kernels import blas, helpers_spin, one_numba_thread
from .kernels.registers import AVX512
from .layers import Dense, Dropout


def named_leaves(prefix, layer):
    """(qualified name, layer) for every leaf layer; a block lists its parts in ``children``."""
    children = getattr(layer, "children", None)
    if not children:
        return [(prefix, layer)]
    return [leaf for name, child in children for leaf in named_leaves(f"{prefix}.{name}", child)]


class Network:
    """Named layers in order, with θ, its gradient and the mask m in three flat buffers."""

    def __init__(self, name, layers, seed=0, dtype=np.float32, sparse="auto", sparse_thresholds=None):
        self.name, self.layers, self.dtype = name, layers, np.dtype(dtype)
        self.sparse_thresholds = sparse_thresholds  # (train, evaluation[, stack]) for "auto"; None: calibration.py's
        self.leaves = [leaf for layer_name, layer in layers for leaf in named_leaves(layer_name, layer)]
        # Dropout draws from one generator per network so that a checkpoint can save it.
        self.dropout_rng = np.random.default_rng([seed, 1])
        for _, leaf in self.leaves:
            if isinstance(leaf, Dropout):
                leaf.rng = self.dropout_rng
        self._pack()
        self.initialize(seed)
        self.set_sparse(sparse)

    def _pack(self):
        """Move every parameter into views of the flat buffers θ, dθ and m."""
        entries = [(f"{leaf_name}.{key}", leaf, key)
                   for leaf_name, leaf in self.leaves for key in leaf.params]
        total = sum(leaf.params[key].size for _, leaf, key in entries)
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self.flat_mask = np.ones(total, self.dtype)  # biases keep m = 1 forever
        self.params, self.grads, self.masks, self.slices = {}, {}, {}, {}
        self.kinds = {}  # prunable weight -> "conv", "fc", "output" or "shortcut"
        offset = 0
        for name, leaf, key in entries:
            shape = leaf.params[key].shape
            span = slice(offset, offset + int(np.prod(shape)))
            offset = span.stop
            self.slices[name] = span
            leaf.params[key] = self.params[name] = self.flat_params[span].reshape(shape)
            leaf.grads[key] = self.grads[name] = self.flat_grads[span].reshape(shape)
            if key in leaf.prunable:
                self.masks[name] = self.flat_mask[span].reshape(shape)
                self.kinds[name] = getattr(leaf, "kind", "fc")
        self.kinds = hparams.label_output(self.kinds)
        self.buffers = {f"{leaf_name}.{key}": value for leaf_name, leaf in self.leaves
                        for key, value in leaf.buffers.items()}
        with_params = [i for i, (_, layer) in enumerate(self.layers) if self._has_params(layer)]
        self.first_trainable = with_params[0] if with_params else len(self.layers)
        # Lenet's fc1 sees the images themselves, four fifths zeros on MNIST: it may skip them
        first = self.layers[self.first_trainable][1] if with_params else None
        self.input_layer = first if isinstance(first, Dense) else None
        self.dense = [leaf for _, leaf in self.leaves if isinstance(leaf, Dense)]
        self.hidden_dense = [leaf for leaf in self.dense if leaf is not self.input_layer]
        self.blas_side_by_side = blas.AVAILABLE and self.dtype in blas.GEMM
        self.pool_threads = any(getattr(leaf, "winograd", False) for _, leaf in self.leaves)

    @staticmethod
    def _has_params(layer):
        return any(leaf.params for _, leaf in named_leaves("", layer))

    def initialize(self, seed):
        """θ ~ D_θ with this seed (Gaussian Glorot weights, zero biases), then θ ⊙ m."""
        rng = np.random.default_rng(seed)
        for _, leaf in self.leaves:
            leaf.initialize(rng)
        self.flat_params *= self.flat_mask

    def snapshot(self):
        """θ as a dict of copies by parameter name: the form θ₀, θ_k and θ_j take in files."""
        return {name: value.copy() for name, value in self.params.items()}

    def set_params(self, weights):
        """θ from a dict by parameter name (a snapshot, or weights read from a run folder)."""
        for name, value in self.params.items():
            value[...] = weights[name]

    def set_mask(self, mask):
        """Install a mask (dict of 0/1 arrays by weight name) and zero the pruned weights."""
        for name in self.masks:
            self.masks[name][...] = mask[name]
        self.flat_params *= self.flat_mask
        self.set_sparse(self.sparse)

    def set_sparse(self, mode):
        """Train Dense layers at their kept weights only: "on", "off", or "auto" (below
        the threshold calibration.py measures). Rebuilds the index of kept weights for the current
        mask; ``sparse_update`` tells the optimizer which positions to walk (None: all)."""
        from . import sparse
        self.sparse = mode
        self.sparse_update = sparse.compress(self, mode)
        self.sparse_leaves = [leaf for _, leaf in self.leaves if getattr(leaf, "sparse", None) is not None]
        self.sparse_stack = sparse.stack(self)  # the whole pass as one kernel call, where it can be
        self.sparse_pass = bool(self.sparse_leaves)  # until a pass decides (``forward``)
        self.stack_pass = False
        self.forward_done = False  # the layers' caches belong to the index just replaced

    @property
    def skipping(self):
        """Whether this pass's first layer skips the zeros of the input (``forward`` decides)."""
        return self.input_layer is not None and self.input_layer.skipping

    @property
    def numba_passes(self):
        """Whether this network's passes, and so its optimizer step, run on Numba's threads
        (``sparse_cores``): a Lenet whose sparse kernels run in this pass (``sparse_pass``), or
        whose first layer skips the zeros of this pass's input. A network with Winograd
        convolutions runs on its pool instead."""
        return not self.pool_threads and (self.sparse_pass or self.skipping)

    def cores(self):
        """The threading a pass runs under: a network with Winograd convolutions spreads
        its work over minilottery's own pool, Lenet over OpenBLAS's threads (threads.py),
        or over Numba's where its passes are Numba kernels (``numba_passes``), or, where those
        sleep between kernels (``helpers_spin``), on one thread, with Numba's count set once
        for the pass."""
        if self.pool_threads:
            return threads.pool_owns_cores()
        return self.sparse_cores() if self.numba_passes else contextlib.nullcontext()

    def sparse_cores(self):
        """Where the sparse kernels (sparse.py) and their optimizer step run: on all of Numba's
        threads when those answer in microseconds, with OpenBLAS's threads asleep so that the
        two never compete (threads.py); else on one thread. A conv net's sparse fc layers too,
        between passes of its pool: Conv-2 at density 0.1 trained 0.81-0.86x as fast as dense
        with them on one thread, 1.01-1.03x on two."""
        if helpers_spin():
            return threads.single_threaded_blas()
        return one_numba_thread()

    # Whether, in a pass on Numba's threads (``numba_passes``), the later Dense layers' products
    # skip ReLU's zeros too, by the first layer's kernel: where its register blocks are AVX-512's
    # (kernels/sparse_input.py); else they are BLAS's, two calls at a time (kernels/blas.py). With
    # AVX2's smaller blocks, a Lenet step on a Zen 2 took 2% longer with fc2 by the kernel on two
    # cores and 6% longer on one. Never by the thread count: that changes the numbers by float
    # rounding. It did, and an ``imp`` on Dask (whose task threads have Numba's count of their
    # own) trained to other weights than the same run in one process.
    hidden_layers_skip = AVX512

    def forward(self, x, train=False):
        # decided once per pass, so that backward runs under the same cores: an evaluation batch
        # above the evaluation threshold is the dense product, on the dense network's cores
        samples = x.shape[0]
        self.sparse_pass = any(leaf.sparse.runs_kernels(samples, train) for leaf in self.sparse_leaves)
        self.stack_pass = self.sparse_stack is not None and self.sparse_stack.runs_kernels(samples, train)
        self.forward_done = True
        if self.stack_pass:
            self.input_layer.skipping = False  # so that ``skipping`` and ``numba_passes`` describe this pass
            with self.cores():
                return self.sparse_stack.forward(x)
        if self.input_layer is not None:
            self.input_layer.skips_zeros(x, train)
        # OpenBLAS is held to one thread on Numba's: the later Dense layers' products may run on
        # Numba's threads too, by the same kernel (on ReLU's zeros), and the products left to
        # BLAS two at a time, one call of OpenBLAS on each thread (kernels/blas.py)
        shared = self.numba_passes and self.hidden_layers_skip
        for layer in self.hidden_dense:
            layer.skipping = shared and layer.can_skip(samples, train)
        for layer in self.dense:
            layer.side_by_side = self.numba_passes and not layer.skipping and self.blas_side_by_side
        with self.cores():
            for _, layer in self.layers:
                x = layer.forward(x, train)
        return x  # logits (N, classes)

    def backward(self, dlogits, input_grad=False):
        """Fill ``grads`` from dL/dlogits; return dL/dx if ``input_grad`` (else None).

        The product for dL/dx of the first trainable layer is skipped unless asked
        for: it is the largest product of Lenet's backward pass and nothing uses it.
        """
        if not self.forward_done:
            raise RuntimeError("backward needs a forward pass after the mask or the sparse mode changed "
                               "(set_mask, set_sparse, load_state): run forward again first")
        if self.stack_pass:
            with self.cores():
                return self.sparse_stack.backward(dlogits, input_grad)
        dy = dlogits
        with self.cores():
            for index in range(len(self.layers) - 1, -1, -1):
                if index < self.first_trainable and not input_grad:
                    return None
                dy = self.layers[index][1].backward(dy, need_dx=input_grad or index > self.first_trainable)
        return dy

    def state(self):
        """Everything that defines the network's current function, as plain arrays."""
        state = {"flat_params": self.flat_params.copy(), "flat_mask": self.flat_mask.copy()}
        state.update({f"buffer:{name}": value.copy() for name, value in self.buffers.items()})
        return state

    def load_state(self, state):
        self.flat_params[...] = state["flat_params"]
        self.flat_mask[...] = state["flat_mask"]
        for name, value in self.buffers.items():
            value[...] = state[f"buffer:{name}"]
        self.set_sparse(self.sparse)

    def count(self, kind=None):
        """Number of prunable weights, optionally of one kind ("conv", "fc", "output")."""
        return sum(self.masks[name].size for name in self.masks if kind in (None, self.kinds[name]))


def build(name, seed=0, input_shape=None, dropout=0.0, dtype=np.float32, sparse="auto", sparse_thresholds=None):
    """Network ``name`` with θ₀ drawn from ``seed``; input_shape is (C, H, W) of one image;
    ``sparse`` ("auto", "on", "off"): see ``Network.set_sparse``; ``sparse_thresholds``
    (train, evaluation[, stack]) fixes the densities "auto" switches at (default: measured, calibration.py)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(BUILDERS)}")
    input_shape = tuple(input_shape) if input_shape is not None else (MNIST_SHAPE if name == "lenet" else CIFAR_SHAPE)
    layers = BUILDERS[name](input_shape=input_shape, dropout=dropout, dtype=dtype)
    net = Network(name, layers, seed=seed, dtype=dtype, sparse=sparse, sparse_thresholds=sparse_thresholds)
    net.input_shape = input_shape  # (C, H, W) of one image
    return net
