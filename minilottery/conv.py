"""Convolutional layers for the paper's Conv-2/4/6, VGG-19 and Resnet-18 (its Figure 2 table).

Conv2d, MaxPool2d, BatchNorm2d, GlobalAvgPool and ResidualBlock follow layers.py:
``params`` and ``grads`` share keys, ``forward(x, train)`` caches what ``backward``
needs, and ``backward(dy)`` fills ``grads`` in place and returns dx. Activations are
NCHW: ``# (N, C, H, W)``.

The paper's convolutions are 3x3 with "same" padding. Conv2d reads like Dense: its
forward and backward hand x, w and b to a convolution engine with one signature,
``forward(x, w, b) -> y`` and ``backward(dy, x, w) -> (dx, dw, db)``
(kernels/convolution.py): Winograd's F(4x4, 3x3) for the paper's 3x3 convolutions,
im2col for strided and 1x1 ones and a network's first layer, and the direct loop, the
reference both are tested against.

Weights are Gaussian Glorot, as everywhere in the paper, with fan_in = C*kh*kw and
fan_out = K*kh*kw; biases start at 0. Batch norm (Ioffe & Szegedy 2015) is used by
Resnet-18 and VGG-19; its γ and β are never pruned.
"""
import numpy as np

from . import threads
from .kernels import batchnorm as batchnorm_kernels
from .kernels import conv as kernels
from .kernels import convolution
from .layers import Layer, ReLU, glorot_normal


class Conv2d(Layer):
    """y = w ⋆ x + b: weight (K, C, kh, kw), x (N, C, H, W) -> y (N, K, Ho, Wo).

    The arithmetic is an engine's (kernels/convolution.py): Winograd for the paper's
    3x3 "same" convolutions, im2col for the rest, both tested against the direct loop.
    """
    kind = "conv"  # the network prunes conv weights at the paper's conv rate
    prunable = ("weight",)

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, bias=True,
                 dtype=np.float32, engine=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding  # "same" for odd kernels at stride 1
        self.params = {"weight": np.zeros((out_channels, in_channels, kernel_size, kernel_size), dtype)}
        if bias:
            self.params["bias"] = np.zeros(out_channels, dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.engine = engine or convolution.choose(in_channels, kernel_size, stride, self.padding)
        self.winograd = isinstance(self.engine, convolution.Winograd)  # its passes need the cores (threads.py)
        self.zero_bias = np.zeros(out_channels, dtype)

    def initialize(self, rng):
        weight = self.params["weight"]
        area = self.kernel_size ** 2
        weight[...] = glorot_normal(rng, weight.shape, self.in_channels * area, self.out_channels * area, weight.dtype)
        if "bias" in self.params:
            self.params["bias"][...] = 0

    @property
    def use_winograd(self):
        """Whether the last forward pass went through Winograd's algorithm."""
        return self.winograd and self.engine.used

    def forward(self, x, train=False):
        self.x = np.ascontiguousarray(x)  # (N, C, H, W)
        return self.engine.forward(self.x, self.params["weight"], self.params.get("bias", self.zero_bias))

    def backward(self, dy, need_dx=True):
        dx, _, db = self.engine.backward(np.ascontiguousarray(dy), self.x, self.params["weight"], need_dx,
                                         dw=self.grads["weight"])  # (N, K, Ho, Wo) -> dx, dw, db
        if "bias" in self.grads:
            self.grads["bias"][...] = db  # db = sum of dy over n, i, j
        return dx


class MaxPool2d(Layer):
    """Max over non-overlapping size x size windows (the paper's 2x2, stride 2); odd edges dropped."""

    def __init__(self, size=2):
        super().__init__()
        self.size = size

    def forward(self, x, train=False):
        n_images, channels, height, width = x.shape
        self.input_shape, self.dtype = x.shape, x.dtype
        y = np.empty((n_images, channels, height // self.size, width // self.size), x.dtype)
        self.argmax = np.empty(y.shape, np.uint8)  # which of the size*size inputs won
        kernels.maxpool_forward(np.ascontiguousarray(x), y, self.argmax, self.size)
        return y

    def backward(self, dy, need_dx=True):
        dx = np.empty(self.input_shape, self.dtype)
        kernels.maxpool_backward(np.ascontiguousarray(dy), self.argmax, dx, self.size)
        return dx


def over_channels(kernel, channels, *args):
    """kernel(*args, first, stop) for each worker's share of the channels, side by side on the pool."""
    threads.run_chunks(channels, -(-channels // threads.WORKERS),
                       lambda worker, part: kernel(*args, part.start, part.stop))


class BatchNorm2d(Layer):
    """y = γ x̂ + β with x̂ = (x - μ) / sqrt(σ² + ε) per channel (Ioffe & Szegedy 2015).

    Training normalises with the batch's μ and σ² over (N, H, W) and updates running
    estimates, r <- (1 - momentum) r + momentum * batch value (PyTorch's convention,
    unbiased σ²); evaluation normalises with the running estimates.

    With ``relu`` the layer is batch norm followed by a ReLU, y = max(γ x̂ + β, 0), in
    the same passes over the map (kernels/batchnorm.py): Resnet-18 and VGG-19 put a ReLU
    after most of their batch norms.
    """

    def __init__(self, channels, momentum=0.1, eps=1e-5, relu=False, dtype=np.float32):
        super().__init__()
        self.momentum, self.eps, self.relu = momentum, eps, relu
        self.params = {"gamma": np.ones(channels, dtype), "beta": np.zeros(channels, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.buffers = {"running_mean": np.zeros(channels, dtype), "running_var": np.ones(channels, dtype)}

    def initialize(self, rng):
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def forward(self, x, train=False):
        channels = x.shape[1]
        self.train, self.x = train, x  # (N, C, H, W)
        if train:
            mean, var = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
            over_channels(batchnorm_kernels.channel_statistics, channels, x, mean, var)  # over (N, H, W)
            count = x.size // channels
            self.buffers["running_mean"] *= 1 - self.momentum
            self.buffers["running_mean"] += self.momentum * mean
            self.buffers["running_var"] *= 1 - self.momentum
            self.buffers["running_var"] += self.momentum * var * count / max(count - 1, 1)
        else:
            mean, var = self.buffers["running_mean"].copy(), self.buffers["running_var"]
        self.mean = mean
        self.inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype)  # (C,)
        # y = γ x̂ + β = x * (γ / σ) + (β - μ γ / σ), one pass (and the ReLU in it)
        self.scale = self.params["gamma"] * self.inv_std
        self.shift = self.params["beta"] - mean * self.scale
        y = np.empty_like(x)
        over_channels(batchnorm_kernels.channel_affine, channels, x, self.scale, self.shift, self.relu, y)
        return y

    def backward(self, dy, need_dx=True):
        # g = dy, or with the ReLU dy where γ x̂ + β > 0 and 0 elsewhere (recomputed from x);
        # dβ = sum of g, dγ = sum of g x̂, over (N, H, W)
        fused = (self.scale, self.shift, self.relu)
        channels = dy.shape[1]
        over_channels(batchnorm_kernels.batchnorm_backward_sums, channels, dy, self.x, self.mean, self.inv_std, *fused,
                      self.grads["beta"], self.grads["gamma"])
        if not need_dx:
            return None
        dx = np.empty_like(dy)
        if self.train:  # μ and σ² depend on x: dx = γ/σ (g - mean(g) - x̂ mean(g x̂)), means over (N, H, W)
            count = dy.size // dy.shape[1]
            mean_g, mean_g_xhat = self.grads["beta"] / count, self.grads["gamma"] / count
        else:  # μ and σ² were constants: dx = γ/σ g
            mean_g = mean_g_xhat = np.zeros_like(self.mean)
        over_channels(batchnorm_kernels.batchnorm_input_grad, channels, dy, self.x, self.mean, self.inv_std,
                      self.params["gamma"], *fused, mean_g, mean_g_xhat, dx)
        return dx


class GlobalAvgPool(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel, the "avg-pool" before Resnet's and VGG's output."""

    def forward(self, x, train=False):
        self.input_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy, need_dx=True):
        height, width = self.input_shape[2:]
        return np.broadcast_to((dy / (height * width))[:, :, None, None], self.input_shape).copy()


class ResidualBlock(Layer):
    """He et al. (2016): relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convs.

    The shortcut is the identity when the shape is kept, else a strided 1x1 conv and
    batch norm (the "projection" shortcut), whose weights have kind "shortcut" so that
    the paper's Resnet-18 can leave them unpruned. The block has no parameters of
    its own: the network finds its parts through ``children``.
    """

    def __init__(self, in_channels, out_channels, stride=1, dtype=np.float32):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(out_channels, relu=True, dtype=dtype)  # relu(bn1(...)) in one layer
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, bias=False, dtype=dtype)
        self.bn2, self.relu2 = BatchNorm2d(out_channels, dtype=dtype), ReLU()
        self.children = [("conv1", self.conv1), ("bn1", self.bn1), ("conv2", self.conv2), ("bn2", self.bn2)]
        self.projection = stride != 1 or in_channels != out_channels
        if self.projection:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride, padding=0, bias=False, dtype=dtype)
            self.shortcut.kind = "shortcut"
            self.shortcut_bn = BatchNorm2d(out_channels, dtype=dtype)
            self.children += [("shortcut", self.shortcut), ("shortcut_bn", self.shortcut_bn)]
        self.children.append(("relu2", self.relu2))
        self.main = [self.conv1, self.bn1, self.conv2, self.bn2]

    def forward(self, x, train=False):
        out = x
        for layer in self.main:
            out = layer.forward(out, train)  # (N, K, H/s, W/s), a fresh array from bn2
        shortcut = self.shortcut_bn.forward(self.shortcut.forward(x, train), train) if self.projection else x
        return self.relu2.forward_sum(out, shortcut)  # relu(out + shortcut), in one pass over out

    def backward(self, dy, need_dx=True):
        d = self.relu2.backward(dy)  # the sum's gradient goes to both branches unchanged
        d_main = d
        for layer in reversed(self.main[1:]):
            d_main = layer.backward(d_main)
        dx = self.conv1.backward(d_main, need_dx)
        if self.projection:
            d_short = self.shortcut.backward(self.shortcut_bn.backward(d), need_dx)
        else:
            d_short = d
        if not need_dx:
            return None
        # dx is conv1's fresh array: the shortcut's gradient is added into it, split over the pool
        threads.elementwise(convolution.add_into, (dx.reshape(-1), d_short.reshape(-1)))
        return dx
