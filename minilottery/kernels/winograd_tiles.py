"""Winograd's transforms of the activations, B^T d B and A^T M A, and their adjoints.

winograd.py gives the algorithm (Lavin & Gray 2016, eq. 8): a 4x4 block of output is
A^T [(G g G^T) ⊙ (B^T d B)] A, summed over input channels as 36 matrix products
M_ξ = V_ξ U_ξ^T, one per position ξ of the 6x6 transformed tile. These kernels move the
activations in and out of that form, forward and backward:

    input_transform            x  -> V = B^T d B per tile          (N, C, H, W) -> (36, T, C)
    output_transform           M  -> y = A^T M A + b per tile       (36, T, K) -> (N, K, H, W)
    output_transform_adjoint   dy -> dM = A dY A^T per tile         (N, K, H, W) -> (36, T, K)
    input_transform_adjoint    dV -> dx = sum of B dV B^T per tile  (36, T, C) -> (N, C, H, W)

with the tile index t = (n * TH + th) * TW + tw. Each is a Numba kernel that runs on one
thread without the GIL: convolution.Winograd hands chunks of images to two threads, each
doing its chunk's input transform, its single-threaded matrix products and its output
transform in a row, which keeps both cores busy on the small products (64 x 64 x 192 for
Conv-2) and a chunk's V and M in its core's cache. Each has a NumPy twin (``_numpy``),
written with the matrices themselves; ``TWINS`` lists the pairs.
"""
import numpy as np

from . import jit_nogil, layout
from .winograd import A_T, ALPHA, B_T, TILE, _a, _a_t, _b, _b_t  # the matrices and their 1-D transforms


# ----------------------------------------------------------------------------- the layout
# The activation kernels vectorise across channels and across a whole row of tiles.
# Each works through its images one at a time: the image's (C, H, W) planes are first
# laid out channels-last by layout.py, with the columns grouped by their place in a
# tile (column p = 4u + g goes to group g, slot u), so that for every place g the
# pixels of one row of tiles are one contiguous run of TW x C values. Each pass of 1-D
# transforms then is a single loop over such runs, which LLVM turns into wide vector
# instructions: one loop per row of tiles and per row or column of the 6x6 tile, not
# one per tile. V and M hold a tile's channels contiguously too, V (36, T, C) and
# M (36, T, K), so the runs of V and M for one row of tiles are contiguous as well;
# the 36 products are M_ξ = V_ξ U_ξ^T, the same products with their operands transposed.
# (One (image, channel) plane at a time ran 2-11 ns per pixel and channel, the most on
# 8x8 maps; one tile at a time, looping over channels only, 1-2 ns, the most with 16
# channels.) V, M and their gradients must be C-contiguous.

# The output transform and the input transform's adjoint keep a 6 x 6 (or 4 x 6) block
# of runs between their two passes; they work through a row of tiles in segments of
# about this many values per run, so that the block stays in the L1 cache when C is large.
SEGMENT = 256


@jit_nogil
def input_transform(x, V, tiles_h, tiles_w):
    """V[6i + j, t, c] = (B^T d B)[i, j] for the 6x6 input tile d of tile t, channel c."""
    n_images, channels = x.shape[:2]
    tiles, span = tiles_h * tiles_w, tiles_w + 1
    run, group = tiles_w * channels, span * channels  # one row of tiles at one place; one place's group
    v = V.reshape((36, V.shape[1] * channels))
    padded = np.zeros((4 * tiles_h + 2, 4 * group), x.dtype)  # the "same" padding stays 0
    rows = np.empty((6, 4 * group), x.dtype)  # B^T d down every column of one row of tiles
    for n in range(n_images):
        layout.to_tile_columns(x[n], padded, 1, span)
        for th in range(tiles_h):
            top, start = 4 * th, (n * tiles + th * tiles_w) * channels
            d0, d1, d2, d3, d4, d5 = (padded[top], padded[top + 1], padded[top + 2], padded[top + 3],
                                      padded[top + 4], padded[top + 5])
            r0, r1, r2, r3, r4, r5 = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]
            for e in range(4 * group):
                r0[e], r1[e], r2[e], r3[e], r4[e], r5[e] = _b_t(d0[e], d1[e], d2[e], d3[e], d4[e], d5[e])
            for i in range(6):  # then B along the rows: tile tw's columns are places 0-3 of slot tw, 0-1 of tw + 1
                row = rows[i]
                s0, s1 = row[:run], row[group:group + run]
                s2, s3 = row[2 * group:2 * group + run], row[3 * group:3 * group + run]
                s4, s5 = row[channels:channels + run], row[group + channels:group + channels + run]
                tiles_here = slice(start, start + run)
                o0, o1, o2 = v[6 * i, tiles_here], v[6 * i + 1, tiles_here], v[6 * i + 2, tiles_here]
                o3, o4, o5 = v[6 * i + 3, tiles_here], v[6 * i + 4, tiles_here], v[6 * i + 5, tiles_here]
                for e in range(run):
                    o0[e], o1[e], o2[e], o3[e], o4[e], o5[e] = _b_t(s0[e], s1[e], s2[e], s3[e], s4[e], s5[e])


def input_transform_numpy(x, V, tiles_h, tiles_w):
    n_images, channels, height, width = x.shape
    padded = np.zeros((n_images, channels, 4 * tiles_h + 2, 4 * tiles_w + 2))
    padded[:, :, 1:height + 1, 1:width + 1] = x
    d = np.empty((n_images, channels, tiles_h, tiles_w, ALPHA, ALPHA))  # every 6x6 tile
    for a in range(ALPHA):
        for b in range(ALPHA):
            d[..., a, b] = padded[:, :, a:a + 4 * tiles_h:4, b:b + 4 * tiles_w:4]
    v = np.einsum("ia,ncuvab,jb->ijnuvc", B_T, d, B_T)
    V[...] = v.reshape(ALPHA * ALPHA, -1, channels)


@jit_nogil
def output_transform(M, bias, y, tiles_h, tiles_w):
    """y[n, k] = A^T M A + b[k], each tile's 4x4 block, cut at the image border."""
    n_images, out_channels = y.shape[:2]
    tiles, row_run = tiles_h * tiles_w, tiles_w * out_channels
    segment = max(1, SEGMENT // out_channels)  # tiles per pass
    m = M.reshape((36, M.shape[1] * out_channels))
    full = np.empty((4 * tiles_h, 4 * row_run), y.dtype)  # one image before cutting at H, W; columns grouped
    rows = np.empty((4, 6, segment * out_channels), y.dtype)  # A^T m down the six columns of a segment of tiles
    for n in range(n_images):
        for th in range(tiles_h):
            for tw0 in range(0, tiles_w, segment):
                run = min(segment, tiles_w - tw0) * out_channels
                start, at = (n * tiles + th * tiles_w + tw0) * out_channels, tw0 * out_channels
                tiles_here = slice(start, start + run)
                for b in range(6):  # m[a, b] = M[6a + b]
                    m0, m1, m2 = m[b, tiles_here], m[6 + b, tiles_here], m[12 + b, tiles_here]
                    m3, m4, m5 = m[18 + b, tiles_here], m[24 + b, tiles_here], m[30 + b, tiles_here]
                    r0, r1, r2, r3 = rows[0, b], rows[1, b], rows[2, b], rows[3, b]
                    for e in range(run):
                        r0[e], r1[e], r2[e], r3[e] = _a_t(m0[e], m1[e], m2[e], m3[e], m4[e], m5[e])
                for i in range(4):  # then A along each of the four rows: output column 4tw + g is place g of slot tw
                    q0, q1, q2, q3, q4, q5 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4], rows[i, 5]
                    line = full[4 * th + i]
                    o0, o1 = line[at:at + run], line[row_run + at:row_run + at + run]
                    o2 = line[2 * row_run + at:2 * row_run + at + run]
                    o3 = line[3 * row_run + at:3 * row_run + at + run]
                    for e in range(run):
                        o0[e], o1[e], o2[e], o3[e] = _a_t(q0[e], q1[e], q2[e], q3[e], q4[e], q5[e])
        layout.from_tile_columns(full, 0, tiles_w, bias, y[n])


def output_transform_numpy(M, bias, y, tiles_h, tiles_w):
    n_images, out_channels, height, width = y.shape
    m = M.reshape(ALPHA, ALPHA, n_images, tiles_h, tiles_w, out_channels)
    blocks = np.einsum("ia,abnuvk,jb->nkuivj", A_T, m, A_T)  # (N, K, TH, 4, TW, 4)
    full = blocks.reshape(n_images, out_channels, 4 * tiles_h, 4 * tiles_w)
    y[...] = full[:, :, :height, :width] + bias[:, None, None]


@jit_nogil
def output_transform_adjoint(dy, dM, bias_partial, tiles_h, tiles_w):
    """dM = A dY A^T per tile (dY is 0 beyond the image); bias_partial[n, k] = sum of dy[n, k]."""
    n_images, out_channels = dy.shape[:2]
    tiles, run = tiles_h * tiles_w, tiles_w * out_channels
    dm = dM.reshape((36, dM.shape[1] * out_channels))
    full = np.zeros((4 * tiles_h, 4 * run), dy.dtype)  # dY, columns grouped; stays 0 beyond the image
    rows = np.empty((6, 4, run), dy.dtype)  # A dY down the four columns of one row of tiles
    for n in range(n_images):
        layout.to_tile_columns(dy[n], full, 0, tiles_w)
        for k in range(out_channels):
            bias_partial[n, k] = dy[n, k].sum()
        for th in range(tiles_h):
            top, start = 4 * th, (n * tiles + th * tiles_w) * out_channels
            for j in range(4):
                column = slice(j * run, (j + 1) * run)
                y0, y1, y2, y3 = full[top, column], full[top + 1, column], full[top + 2, column], full[top + 3, column]
                r0, r1, r2, r3, r4, r5 = rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j], rows[5, j]
                for e in range(run):
                    r0[e], r1[e], r2[e], r3[e], r4[e], r5[e] = _a(y0[e], y1[e], y2[e], y3[e])
            for a in range(6):  # then A^T along each of the six rows: dM[6a + b]
                q0, q1, q2, q3 = rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3]
                tiles_here = slice(start, start + run)
                o0, o1, o2 = dm[6 * a, tiles_here], dm[6 * a + 1, tiles_here], dm[6 * a + 2, tiles_here]
                o3, o4, o5 = dm[6 * a + 3, tiles_here], dm[6 * a + 4, tiles_here], dm[6 * a + 5, tiles_here]
                for e in range(run):
                    o0[e], o1[e], o2[e], o3[e], o4[e], o5[e] = _a(q0[e], q1[e], q2[e], q3[e])


def output_transform_adjoint_numpy(dy, dM, bias_partial, tiles_h, tiles_w):
    n_images, out_channels, height, width = dy.shape
    full = np.zeros((n_images, out_channels, 4 * tiles_h, 4 * tiles_w))
    full[:, :, :height, :width] = dy
    blocks = full.reshape(n_images, out_channels, tiles_h, TILE, tiles_w, TILE)
    dm = np.einsum("ia,nkuivj,jb->abnuvk", A_T, blocks, A_T)
    dM[...] = dm.reshape(ALPHA * ALPHA, -1, out_channels)
    bias_partial[...] = dy.sum(axis=(2, 3))


@jit_nogil
def input_transform_adjoint(dV, dx, tiles_h, tiles_w):
    """dx = sum over tiles of B dV B^T, placed where each tile read x (tiles overlap by 2)."""
    n_images, channels = dx.shape[:2]
    tiles, span = tiles_h * tiles_w, tiles_w + 1
    group = span * channels
    segment = max(1, SEGMENT // channels)  # tiles per pass
    dv = dV.reshape((36, dV.shape[1] * channels))
    padded = np.empty((4 * tiles_h + 2, 4 * group), dx.dtype)  # dx with its padding, columns grouped
    rows = np.empty((6, 6, segment * channels), dx.dtype)  # B dV down the six columns of a segment of tiles
    spill4, spill5 = np.empty(segment * channels, dx.dtype), np.empty(segment * channels, dx.dtype)
    no_bias = np.zeros(channels, dx.dtype)
    for n in range(n_images):
        padded[...] = 0
        for th in range(tiles_h):
            for tw0 in range(0, tiles_w, segment):
                run = min(segment, tiles_w - tw0) * channels
                start, at = (n * tiles + th * tiles_w + tw0) * channels, tw0 * channels
                tiles_here = slice(start, start + run)
                for j in range(6):  # dV[i, j] = dV[6i + j]
                    v0, v1, v2 = dv[j, tiles_here], dv[6 + j, tiles_here], dv[12 + j, tiles_here]
                    v3, v4, v5 = dv[18 + j, tiles_here], dv[24 + j, tiles_here], dv[30 + j, tiles_here]
                    r0, r1, r2, r3, r4, r5 = rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j], rows[5, j]
                    for e in range(run):
                        r0[e], r1[e], r2[e], r3[e], r4[e], r5[e] = _b(v0[e], v1[e], v2[e], v3[e], v4[e], v5[e])
                for a in range(6):  # then B^T along each of the six rows, added where the tiles read x
                    q0, q1, q2, q3, q4, q5 = rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3], rows[a, 4], rows[a, 5]
                    line = padded[4 * th + a]
                    g0, g1 = line[at:at + run], line[group + at:group + at + run]
                    g2, g3 = line[2 * group + at:2 * group + at + run], line[3 * group + at:3 * group + at + run]
                    for e in range(run):
                        e0, e1, e2, e3, e4, e5 = _b(q0[e], q1[e], q2[e], q3[e], q4[e], q5[e])
                        g0[e] += e0
                        g1[e] += e1
                        g2[e] += e2
                        g3[e] += e3
                        spill4[e] = e4
                        spill5[e] = e5
                    # columns 4 and 5 of each tile are places 0 and 1 of the next slot; these runs
                    # overlap g0 and g1 one slot on, so they are added in a pass of their own
                    h0 = line[at + channels:at + channels + run]
                    h1 = line[group + at + channels:group + at + channels + run]
                    for e in range(run):
                        h0[e] += spill4[e]
                        h1[e] += spill5[e]
        layout.from_tile_columns(padded, 1, span, no_bias, dx[n])


def input_transform_adjoint_numpy(dV, dx, tiles_h, tiles_w):
    n_images, channels, height, width = dx.shape
    dv = dV.reshape(ALPHA, ALPHA, n_images, tiles_h, tiles_w, channels)
    dd = np.einsum("ia,ijnuvc,jb->ncuvab", B_T, dv, B_T)
    padded = np.zeros((n_images, channels, 4 * tiles_h + 2, 4 * tiles_w + 2))
    for a in range(ALPHA):
        for b in range(ALPHA):
            padded[:, :, a:a + 4 * tiles_h:4, b:b + 4 * tiles_w:4] += dd[..., a, b]
    dx[...] = padded[:, :, 1:height + 1, 1:width + 1]


TWINS = [
    (input_transform, input_transform_numpy),
    (output_transform, output_transform_numpy),
    (output_transform_adjoint, output_transform_adjoint_numpy),
    (input_transform_adjoint, input_transform_adjoint_numpy),
]
