"""Channels-last copies of NCHW images, for kernels that vectorise across channels.

minilottery's activations are NCHW: an image is C planes of H x W pixels. A kernel
that works on every channel of one pixel at a time (Winograd's tile transforms,
winograd.py) wants the transpose, (H, W, C), where a pixel's C values are contiguous.
These two copy one image between the layouts, optionally into the interior of a
larger array (the "same" padding of a convolution, or tiles that overhang the image):

    to_channels_last(planes, out, offset):  out[offset + r, offset + col, c] = planes[c, r, col]
    to_planes(src, offset, bias, planes):   planes[k, r, col] = src[offset + r, offset + col, k] + bias[k]

A transposition reads along one layout and writes across the other. Done in blocks of
8 channels x 8 columns, both sides touch only a few cache lines at a time and the
constant trip counts let LLVM unroll the block: ~0.2 ns per value here, against
0.6-2.8 ns for one channel at a time, the most when C makes the stride between a
pixel's values a large power of two (C = 128, 256).
"""
import numpy as np

from . import jit

BLOCK = 8


@jit
def to_channels_last(planes, out, offset):
    """out[offset + r, offset + col, c] = planes[c, r, col]; planes (C, H, W), out (H', W', C)."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            row = out[offset + r]
            for w0 in range(0, full_w, BLOCK):
                for b in range(BLOCK):
                    for a in range(BLOCK):
                        row[offset + w0 + b, c0 + a] = planes[c0 + a, r, w0 + b]
            for col in range(full_w, width):
                for a in range(BLOCK):
                    row[offset + col, c0 + a] = planes[c0 + a, r, col]
    for c in range(full_c, channels):
        for r in range(height):
            for col in range(width):
                out[offset + r, offset + col, c] = planes[c, r, col]


def to_channels_last_numpy(planes, out, offset):
    channels, height, width = planes.shape
    out[offset:offset + height, offset:offset + width] = planes.transpose(1, 2, 0)


@jit
def to_planes(src, offset, bias, planes):
    """planes[k, r, col] = src[offset + r, offset + col, k] + bias[k]; src (H', W', K), planes (K, H, W)."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            row = src[offset + r]
            for w0 in range(0, full_w, BLOCK):
                for a in range(BLOCK):
                    for b in range(BLOCK):
                        planes[c0 + a, r, w0 + b] = row[offset + w0 + b, c0 + a] + bias[c0 + a]
            for col in range(full_w, width):
                for a in range(BLOCK):
                    planes[c0 + a, r, col] = row[offset + col, c0 + a] + bias[c0 + a]
    for c in range(full_c, channels):
        for r in range(height):
            for col in range(width):
                planes[c, r, col] = src[offset + r, offset + col, c] + bias[c]


def to_planes_numpy(src, offset, bias, planes):
    channels, height, width = planes.shape
    planes[...] = src[offset:offset + height, offset:offset + width].transpose(2, 0, 1) + bias[:, None, None]


TWINS = [
    (to_channels_last, to_channels_last_numpy),
    (to_planes, to_planes_numpy),
]
