"""Channels-last copies of NCHW images with columns grouped by their place in a tile.

minilottery's activations are NCHW: an image is C planes of H x W pixels. Winograd's
tile transforms (winograd_tiles.py) work on every channel of a pixel at once, and on a
whole row of 4-pixel-wide tiles at once, so they want each image as rows of

    out[r, slot(p) * C + c] = image[c, r, p],   slot(p) = (p % 4) * span + p // 4

channels-last, with column p = 4u + g moved to slot u of group g: the g-th columns of
all the tiles of a row lie side by side, span * C values per group. (span is the
number of tiles across, plus one when the columns include the padding of a "same"
convolution.) These two copy one image into such rows and back, optionally into the
interior of a larger array (``offset`` rows and columns of padding before the image):

    to_tile_columns(planes, out, offset, span):
        out[offset + r, slot(offset + col) * C + c] = planes[c, r, col]
    from_tile_columns(src, offset, span, bias, planes):
        planes[k, r, col] = src[offset + r, slot(offset + col) * K + k] + bias[k]

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
def slot(p, span):
    return (p & 3) * span + (p >> 2)


@jit
def to_tile_columns(planes, out, offset, span):
    """out[offset + r, slot(offset + col) * C + c] = planes[c, r, col];
    planes (C, H, W), out (H', 4 span C)."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            row = out[offset + r]
            for w0 in range(0, full_w, BLOCK):
                for b in range(BLOCK):
                    at = slot(offset + w0 + b, span) * channels + c0
                    for a in range(BLOCK):
                        row[at + a] = planes[c0 + a, r, w0 + b]
            for col in range(full_w, width):
                at = slot(offset + col, span) * channels + c0
                for a in range(BLOCK):
                    row[at + a] = planes[c0 + a, r, col]
    for c in range(full_c, channels):
        for r in range(height):
            for col in range(width):
                out[offset + r, slot(offset + col, span) * channels + c] = planes[c, r, col]


def to_tile_columns_numpy(planes, out, offset, span):
    channels, height, width = planes.shape
    p = offset + np.arange(width)
    slots = (p % 4) * span + p // 4
    grouped = out[offset:offset + height].reshape(height, -1, channels)  # (H, slots, C), a view of out
    grouped[:, slots] = planes.transpose(1, 2, 0)


@jit
def from_tile_columns(src, offset, span, bias, planes):
    """planes[k, r, col] = src[offset + r, slot(offset + col) * K + k] + bias[k];
    src (H', 4 span K), planes (K, H, W)."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            row = src[offset + r]
            for w0 in range(0, full_w, BLOCK):
                for a in range(BLOCK):
                    for b in range(BLOCK):
                        planes[c0 + a, r, w0 + b] = row[slot(offset + w0 + b, span) * channels + c0 + a] + bias[c0 + a]
            for col in range(full_w, width):
                at = slot(offset + col, span) * channels + c0
                for a in range(BLOCK):
                    planes[c0 + a, r, col] = row[at + a] + bias[c0 + a]
    for c in range(full_c, channels):
        for r in range(height):
            for col in range(width):
                planes[c, r, col] = src[offset + r, slot(offset + col, span) * channels + c] + bias[c]


def from_tile_columns_numpy(src, offset, span, bias, planes):
    channels, height, width = planes.shape
    p = offset + np.arange(width)
    slots = (p % 4) * span + p // 4
    grouped = src[offset:offset + height].reshape(height, -1, channels)[:, slots]  # (H, W, K)
    planes[...] = grouped.transpose(2, 0, 1) + bias[:, None, None]


TWINS = [
    (to_tile_columns, to_tile_columns_numpy),
    (from_tile_columns, from_tile_columns_numpy),
]
