"""Convolution engines: four ways to compute the paper's convolutions, behind one signature.

The paper's convolutions (its Figure 2 table: 3x3, "same" padding) are cross-correlations,

    y[n, k, i, j] = b[k] + sum_{c, a, b} w[k, c, a, b] x[n, c, s*i + a - p, s*j + b - p]

and every engine computes them and their gradients with the same two methods:

    forward(x, w, b) -> y                     x (N, C, H, W), w (K, C, kh, kw), b (K,) -> y (N, K, Ho, Wo)
    backward(dy, x, w) -> (dx, dw, db)        dL/dx, dL/dw and dL/db from dy = dL/dy

* ``Direct``: the definition above by loops over the kernel taps, forward and backward.
  It is slow and plain, the reference every other engine is tested against.
* ``Im2col``: the receptive field of each output pixel becomes a column, so the
  convolution is one matrix product per image, y[n] = W cols[n] (BLAS); its gradient
  with respect to x, col2im, sums each column back onto the pixels it was read from.
  It serves strided and 1x1 convolutions (Resnet-18's downsampling) and a network's
  first layer (1 or 3 input channels, whose products are tiny).
* ``Taps`` (taps.py): stride-1 convolutions of maps smaller than a Winograd tile, channels
  last, by products over only the taps that fall on the map (on a 2x2 map, 4 of a 3x3 kernel's 9).
* ``Winograd``: F(4x4, 3x3) (winograd.py, winograd_tiles.py) for every other 3x3 "same"
  convolution, 4x fewer multiplications than the direct sum and exact up to rounding. It works
  through the batch a few images at a time, one chunk per core (``threads.run_chunks``):
  each thread transforms its chunk, multiplies it with a single-threaded OpenBLAS and
  transforms it back, so the two cores share the whole layer instead of meeting at a
  barrier after every kernel and product.

An engine's results depend only on its arguments. It keeps scratch memory between
calls, and ``backward`` reuses what the forward pass of the same x and w computed
(im2col's columns, the laid-out taps, Winograd's transformed filters).
"""
import numpy as np

from .. import threads
from . import Scratch
from . import conv as kernels
from . import winograd, winograd_tiles
from .conv import output_shape
from .taps import Taps

# Winograd runs over the batch a few images at a time so that the transformed tiles
# V and products M (36 x channels x tiles) stay in cache between the transforms and
# the matrix products; this is the byte size of one such chunk.
CHUNK_BYTES = 1 << 21
# Every chunk's products read all the transformed filters U (36 x K x C). Beyond this
# size U comes from memory each time, and each worker takes its share of the batch as one
# chunk instead: VGG-19's 512-channel layers on 4x4 maps (U of 38 MB), forward and
# backward for 64 images, 75 ms in chunks of 28 images, 46 ms in one per worker; with
# 256 channels (U of 9.4 MB) the two cost the same.
FILTER_BYTES = 1 << 24
# NumPy multiplies a stack of small matrices whose second operand is a transposed view
# (U_ξ^T) a third slower than the same stack laid out in rows: V_ξ U_ξ^T for a chunk of
# Resnet-18's 16-channel layer took 258 us against 160, and Conv-6's 256-channel products
# ran at 32 against 44 GMAC/s (40 tiles x 256 x 256, one thread). So up to FILTER_BYTES
# the forward pass transforms w^T, which gives U^T in rows directly, and the backward
# transforms w again for U. Steps alternated with and without this: medians 1.01-1.04
# (Conv-6), 1.07-1.09 (Conv-4), 1.03 (VGG-19). Above FILTER_BYTES (VGG-19's 512-channel
# layers) both passes read the one U, the forward through the view: transforming 38 MB
# twice made VGG-19's step 0.96x. (Up to 1 MB this replaced a copy of U^T into rows after
# transforming w: Resnet-18 and Conv-2 steps, 1.00 and 1.04.)

# A network's first conv reads the image's 1 or 3 channels: its products are tiny, and
# Winograd's transforms of the 64 output maps cost more than im2col does. Conv-2's first
# layer on CIFAR-10 (batch 60): forward + backward 9.3 ms with Winograd, 5.8 with im2col.
WINOGRAD_MIN_CHANNELS = 4

# Im2col multiplies image by image from this many output pixels up, and the whole batch
# at once below: VGG-19's 2x2 maps (4 pixels per image) took 214 ms of a step image by image.
PIXELS_PER_PRODUCT = 64


def add_into(total, part):
    """total += part; NumPy releases the GIL for it, so the pool can split it (threads.elementwise)."""
    np.add(total, part, out=total)


def choose(in_channels, kernel_size, stride, padding):
    """The engine minilottery uses for a layer of this shape."""
    if (kernel_size, stride, padding) == (3, 1, 1) and in_channels >= WINOGRAD_MIN_CHANNELS:
        return Winograd()
    return Im2col(stride, padding)


# ---------------------------------------------------------------------------- the reference

class Direct:
    """The definition, by loops over the kernel taps (a, c): the reference engine."""

    def __init__(self, stride=1, padding=1):
        self.stride, self.padding = stride, padding

    def _windows(self, w, out_h, out_w):
        """For every tap (a, c): the slice of the padded input that tap reads, (N, C, Ho, Wo)."""
        s = self.stride
        for a in range(w.shape[2]):
            for c in range(w.shape[3]):
                yield a, c, (slice(None), slice(None), slice(a, a + s * out_h, s), slice(c, c + s * out_w, s))

    def forward(self, x, w, b):
        p = self.padding
        n_images, out_channels, out_h, out_w = output_shape(x, w, self.stride, p)
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.zeros((n_images, out_channels, out_h, out_w), np.result_type(x, w))
        for a, c, window in self._windows(w, out_h, out_w):
            y += np.einsum("kc,nchw->nkhw", w[:, :, a, c], padded[window])  # y += w[:, :, a, c] ⋆ tap
        return y + b[:, None, None]

    def backward(self, dy, x, w, need_dx=True, dw=None):
        p = self.padding
        out_h, out_w = dy.shape[2:]
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        dpadded = np.zeros_like(padded)
        dw = np.empty_like(w) if dw is None else dw
        for a, c, window in self._windows(w, out_h, out_w):
            dw[:, :, a, c] = np.einsum("nkhw,nchw->kc", dy, padded[window])  # dw = dy · tap
            dpadded[window] += np.einsum("kc,nkhw->nchw", w[:, :, a, c], dy)  # each tap's pixels get w^T dy
        dx = dpadded[:, :, p:p + x.shape[2], p:p + x.shape[3]] if need_dx else None
        return dx, dw, dy.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------------------- im2col

class Im2col:
    """Columns of receptive fields and matrix products (BLAS): one per image, or one for the
    whole batch when the maps have fewer than PIXELS_PER_PRODUCT pixels, where a product
    per image would read all of W to fill a few columns (VGG-19's 2x2 maps: 4)."""

    def __init__(self, stride=1, padding=1):
        self.stride, self.padding = stride, padding
        self.scratch, self.cols_of, self.stacked_of = Scratch(), None, None

    def _columns(self, x, w, pixels):
        cols = self.scratch("cols", (x.shape[0], w[0].size, pixels), x.dtype)  # (N, C*kh*kw, Ho*Wo)
        if self.cols_of is not x:
            kernels.im2col(x, cols, w.shape[2], w.shape[3], self.stride, self.padding)
            self.cols_of, self.stacked_of = x, None  # the columns now in scratch are this x's
        return cols

    def _stacked(self, cols, x):
        """The columns side by side for the whole batch: (C*kh*kw, N*Ho*Wo), image by image."""
        if self.stacked_of is not x:
            self.stacked, self.stacked_of = cols.transpose(1, 0, 2).reshape(cols.shape[1], -1), x
        return self.stacked

    def forward(self, x, w, b):
        n_images, out_channels, out_h, out_w = output_shape(x, w, self.stride, self.padding)
        cols = self._columns(x, w, out_h * out_w)
        weights = w.reshape(out_channels, -1)
        if out_h * out_w >= PIXELS_PER_PRODUCT:
            y = threads.matmul_each(weights, cols)  # (N, K, Ho*Wo)
        else:
            y = threads.matmul(weights, self._stacked(cols, x))  # (K, N*Ho*Wo)
            y = y.reshape(out_channels, n_images, -1).transpose(1, 0, 2).copy()
        if b.any():  # a conv before batch norm has no bias (b = 0): no pass over y to add it
            y += b[:, None]
        return y.reshape(n_images, out_channels, out_h, out_w)

    def backward(self, dy, x, w, need_dx=True, dw=None):
        n_images, out_channels = dy.shape[:2]
        pixels = dy.shape[2] * dy.shape[3]
        cols = self._columns(x, w, pixels)
        weights = w.reshape(out_channels, -1)
        dy = dy.reshape(n_images, out_channels, -1)  # (N, K, Ho*Wo)
        dw = np.empty_like(w) if dw is None else dw
        if pixels >= PIXELS_PER_PRODUCT:
            # dW^T = sum_n cols[n] dy[n]^T, a product per image of each worker's share, summed
            # (np.tensordot would first copy dy and cols into transposed layouts: Resnet-18's
            # 16->32 stride-2 layer, 64 images, 4.7 ms against 1.8; and OpenBLAS multiplies
            # these shapes faster as cols dy^T than as dy cols^T: 3.4-3.9 ms against 4.2-4.9)
            parts = []
            threads.run_chunks(n_images, -(-n_images // threads.WORKERS), lambda worker, images: parts.append(
                np.matmul(cols[images], dy[images].transpose(0, 2, 1)).sum(axis=0)))
            dw.reshape(out_channels, -1)[...] = sum(parts[1:], parts[0]).T
            dcols = threads.matmul_each(weights.T, dy) if need_dx else None  # (N, C*kh*kw, Ho*Wo)
        else:  # the whole batch at once: dW = dY cols^T, dcols = W^T dY with dY (K, N*Ho*Wo)
            dy_stacked = dy.transpose(1, 0, 2).reshape(out_channels, -1)
            threads.matmul(dy_stacked, self._stacked(cols, x).T, out=dw.reshape(out_channels, -1))
            dcols = None
            if need_dx:
                dcols = threads.matmul(weights.T, dy_stacked).reshape(cols.shape[1], n_images, -1)
                dcols = np.ascontiguousarray(dcols.transpose(1, 0, 2))
        dx = None
        if need_dx:
            dx = np.empty_like(x)
            kernels.col2im(dcols, dx, w.shape[2], w.shape[3], self.stride, self.padding)
        return dx, dw, dy.sum(axis=(0, 2))


# ---------------------------------------------------------------------------- Winograd F(4x4, 3x3)

class Winograd:
    """3x3 "same" convolutions by Winograd's F(4x4, 3x3), the batch in chunks per core.
    Maps smaller than one 4x4 tile (VGG-19's last stage is 2x2) go to ``Taps``: Winograd
    saves nothing there, and its transformed filters, 4x the size of w, would cost most."""

    def __init__(self):
        self.scratch, self.small = Scratch(), Taps(1)
        self.U_of = None  # the w whose transform U is in scratch
        self.used = False  # whether the last forward took the Winograd path

    def applies(self, x):
        return min(x.shape[2:]) >= winograd.TILE

    def _chunks(self, x, w):
        """(tiles_h, tiles_w, images per chunk) for input x: chunks of about CHUNK_BYTES,
        and at least one per worker when the batch allows."""
        tiles_h, tiles_w = winograd.tile_grid(*x.shape[2:])
        per_worker = -(-x.shape[0] // threads.WORKERS)
        if 36 * w.shape[0] * w.shape[1] * w.itemsize > FILTER_BYTES:
            return tiles_h, tiles_w, per_worker  # each chunk's 36 products read all of U: as few chunks as can be
        per_image = 36 * max(w.shape[0], w.shape[1]) * tiles_h * tiles_w * x.itemsize
        return tiles_h, tiles_w, max(1, min(CHUNK_BYTES // per_image, per_worker))

    def _filters(self, w):
        U = self.scratch("U", (36, w.shape[0], w.shape[1]), w.dtype)  # G g G^T, (36, K, C)
        if self.U_of is not w:
            winograd.filter_transform(w, U)
            self.U_of = w
        return U

    def forward(self, x, w, b):
        self.used = self.applies(x)
        if not self.used:
            return self.small.forward(x, w, b)
        n_images, channels, height, width = x.shape
        out_channels = w.shape[0]
        tiles_h, tiles_w, chunk = self._chunks(x, w)
        self.U_of = None  # w may have changed since the last step: transform it afresh
        if 36 * w.shape[0] * w.shape[1] * w.itemsize <= FILTER_BYTES:
            # the transform of w^T is U^T in rows; the backward transforms w for U (36, K, C) itself
            U_T = self.scratch("U_T", (36, channels, out_channels), w.dtype)
            winograd.filter_transform(np.ascontiguousarray(w.transpose(1, 0, 2, 3)), U_T)
        else:
            U_T = self._filters(w).transpose(0, 2, 1)  # (36, C, K), a view
        y = np.empty((n_images, out_channels, height, width), x.dtype)

        def work(worker, images):
            tiles = (images.stop - images.start) * tiles_h * tiles_w
            V = self.scratch(f"V{worker}", (36, tiles, channels), x.dtype)          # B^T d B per tile
            M = self.scratch(f"M{worker}", (36, tiles, out_channels), x.dtype)
            winograd_tiles.input_transform(x[images], V, tiles_h, tiles_w)
            np.matmul(V, U_T, out=M)                                                # M_ξ = V_ξ U_ξ^T
            winograd_tiles.output_transform(M, b, y[images], tiles_h, tiles_w)           # A^T M A + b

        threads.run_chunks(n_images, chunk, work)
        return y

    def backward(self, dy, x, w, need_dx=True, dw=None):
        if not self.applies(x):
            return self.small.backward(dy, x, w, need_dx, dw)
        n_images, channels = x.shape[:2]
        out_channels = w.shape[0]
        tiles_h, tiles_w, chunk = self._chunks(x, w)
        U = self._filters(w)
        dU_parts = {}  # worker -> its running sum of dU over its chunks (36, K, C)
        bias_partial = np.empty((n_images, out_channels), x.dtype)
        dx = np.empty_like(x) if need_dx else None

        def work(worker, images):
            tiles = (images.stop - images.start) * tiles_h * tiles_w
            V = self.scratch(f"V{worker}", (36, tiles, channels), x.dtype)
            dM = self.scratch(f"M{worker}", (36, tiles, out_channels), x.dtype)
            winograd_tiles.input_transform(x[images], V, tiles_h, tiles_w)  # recomputed: cheaper than keeping V
            winograd_tiles.output_transform_adjoint(dy[images], dM, bias_partial[images], tiles_h, tiles_w)
            dM_T = dM.transpose(0, 2, 1)                              # (36, K, tiles)
            if worker in dU_parts:
                dU_chunk = self.scratch(f"dU_chunk{worker}", U.shape, x.dtype)
                np.matmul(dM_T, V, out=dU_chunk)                      # dU_ξ = dM_ξ^T V_ξ
                dU_parts[worker] += dU_chunk
            else:  # the worker's first chunk writes its sum directly
                dU_parts[worker] = np.matmul(dM_T, V, out=self.scratch(f"dU{worker}", U.shape, x.dtype))
            if need_dx:
                np.matmul(dM, U, out=V)                               # dV_ξ = dM_ξ U_ξ
                winograd_tiles.input_transform_adjoint(V, dx[images], tiles_h, tiles_w)

        threads.run_chunks(n_images, chunk, work)
        dU, *others = dU_parts.values()
        for part in others:  # 38 MB each for 512 channels, 2.7 ms to add on one thread: over the pool
            threads.elementwise(add_into, (dU.reshape(-1), part.reshape(-1)))
        dw = np.empty_like(w) if dw is None else dw
        winograd.filter_transform_adjoint(dU, dw)  # dg = G^T dU G
        return dx, dw, bias_partial.sum(axis=0)
