"""Convolutional layers for the paper's Conv-2/4/6, VGG-19 and Resnet-18 (its Figure 2 table).

Conv2d, MaxPool2d, BatchNorm2d, GlobalAvgPool and ResidualBlock follow layers.py:
``params`` and ``grads`` share keys, ``forward(x, train)`` caches what ``backward``
needs, and ``backward(dy)`` fills ``grads`` in place and returns dx. Activations are
NCHW: ``# (N, C, H, W)``.

The paper's convolutions are 3x3 with "same" padding, and Conv2d computes them with
Winograd's F(4x4, 3x3) (kernels/winograd.py), which needs 4x fewer multiplications
than the direct sum and is exact up to rounding. Strided and 1x1 convolutions (the
Resnet's downsampling), a network's first layer (1 or 3 input channels) and maps
smaller than 4x4 go through im2col and one matrix product per image (kernels/conv.py).
Both agree with the direct loop ``kernels.conv.conv2d_direct``.
Winograd works through the batch in chunks of a few images, one chunk per core at a
time (``threads.run_chunks``): each thread transforms its chunk, multiplies it with a
single-threaded OpenBLAS and transforms it back, so the two cores share the whole
layer instead of meeting at a barrier after every kernel and every small product.

Weights are Gaussian Glorot, as everywhere in the paper, with fan_in = C*kh*kw and
fan_out = K*kh*kw; biases start at 0. Batch norm (Ioffe & Szegedy 2015) is used by
Resnet-18 and VGG-19; its γ and β are never pruned.
"""
import numpy as np

from . import threads
from .kernels import conv as kernels
from .kernels import winograd
from .layers import Layer, ReLU, glorot_normal
from .threads import WORKERS, run_chunks

# Winograd runs over the batch a few images at a time so that the transformed tiles
# V and products M (36 x channels x tiles) stay in cache between the transforms and
# the matrix products; this is the byte size of one such chunk.
CHUNK_BYTES = 1 << 21

# A network's first conv reads the image's 1 or 3 channels: its products are tiny, and
# Winograd's transforms of the 64 output maps cost more than im2col does. Conv-2's first
# layer on CIFAR-10 (batch 60): forward + backward 9.3 ms with Winograd, 5.8 with im2col.
WINOGRAD_MIN_CHANNELS = 4


class Conv2d(Layer):
    """y = w ⋆ x + b: weight (K, C, kh, kw), x (N, C, H, W) -> y (N, K, Ho, Wo)."""
    kind = "conv"  # the network prunes conv weights at the paper's conv rate
    prunable = ("weight",)

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, bias=True,
                 dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding  # "same" for odd kernels at stride 1
        self.params = {"weight": np.zeros((out_channels, in_channels, kernel_size, kernel_size), dtype)}
        if bias:
            self.params["bias"] = np.zeros(out_channels, dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        # The paper's 3x3 "same" conv, unless it reads an image's 1 or 3 channels
        self.winograd = (kernel_size, stride, self.padding) == (3, 1, 1) and in_channels >= WINOGRAD_MIN_CHANNELS
        self.zero_bias = np.zeros(out_channels, dtype)
        self.scratch = {}  # reusable work arrays by name, grown on demand

    def initialize(self, rng):
        weight = self.params["weight"]
        area = self.kernel_size ** 2
        weight[...] = glorot_normal(rng, weight.shape, self.in_channels * area, self.out_channels * area, weight.dtype)
        if "bias" in self.params:
            self.params["bias"][...] = 0

    def _work(self, name, shape, dtype):
        """A C-contiguous array of ``shape``, reusing the same memory on every call."""
        size = int(np.prod(shape))
        flat = self.scratch.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self.scratch[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)

    def forward(self, x, train=False):
        self.x = x = np.ascontiguousarray(x)  # (N, C, H, W)
        bias = self.params.get("bias", self.zero_bias)
        # Below one whole 4x4 tile (VGG-19's last stage is 2x2) Winograd saves nothing
        # and its transformed filters, 4x the size of w, would cost the most.
        self.use_winograd = self.winograd and min(x.shape[2:]) >= winograd.TILE
        return self._winograd_forward(x, bias) if self.use_winograd else self._im2col_forward(x, bias)

    def backward(self, dy, need_dx=True):
        dy = np.ascontiguousarray(dy)  # (N, K, Ho, Wo)
        if self.use_winograd:
            dx, bias_grad = self._winograd_backward(dy, need_dx)
        else:
            dx, bias_grad = self._im2col_backward(dy, need_dx)
        if "bias" in self.grads:
            self.grads["bias"][...] = bias_grad  # db = sum of dy over n, i, j
        return dx

    # --------------------------------------------------------------- Winograd F(4x4, 3x3)

    def _chunks(self, x):
        """(tiles_h, tiles_w, images per chunk) for input x: chunks of about CHUNK_BYTES,
        and at least one per worker when the batch allows."""
        tiles_h, tiles_w = winograd.tile_grid(*x.shape[2:])
        per_image = 36 * max(self.in_channels, self.out_channels) * tiles_h * tiles_w * x.itemsize
        return tiles_h, tiles_w, max(1, min(CHUNK_BYTES // per_image, -(-x.shape[0] // WORKERS)))

    def _winograd_forward(self, x, bias):
        n_images, channels, height, width = x.shape
        tiles_h, tiles_w, chunk = self._chunks(x)
        self.U = U = self._work("U", (36, self.out_channels, channels), x.dtype)  # G g G^T
        winograd.filter_transform(self.params["weight"], U)
        y = np.empty((n_images, self.out_channels, height, width), x.dtype)

        def work(worker, images):
            tiles = (images.stop - images.start) * tiles_h * tiles_w
            V = self._work(f"V{worker}", (36, channels, tiles), x.dtype)          # B^T d B per tile
            M = self._work(f"M{worker}", (36, self.out_channels, tiles), x.dtype)
            winograd.input_transform(x[images], V, tiles_h, tiles_w)
            np.matmul(U, V, out=M)                                                # M_ξ = U_ξ V_ξ
            winograd.output_transform(M, bias, y[images], tiles_h, tiles_w)      # A^T M A + b

        run_chunks(n_images, chunk, work)
        return y

    def _winograd_backward(self, dy, need_dx):
        x, U = self.x, self.U
        n_images, channels = x.shape[:2]
        tiles_h, tiles_w, chunk = self._chunks(x)
        U_T = U.transpose(0, 2, 1)  # (36, C, K)
        dU_parts = {}  # worker -> its running sum of dU over its chunks (36, K, C)
        bias_partial = np.empty((n_images, self.out_channels), x.dtype)
        dx = np.empty_like(x) if need_dx else None

        def work(worker, images):
            tiles = (images.stop - images.start) * tiles_h * tiles_w
            V = self._work(f"V{worker}", (36, channels, tiles), x.dtype)
            dM = self._work(f"M{worker}", (36, self.out_channels, tiles), x.dtype)
            winograd.input_transform(x[images], V, tiles_h, tiles_w)  # recomputed: cheaper than keeping V
            winograd.output_transform_adjoint(dy[images], dM, bias_partial[images], tiles_h, tiles_w)
            if worker in dU_parts:
                dU_chunk = self._work(f"dU_chunk{worker}", U.shape, x.dtype)
                np.matmul(dM, V.transpose(0, 2, 1), out=dU_chunk)     # dU_ξ = dM_ξ V_ξ^T
                dU_parts[worker] += dU_chunk
            else:  # the worker's first chunk writes its sum directly
                dU_parts[worker] = np.matmul(dM, V.transpose(0, 2, 1), out=self._work(f"dU{worker}", U.shape, x.dtype))
            if need_dx:
                np.matmul(U_T, dM, out=V)                             # dV_ξ = U_ξ^T dM_ξ
                winograd.input_transform_adjoint(V, dx[images], tiles_h, tiles_w)

        run_chunks(n_images, chunk, work)
        parts = list(dU_parts.values())
        dU = parts[0]
        for part in parts[1:]:
            dU += part
        winograd.filter_transform_adjoint(dU, self.grads["weight"])  # dg = G^T dU G
        return dx, bias_partial.sum(axis=0)

    # --------------------------------------------------------------- im2col

    def _im2col_forward(self, x, bias):
        n_images, channels, height, width = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        out_h, out_w = kernels.output_size(height, k, s, p), kernels.output_size(width, k, s, p)
        self.cols = self._work("cols", (n_images, channels * k * k, out_h * out_w), x.dtype)
        kernels.im2col(x, self.cols, k, k, s, p)
        weight = self.params["weight"].reshape(self.out_channels, -1)  # (K, C*k*k)
        y = threads.matmul_each(weight, self.cols)                      # (N, K, Ho*Wo)
        y += bias[:, None]
        return y.reshape(n_images, self.out_channels, out_h, out_w)

    def _im2col_backward(self, dy, need_dx):
        k, s, p = self.kernel_size, self.stride, self.padding
        n_images = dy.shape[0]
        dy = dy.reshape(n_images, self.out_channels, -1)  # (N, K, Ho*Wo)
        # dW = sum_n dy[n] cols[n]^T: one product over (n, pixel) per worker's share of the batch
        parts = []

        def weight_grad(worker, images):
            parts.append(np.tensordot(dy[images], self.cols[images], axes=([0, 2], [0, 2])))

        run_chunks(n_images, -(-n_images // WORKERS), weight_grad)
        self.grads["weight"].reshape(self.out_channels, -1)[...] = sum(parts[1:], parts[0])
        dx = None
        if need_dx:
            dcols = threads.matmul_each(self.params["weight"].reshape(self.out_channels, -1).T, dy)  # (N, C*k*k, Ho*Wo)
            dx = np.empty_like(self.x)
            kernels.col2im(dcols, dx, k, k, s, p)
        return dx, dy.sum(axis=(0, 2))


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


class BatchNorm2d(Layer):
    """y = γ x̂ + β with x̂ = (x - μ) / sqrt(σ² + ε) per channel (Ioffe & Szegedy 2015).

    Training normalises with the batch's μ and σ² over (N, H, W) and updates running
    estimates, r <- (1 - momentum) r + momentum * batch value (PyTorch's convention,
    unbiased σ²); evaluation normalises with the running estimates.
    """

    def __init__(self, channels, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.momentum, self.eps = momentum, eps
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
            kernels.channel_statistics(x, mean, var)  # over (N, H, W)
            count = x.size // channels
            self.buffers["running_mean"] *= 1 - self.momentum
            self.buffers["running_mean"] += self.momentum * mean
            self.buffers["running_var"] *= 1 - self.momentum
            self.buffers["running_var"] += self.momentum * var * count / max(count - 1, 1)
        else:
            mean, var = self.buffers["running_mean"].copy(), self.buffers["running_var"]
        self.mean = mean
        self.inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype)  # (C,)
        # y = γ x̂ + β = x * (γ / σ) + (β - μ γ / σ), one pass
        scale = self.params["gamma"] * self.inv_std
        y = np.empty_like(x)
        kernels.channel_affine(x, scale, self.params["beta"] - mean * scale, y)
        return y

    def backward(self, dy, need_dx=True):
        channels = dy.shape[1]
        # dβ = sum of dy, dγ = sum of dy x̂ (x̂ recomputed from x), over (N, H, W)
        kernels.batchnorm_backward_sums(dy, self.x, self.mean, self.inv_std, self.grads["beta"], self.grads["gamma"])
        if not need_dx:
            return None
        dx = np.empty_like(dy)
        if not self.train:  # μ and σ² were constants: dx = dy γ / σ
            kernels.channel_affine(dy, self.params["gamma"] * self.inv_std, np.zeros(channels, dy.dtype), dx)
            return dx
        # μ and σ² depend on x: dx = γ/σ (dy - mean(dy) - x̂ mean(dy x̂)), means over (N, H, W)
        count = dy.size // channels
        kernels.batchnorm_input_grad(dy, self.x, self.mean, self.inv_std, self.params["gamma"],
                                     self.grads["beta"] / count, self.grads["gamma"] / count, dx)
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
        self.bn1, self.relu1 = BatchNorm2d(out_channels, dtype=dtype), ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, bias=False, dtype=dtype)
        self.bn2, self.relu2 = BatchNorm2d(out_channels, dtype=dtype), ReLU()
        self.children = [("conv1", self.conv1), ("bn1", self.bn1), ("relu1", self.relu1),
                         ("conv2", self.conv2), ("bn2", self.bn2)]
        self.projection = stride != 1 or in_channels != out_channels
        if self.projection:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride, padding=0, bias=False, dtype=dtype)
            self.shortcut.kind = "shortcut"
            self.shortcut_bn = BatchNorm2d(out_channels, dtype=dtype)
            self.children += [("shortcut", self.shortcut), ("shortcut_bn", self.shortcut_bn)]
        self.children.append(("relu2", self.relu2))
        self.main = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2]

    def forward(self, x, train=False):
        out = x
        for layer in self.main:
            out = layer.forward(out, train)  # (N, K, H/s, W/s), a fresh array from bn2
        if self.projection:
            out += self.shortcut_bn.forward(self.shortcut.forward(x, train), train)
        else:
            out += x
        return self.relu2.forward(out, train)

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
        return dx + d_short if need_dx else None
