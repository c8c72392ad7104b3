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

A transposition reads along one layout and writes across the other. It goes in blocks of
8 channels x 8 columns (``transpose_block`` in kernels/registers.py): eight rows of 8 values
are loaded as vectors, transposed in registers by 24 shuffles, and stored as eight vectors.
Element by element, with the block's constant trip counts unrolled, a copy took 0.5 ns per
value here, more than half of Winograd's input and output transforms; by shuffles ~0.2
(to_tile_columns of a 16-channel 32x32 image: 8.4 -> 3.4 us; 32 channels 16x16: 4.6 -> 2.3
us). One channel at a time took 0.6-2.8 ns, the most when C makes the stride between a
pixel's values a large power of two (C = 128, 256). Channels and columns beyond the last
whole block are copied one by one.
"""
import numpy as np

from . import jit
from .registers import BLOCK, transpose_block


@jit
def slot(p, span):
    return (p & 3) * span + (p >> 2)


@jit
def to_tile_columns(planes, out, offset, span):
    """out[offset + r, slot(offset + col) * C + c] = planes[c, r, col];
    planes (C, H, W), out (H', 4 span C), C-contiguous."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    source, dest = np.ascontiguousarray(planes).reshape(-1), out.reshape(-1)
    line = out.shape[1]
    rows, columns = np.empty(BLOCK, np.int64), np.empty(BLOCK, np.int64)
    no_bias = np.zeros(BLOCK, out.dtype)
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            for w0 in range(0, full_w, BLOCK):  # 8 channels' rows of 8 pixels -> 8 pixels' runs of 8 channels
                for i in range(BLOCK):
                    rows[i] = ((c0 + i) * height + r) * width + w0
                    columns[i] = (offset + r) * line + slot(offset + w0 + i, span) * channels + c0
                transpose_block(source, rows, dest, columns, no_bias, 0)
            for col in range(full_w, width):
                at = slot(offset + col, span) * channels + c0
                for a in range(BLOCK):
                    out[offset + r, at + a] = planes[c0 + a, r, col]
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
    src (H', 4 span K) and planes (K, H, W) C-contiguous."""
    channels, height, width = planes.shape
    full_c, full_w = channels - channels % BLOCK, width - width % BLOCK
    source, dest = src.reshape(-1), planes.reshape(-1)
    line = src.shape[1]
    columns, rows = np.empty(BLOCK, np.int64), np.empty(BLOCK, np.int64)
    for c0 in range(0, full_c, BLOCK):
        for r in range(height):
            for w0 in range(0, full_w, BLOCK):  # 8 pixels' runs of 8 channels -> 8 channels' rows of 8 pixels
                for i in range(BLOCK):
                    columns[i] = (offset + r) * line + slot(offset + w0 + i, span) * channels + c0
                    rows[i] = ((c0 + i) * height + r) * width + w0
                transpose_block(source, columns, dest, rows, bias, c0)
            for col in range(full_w, width):
                at = slot(offset + col, span) * channels + c0
                for a in range(BLOCK):
                    planes[c0 + a, r, col] = src[offset + r, at + a] + bias[c0 + a]
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
