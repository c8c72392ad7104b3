"""Convolution and pooling kernels (NCHW): im2col / col2im and 2x2 max-pooling.

im2col turns the receptive field of each output pixel of a convolution into a column,
so that the convolution is one matrix product per image, y[n] = W cols[n], done by BLAS
(``convolution.Im2col``); col2im, its adjoint, sums each column back onto the pixels it
was read from. The paper's max-pool is 2x2 with stride 2.

Each Numba kernel works in place, runs in parallel over (image, channel) planes,
and has a NumPy twin ``<name>_numpy`` of the same signature; ``TWINS`` lists them.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel


@jit
def output_size(size, kernel, stride, padding):
    """Number of output positions along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def output_shape(x, w, stride, padding):
    """(N, K, Ho, Wo) of the convolution of x (N, C, H, W) with w (K, C, kh, kw)."""
    out_h = output_size(x.shape[2], w.shape[2], stride, padding)
    out_w = output_size(x.shape[3], w.shape[3], stride, padding)
    return x.shape[0], w.shape[0], out_h, out_w  # (N, K, Ho, Wo)


# ----------------------------------------------------------------------------- im2col

@jit_parallel
def im2col(x, cols, kernel_h, kernel_w, stride, padding):
    """cols[n, (c*kh + a)*kw + b, i*Wo + j] = x[n, c, s*i + a - p, s*j + b - p] (0 outside x)."""
    n_images, channels, height, width = x.shape
    out_w = output_size(width, kernel_w, stride, padding)
    out_h = cols.shape[2] // out_w
    zero = x.dtype.type(0)
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        for a in range(kernel_h):
            for b in range(kernel_w):
                row = (c * kernel_h + a) * kernel_w + b
                for i in range(out_h):
                    r = stride * i + a - padding
                    for j in range(out_w):
                        col = stride * j + b - padding
                        inside = 0 <= r < height and 0 <= col < width
                        cols[n, row, i * out_w + j] = x[n, c, r, col] if inside else zero


def im2col_numpy(x, cols, kernel_h, kernel_w, stride, padding):
    n_images, channels, height, width = x.shape
    out_h, out_w = output_size(height, kernel_h, stride, padding), output_size(width, kernel_w, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    view = cols.reshape(n_images, channels, kernel_h, kernel_w, out_h, out_w)
    for a in range(kernel_h):
        for b in range(kernel_w):
            view[:, :, a, b] = padded[:, :, a:a + stride * out_h:stride, b:b + stride * out_w:stride]


@jit_parallel
def col2im(cols, dx, kernel_h, kernel_w, stride, padding):
    """The adjoint of im2col: dx[n, c, r, col] = sum of every cols entry that was read from it."""
    n_images, channels, height, width = dx.shape
    out_w = output_size(width, kernel_w, stride, padding)
    out_h = cols.shape[2] // out_w
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        dx[n, c] = 0
        for a in range(kernel_h):
            for b in range(kernel_w):
                row = (c * kernel_h + a) * kernel_w + b
                for i in range(out_h):
                    r = stride * i + a - padding
                    if 0 <= r < height:
                        for j in range(out_w):
                            col = stride * j + b - padding
                            if 0 <= col < width:
                                dx[n, c, r, col] += cols[n, row, i * out_w + j]


def col2im_numpy(cols, dx, kernel_h, kernel_w, stride, padding):
    n_images, channels, height, width = dx.shape
    out_h, out_w = output_size(height, kernel_h, stride, padding), output_size(width, kernel_w, stride, padding)
    padded = np.zeros((n_images, channels, height + 2 * padding + stride, width + 2 * padding + stride), dx.dtype)
    view = cols.reshape(n_images, channels, kernel_h, kernel_w, out_h, out_w)
    for a in range(kernel_h):
        for b in range(kernel_w):
            padded[:, :, a:a + stride * out_h:stride, b:b + stride * out_w:stride] += view[:, :, a, b]
    dx[...] = padded[:, :, padding:padding + height, padding:padding + width]


# ----------------------------------------------------------------------------- max-pooling

@jit_parallel
def maxpool_forward(x, y, argmax, size):
    """y = max over each size x size window (stride = size); argmax = a*size + b of the winner."""
    n_images, channels, out_h, out_w = y.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        for i in range(out_h):
            for j in range(out_w):
                best, where = x[n, c, size * i, size * j], 0
                for a in range(size):
                    for b in range(size):
                        value = x[n, c, size * i + a, size * j + b]
                        if value > best:
                            best, where = value, a * size + b
                y[n, c, i, j] = best
                argmax[n, c, i, j] = where


def maxpool_forward_numpy(x, y, argmax, size):
    n_images, channels, out_h, out_w = y.shape
    windows = x[:, :, :size * out_h, :size * out_w].reshape(n_images, channels, out_h, size, out_w, size)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(n_images, channels, out_h, out_w, size * size)
    argmax[...] = windows.argmax(axis=-1)  # the first maximum, like the loop's strict ">"
    y[...] = windows.max(axis=-1)


@jit_parallel
def maxpool_backward(dy, argmax, dx, size):
    """The gradient flows only to each window's maximum; the rest of dx is 0."""
    n_images, channels, out_h, out_w = dy.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        dx[n, c] = 0
        for i in range(out_h):
            for j in range(out_w):
                where = argmax[n, c, i, j]
                dx[n, c, size * i + where // size, size * j + where % size] = dy[n, c, i, j]


def maxpool_backward_numpy(dy, argmax, dx, size):
    n_images, channels, out_h, out_w = dy.shape
    onehot = np.arange(size * size) == argmax[..., None]  # (N, C, Ho, Wo, size*size)
    windows = (onehot * dy[..., None]).reshape(n_images, channels, out_h, out_w, size, size)
    dx[...] = 0
    dx[:, :, :size * out_h, :size * out_w] = windows.transpose(0, 1, 2, 4, 3, 5).reshape(
        n_images, channels, size * out_h, size * out_w)

TWINS = [
    (im2col, im2col_numpy),
    (col2im, col2im_numpy),
    (maxpool_forward, maxpool_forward_numpy),
    (maxpool_backward, maxpool_backward_numpy),
]
