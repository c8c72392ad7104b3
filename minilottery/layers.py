"""Layers with hand-written forward and backward passes: Dense, ReLU, Dropout, Flatten.

Each layer is a plain class in the style of numpy-ml: ``params`` and ``grads`` are
dicts with the same keys, ``forward(x, train)`` caches only what ``backward``
needs, and ``backward(dy)`` fills ``grads`` and returns dx. The derivative sits
under its forward so that the chain rule can be read on one screen.

A layer always looks its parameters up in ``self.params`` when it runs: the
network (nets.py) rebinds them to views of one flat buffer so that the optimizer
can update every parameter in a single pass.

Initialisation is the paper's: Gaussian Glorot, W ~ N(0, 2 / (fan_in + fan_out)),
biases zero.
"""
import numpy as np

from . import threads
from .kernels import blas, core, sparse_input

# A network's first Dense layer skips the zeros of its input (kernels/sparse_input.py) when
# fewer than this fraction of the batch's entries are nonzero. Those kernels do the
# multiply-adds of a register block for every pixel nonzero in any of 4 samples, at
# ~1.1-1.2x BLAS's cost per multiply-add; on uniformly scattered zeros 4 samples cover
# 1 - (1 - d)^4 of the pixels, which at d = 0.3 is 0.76 of BLAS's work. MNIST: d = 0.19.
SKIP_ZEROS_BELOW = 0.3


def mostly_zeros(x):
    """Whether fewer than SKIP_ZEROS_BELOW of the entries of x (C-contiguous, any shape) are nonzero."""
    return sparse_input.nonzero_fraction(x.reshape(-1)) < SKIP_ZEROS_BELOW


def glorot_normal(rng, shape, fan_in, fan_out, dtype):
    """Gaussian Glorot (Xavier) initialisation: N(0, sigma^2), sigma^2 = 2 / (fan_in + fan_out)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


class Layer:
    """A layer without parameters; subclasses with parameters fill the two dicts."""
    prunable = ()  # names of parameters that pruning may remove (weights, never biases)

    def __init__(self):
        self.params, self.grads = {}, {}
        self.buffers = {}  # state that is not trained, e.g. batch-norm running means

    def initialize(self, rng):
        """Draw fresh initial values for every parameter from the layer's initializer."""


class Dense(Layer):
    """y = x @ W + b with W of shape (in_features, out_features)."""
    prunable = ("weight",)
    sparse = None  # a sparse.SparseDense when the network trains this layer at its kept weights only
    skipping = False  # this pass skips the input's zeros: set by the network (``skips_zeros``)
    side_by_side = False  # this pass's BLAS products run two at a time on Numba's threads (kernels/blas.py): set by the network

    def __init__(self, in_features, out_features, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.params = {"weight": np.zeros((in_features, out_features), dtype),
                       "bias": np.zeros(out_features, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def initialize(self, rng):
        weight = self.params["weight"]
        weight[...] = glorot_normal(rng, weight.shape, self.in_features, self.out_features, weight.dtype)
        self.params["bias"][...] = 0

    def can_skip(self, samples, train):
        """Whether a pass of ``samples`` could run this layer's products by the zero-skipping
        kernel: its whole product is computed (no sparse kernels of its own run) and fits the
        kernel's blocks."""
        sparse_kernels = self.sparse is not None and self.sparse.runs_kernels(samples, train)
        return not sparse_kernels and sparse_input.fits(samples, self.in_features, self.out_features)

    def skips_zeros(self, x, train=False):
        """Whether the next pass skips the zeros of ``x`` (this layer's input, any shape):
        a network asks this of its first layer before each pass (nets.Network.forward)."""
        self.skipping = self.can_skip(x.shape[0], train) and x.flags.c_contiguous and mostly_zeros(x)
        return self.skipping

    def forward(self, x, train=False):
        if self.sparse is not None:
            return self.sparse.forward(x, train)
        self.x = x                                  # (N, in)
        return self.dense_forward(x)

    def dense_forward(self, x):
        """x @ W + b over all of W, by BLAS or, in a pass that skips them, without the zeros of x."""
        self.skipping = self.skipping and x.flags.c_contiguous  # the kernel is compiled for C order
        self.side_by_side = self.side_by_side and x.flags.c_contiguous
        if self.skipping:                           # the same product without the zeros of x
            y = np.empty((x.shape[0], self.out_features), x.dtype)
            sparse_input.forward_skipping_zeros(x, self.params["weight"], self.params["bias"], y)
            return y
        if self.side_by_side:                       # OpenBLAS on each of Numba's threads
            y = np.empty((x.shape[0], self.out_features), x.dtype)
            blas.by_columns(x, self.params["weight"], y)
        else:
            y = threads.matmul(x, self.params["weight"])  # (N, out)
        core.add_bias(y, self.params["bias"])
        return y

    def backward(self, dy, need_dx=True):
        if self.sparse is not None:
            return self.sparse.backward(dy, need_dx)
        # dW = x^T dy,  db = sum_n dy,  dx = dy W^T (skipped for the network's first layer)
        core.bias_grad(dy, self.grads["bias"])
        if self.side_by_side:                       # dW beside dx, each by OpenBLAS on one thread
            dx = np.empty((dy.shape[0], self.in_features), dy.dtype) if need_dx else None
            blas.backward(self.x, np.ascontiguousarray(dy), self.params["weight"], self.grads["weight"], dx)
            return dx
        if self.skipping:
            sparse_input.weight_grad_skipping_zeros(self.x, dy, self.grads["weight"])
        else:
            threads.matmul(self.x.T, dy, out=self.grads["weight"])
        if not need_dx:
            return None
        if self.skipping and sparse_input.fits(dy.shape[0], self.out_features, self.in_features):
            dx = np.empty((dy.shape[0], self.in_features), dy.dtype)
            sparse_input.input_grad_skipping_zeros(dy, self.params["weight"], dx)
            return dx
        return threads.matmul(dy, self.params["weight"].T)


class ReLU(Layer):
    """y = max(x, 0); its derivative is 1 where y > 0, else 0. Works in place on x."""

    def forward(self, x, train=False):
        threads.elementwise(core.relu_forward, (x.reshape(-1),))
        self.y = x
        return x

    def forward_sum(self, x, other):
        """max(x + other, 0), in place on x: the end of a residual block, in one pass."""
        threads.elementwise(core.add_relu_forward, (x.reshape(-1), other.reshape(-1)))
        self.y = x
        return x

    def backward(self, dy, need_dx=True):
        threads.elementwise(core.relu_backward, (dy.reshape(-1), self.y.reshape(-1)))
        return dy


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training each unit is zeroed with
    probability p and the survivors scaled by 1 / (1 - p), so evaluation is the identity."""

    def __init__(self, p):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.p = p
        self.rng = np.random.default_rng(0)  # the network replaces it with its own seeded one
        self.scale = None

    def forward(self, x, train=False):
        if not train or self.p == 0:
            self.scale = None
            return x
        u = self.rng.random(x.shape, dtype=x.dtype)
        y = x.copy()
        self.scale = np.empty_like(x)  # 0 where dropped, 1 / (1 - p) where kept
        core.dropout_forward(y.reshape(-1), u.reshape(-1), x.dtype.type(self.p), self.scale.reshape(-1))
        return y

    def backward(self, dy, need_dx=True):
        return dy if self.scale is None else dy * self.scale


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in C order, so that dense layers see NCHW features."""

    def forward(self, x, train=False):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        return dy.reshape(self.shape)
