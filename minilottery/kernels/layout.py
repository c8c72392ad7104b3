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
8 channels x 8 columns (``transpose_block``): eight rows of 8 values are loaded as vectors,
transposed in registers by 24 shuffles, and stored as eight vectors. Element by element,
with the block's constant trip counts unrolled, a copy took 0.5 ns per value here, more
than half of Winograd's input and output transforms; by shuffles 0.19 (to_tile_columns
of a 16-channel 32x32 image: 8.1 -> 3.0 us; 32 channels 16x16: 4.4 -> 1.6 us). One
channel at a time took 0.6-2.8 ns, the most when C makes the stride between a pixel's
values a large power of two (C = 128, 256). Channels and columns beyond the last whole
block are copied one by one.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from . import jit

BLOCK = 8


def transpose_block(src, src_rows, dst, dst_rows, add, add_at):
    """dst[dst_rows[b] + a] = src[src_rows[a] + b] + add[add_at + b] for a, b < 8.

    An 8 x 8 block whose rows start anywhere in the flat array src, written as rows that
    start anywhere in the flat array dst: row b of the result is column b of the block,
    plus one value of ``add`` (a bias; zeros for a plain copy). Compiled, it is the vector
    loads, shuffles and stores of ``_transpose_block``; as plain Python (NUMBA_DISABLE_JIT=1)
    this loop.
    """
    block = np.stack([src[start:start + BLOCK] for start in src_rows[:BLOCK]])
    for b in range(BLOCK):
        dst[dst_rows[b]:dst_rows[b] + BLOCK] = block[:, b] + add[add_at + b]


# The 8 x 8 transpose as the three rounds of two-vector shuffles AVX code uses (unpack,
# shuffle, 128-bit permute): rows interleave their values in pairs, then pairs of values,
# then halves. Indices 0-7 pick from the first vector, 8-15 from the second.
_VALUES = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
_PAIRS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])


@intrinsic
def _transpose_block(typingctx, src, src_rows, dst, dst_rows, add, add_at):
    """transpose_block compiled: 8 vector loads, 24 shuffles, 8 vector adds and 8 stores."""
    def codegen(context, builder, signature, args):
        src_array, src_rows_array, dst_array, dst_rows_array, add_array = (
            context.make_array(kind)(context, builder, value) for kind, value in zip(signature.args[:5], args[:5]))
        element = context.get_value_type(signature.args[0].dtype)
        vector, index = ir.VectorType(element, BLOCK), ir.IntType(64)
        align = context.get_abi_sizeof(element)

        def vector_at(array, rows_array, k):  # array[rows[k]:rows[k] + 8] as one vector
            start = builder.load(builder.gep(rows_array.data, [ir.Constant(index, k)]))
            return builder.bitcast(builder.gep(array.data, [start]), vector.as_pointer())

        def shuffle(pair, orders):
            mask = [ir.Constant(ir.VectorType(ir.IntType(32), BLOCK), order) for order in orders]
            return [builder.shuffle_vector(pair[0], pair[1], m) for m in mask]

        r = [builder.load(vector_at(src_array, src_rows_array, a), align=align) for a in range(BLOCK)]
        t = [v for k in range(0, BLOCK, 2) for v in shuffle((r[k], r[k + 1]), _VALUES)]
        u = [v for k in (0, 1, 4, 5) for v in shuffle((t[k], t[k + 2]), _PAIRS)]
        columns = [None] * BLOCK
        for k in range(4):
            columns[k], columns[k + 4] = shuffle((u[k], u[k + 4]), _HALVES)
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), BLOCK), [0] * BLOCK)
        for b in range(BLOCK):
            value = builder.load(builder.gep(add_array.data, [builder.add(args[5], ir.Constant(index, b))]))
            one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
            total = builder.fadd(columns[b], builder.shuffle_vector(one, one, zeros))
            builder.store(total, vector_at(dst_array, dst_rows_array, b), align=align)
        return context.get_dummy_value()

    return types.void(src, src_rows, dst, dst_rows, add, types.int64), codegen


@overload(transpose_block)
def _transpose_block_compiled(src, src_rows, dst, dst_rows, add, add_at):
    def block(src, src_rows, dst, dst_rows, add, add_at):
        _transpose_block(src, src_rows, dst, dst_rows, add, add_at)
    return block


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
