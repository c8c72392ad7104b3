"""Winograd's minimal filtering F(4x4, 3x3): the fast path of every 3x3, stride-1 "same" convolution.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), after
Winograd (1980). A 4x4 block of a 3x3 convolution's output is computed from the 6x6
input tile d that covers it and the 3x3 filter g as

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A                       (Lavin & Gray, eq. 8)

with the constant matrices below. Summed over input channels, the element-wise
product becomes 36 independent matrix products, one per position ξ of the 6x6
transformed tile:

    M_ξ = U_ξ V_ξ,   U_ξ: (K, C) transformed filters,   V_ξ: (C, T) transformed tiles

which cost 36 multiply-adds per tile and channel pair instead of 16 * 9 = 144 for the
direct convolution: 4x fewer, done by BLAS. Because the whole computation is linear,
its gradient runs the same transforms transposed (the adjoint), which is what the
backward pass does:

    dM = A dY A^T     dU_ξ = dM_ξ V_ξ^T    dg = G^T dU G
                      dV_ξ = U_ξ^T dM_ξ    dd = B dV B^T (tiles overlap, so dd adds up)

Layouts: x (N, C, H, W); V (36, C, T) and M (36, K, T) with the tile index
t = (n * TH + th) * TW + tw over a TH x TW grid of 4x4 output tiles. Tile (th, tw)
reads input rows 4th-1 .. 4th+4 (the "same" padding of 1); pixels outside the
image read as 0, and outputs beyond H or W are dropped, so H and W need not be
multiples of 4.

The Numba kernels for the activations spell each matrix product out as the sums it
reduces to (most entries of B and A are 0 or ±1); their NumPy twins use the matrices
themselves, so the twin tests also check the spelled-out coefficients. The filter
transform, applied to every 3x3 weight once per step, is one BLAS product with G ⊗ G.
"""
import numba
import numpy as np

from . import FASTMATH, jit, layout

# The activation transforms below run on one thread each and without the GIL: conv.py
# hands chunks of images to two threads, each doing its chunk's input transform, its
# single-threaded matrix products and its output transform in a row. That keeps both
# cores busy on the small products (64 x 64 x 192 for Conv-2), where OpenBLAS's own two
# threads gain little, and keeps a chunk's V and M in its core's cache.
jit_nogil = numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True)

TILE, ALPHA = 4, 6  # output tile m = 4; input tile alpha = m + r - 1 = 6 for a 3x3 filter r = 3

B_T = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=np.float64)


def tile_grid(height, width):
    """(TH, TW): how many 4x4 output tiles cover an H x W output."""
    return -(-height // TILE), -(-width // TILE)


# ----------------------------------------------------------------------------- 1-D transforms
# Each is one small matrix-vector product written out. Constants are made with
# type(d)(...) so that float32 arithmetic stays float32 (a bare 4.0 is a float64).

@jit
def _b_t(d0, d1, d2, d3, d4, d5):
    """B^T d: 6 -> 6."""
    two, four, five = type(d0)(2), type(d0)(4), type(d0)(5)
    return (four * d0 - five * d2 + d4,
            d3 + d4 - four * (d1 + d2),
            four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4,
            two * (d1 - d3) - d2 + d4,
            four * d1 - five * d3 + d5)


@jit
def _b(v0, v1, v2, v3, v4, v5):
    """B v, the transpose of _b_t: 6 -> 6."""
    two, four, five = type(v0)(2), type(v0)(4), type(v0)(5)
    return (four * v0,
            four * (v2 - v1 + v5) + two * (v4 - v3),
            -five * v0 - four * (v1 + v2) - v3 - v4,
            v1 - v2 + two * (v3 - v4) - five * v5,
            v0 + v1 + v2 + v3 + v4,
            v5)


@jit
def _a_t(m0, m1, m2, m3, m4, m5):
    """A^T m: 6 -> 4."""
    two, four, eight = type(m0)(2), type(m0)(4), type(m0)(8)
    plus, minus = m1 + m2, m1 - m2
    return (m0 + plus + m3 + m4,
            minus + two * (m3 - m4),
            plus + four * (m3 + m4),
            minus + eight * (m3 - m4) + m5)


@jit
def _a(y0, y1, y2, y3):
    """A y, the transpose of _a_t: 4 -> 6."""
    two, four, eight = type(y0)(2), type(y0)(4), type(y0)(8)
    even, odd = y0 + four * y2, two * y1 + eight * y3
    return (y0,
            y0 + y1 + y2 + y3,
            y0 - y1 + y2 - y3,
            even + odd,
            even - odd,
            y3)


# ----------------------------------------------------------------------------- filters

# U_ξ for ξ = 6i + j is sum over (a, b) of G[i, a] G[j, b] g[a, b]: row ξ of G ⊗ G
# (Kronecker product, 36 x 9) times the filter's 9 weights. So the transform of all
# K * C filters is one matrix product, and its adjoint the transposed one.
G_KRON = {np.dtype(np.float32): np.kron(G, G).astype(np.float32), np.dtype(np.float64): np.kron(G, G)}


def filter_transform(g, U):
    """U[6i + j, k, c] = (G g G^T)[i, j] for every filter g = w[k, c] (3x3), as U = (G ⊗ G) g."""
    np.matmul(G_KRON[g.dtype], g.reshape(-1, 9).T, out=U.reshape(36, -1))


def filter_transform_numpy(g, U):
    u = np.einsum("ia,kcab,jb->ijkc", G, g, G)
    U[...] = u.reshape(ALPHA * ALPHA, *g.shape[:2])


def filter_transform_adjoint_numpy(dU, dg):
    du = dU.reshape(ALPHA, ALPHA, *dg.shape[:2])
    dg[...] = np.einsum("ia,ijkc,jb->kcab", G, du, G)


def filter_transform_adjoint(dU, dg):
    """dg[k, c] = G^T dU G, the gradient of filter_transform: dg = (G ⊗ G)^T dU."""
    np.matmul(dU.reshape(36, -1).T, G_KRON[dg.dtype], out=dg.reshape(-1, 9))


# ----------------------------------------------------------------------------- activations (Numba)
# The activation kernels vectorise across channels. Each works through its images one
# at a time: the image's (C, H, W) planes are first laid out channels-last, (H, W, C),
# by layout.py's blocked transposition, so that every pixel of a 6x6 tile is a
# contiguous vector of C values; each 1-D transform below then runs as one loop over
# channels, which LLVM turns into wide vector instructions. V and M hold a tile's
# channels contiguously too: V (36, T, C), M (36, T, K), so the 36 products are
# M_ξ = V_ξ U_ξ^T, the same products with their operands transposed.
# (Transforming one (image, channel) plane at a time, with loops over its few tiles,
# ran 2-11 ns per pixel and channel, the most on 8x8 maps; this runs ~1.)

@jit_nogil
def input_transform(x, V, tiles_h, tiles_w):
    """V[6i + j, t, c] = (B^T d B)[i, j] for the 6x6 input tile d of tile t, channel c."""
    n_images, channels = x.shape[:2]
    tiles = tiles_h * tiles_w
    padded = np.zeros((4 * tiles_h + 2, 4 * tiles_w + 2, channels), x.dtype)  # the "same" padding stays 0
    rows = np.empty((6, 6, channels), x.dtype)  # B^T d, one tile: rows[i, b] = sum_a B^T[i, a] d[a, b]
    for n in range(n_images):
        layout.to_channels_last(x[n], padded, 1)
        for th in range(tiles_h):
            for tw in range(tiles_w):
                top, left, t = 4 * th, 4 * tw, n * tiles + th * tiles_w + tw
                for b in range(6):  # B^T down each of the tile's six columns
                    d0, d1, d2 = padded[top, left + b], padded[top + 1, left + b], padded[top + 2, left + b]
                    d3, d4, d5 = padded[top + 3, left + b], padded[top + 4, left + b], padded[top + 5, left + b]
                    r0, r1, r2, r3, r4, r5 = rows[0, b], rows[1, b], rows[2, b], rows[3, b], rows[4, b], rows[5, b]
                    for c in range(channels):
                        r0[c], r1[c], r2[c], r3[c], r4[c], r5[c] = _b_t(d0[c], d1[c], d2[c], d3[c], d4[c], d5[c])
                for i in range(6):  # then B along each of its six rows
                    r0, r1, r2, r3, r4, r5 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4], rows[i, 5]
                    v0, v1, v2, v3, v4, v5 = (V[6 * i, t], V[6 * i + 1, t], V[6 * i + 2, t],
                                              V[6 * i + 3, t], V[6 * i + 4, t], V[6 * i + 5, t])
                    for c in range(channels):
                        v0[c], v1[c], v2[c], v3[c], v4[c], v5[c] = _b_t(r0[c], r1[c], r2[c], r3[c], r4[c], r5[c])


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
    tiles = tiles_h * tiles_w
    full = np.empty((4 * tiles_h, 4 * tiles_w, out_channels), y.dtype)  # one image before cutting at H, W
    rows = np.empty((4, 6, out_channels), y.dtype)  # A^T m, one tile: rows[i, b] = sum_a A^T[i, a] m[a, b]
    for n in range(n_images):
        for th in range(tiles_h):
            for tw in range(tiles_w):
                top, left, t = 4 * th, 4 * tw, n * tiles + th * tiles_w + tw
                for b in range(6):  # A^T down each of the tile's six columns, m[a, b] = M[6a + b]
                    m0, m1, m2 = M[b, t], M[6 + b, t], M[12 + b, t]
                    m3, m4, m5 = M[18 + b, t], M[24 + b, t], M[30 + b, t]
                    r0, r1, r2, r3 = rows[0, b], rows[1, b], rows[2, b], rows[3, b]
                    for k in range(out_channels):
                        r0[k], r1[k], r2[k], r3[k] = _a_t(m0[k], m1[k], m2[k], m3[k], m4[k], m5[k])
                for i in range(4):  # then A along each of its four rows
                    r0, r1, r2, r3, r4, r5 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3], rows[i, 4], rows[i, 5]
                    o0, o1, o2, o3 = full[top + i, left], full[top + i, left + 1], full[top + i, left + 2], full[top + i, left + 3]
                    for k in range(out_channels):
                        o0[k], o1[k], o2[k], o3[k] = _a_t(r0[k], r1[k], r2[k], r3[k], r4[k], r5[k])
        layout.to_planes(full, 0, bias, y[n])


def output_transform_numpy(M, bias, y, tiles_h, tiles_w):
    n_images, out_channels, height, width = y.shape
    m = M.reshape(ALPHA, ALPHA, n_images, tiles_h, tiles_w, out_channels)
    blocks = np.einsum("ia,abnuvk,jb->nkuivj", A_T, m, A_T)  # (N, K, TH, 4, TW, 4)
    full = blocks.reshape(n_images, out_channels, 4 * tiles_h, 4 * tiles_w)
    y[...] = full[:, :, :height, :width] + bias[:, None, None]


@jit_nogil
def output_transform_adjoint(dy, dM, bias_partial, tiles_h, tiles_w):
    """dM = A dY A^T per tile (dY is 0 beyond the image); bias_partial[n, k] = sum of dy[n, k]."""
    n_images, out_channels, height, width = dy.shape
    tiles = tiles_h * tiles_w
    full = np.zeros((4 * tiles_h, 4 * tiles_w, out_channels), dy.dtype)  # stays 0 beyond the image
    rows = np.empty((6, 4, out_channels), dy.dtype)  # A dY, one tile: rows[a, j] = sum_i A[a, i] dY[i, j]
    for n in range(n_images):
        layout.to_channels_last(dy[n], full, 0)
        for k in range(out_channels):
            bias_partial[n, k] = dy[n, k].sum()
        for th in range(tiles_h):
            for tw in range(tiles_w):
                top, left, t = 4 * th, 4 * tw, n * tiles + th * tiles_w + tw
                for j in range(4):  # A down each of the tile's four columns
                    y0, y1, y2, y3 = full[top, left + j], full[top + 1, left + j], full[top + 2, left + j], full[top + 3, left + j]
                    r0, r1, r2, r3, r4, r5 = rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j], rows[5, j]
                    for k in range(out_channels):
                        r0[k], r1[k], r2[k], r3[k], r4[k], r5[k] = _a(y0[k], y1[k], y2[k], y3[k])
                for a in range(6):  # then A^T along each of its six rows: dM[6a + b]
                    r0, r1, r2, r3 = rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3]
                    m0, m1, m2 = dM[6 * a, t], dM[6 * a + 1, t], dM[6 * a + 2, t]
                    m3, m4, m5 = dM[6 * a + 3, t], dM[6 * a + 4, t], dM[6 * a + 5, t]
                    for k in range(out_channels):
                        m0[k], m1[k], m2[k], m3[k], m4[k], m5[k] = _a(r0[k], r1[k], r2[k], r3[k])


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
    tiles = tiles_h * tiles_w
    padded = np.empty((4 * tiles_h + 2, 4 * tiles_w + 2, channels), dx.dtype)
    rows = np.empty((6, 6, channels), dx.dtype)  # B dV, one tile: rows[a, j] = sum_i B[a, i] dV[i, j]
    no_bias = np.zeros(channels, dx.dtype)
    for n in range(n_images):
        padded[...] = 0
        for th in range(tiles_h):
            for tw in range(tiles_w):
                top, left, t = 4 * th, 4 * tw, n * tiles + th * tiles_w + tw
                for j in range(6):  # B down each of the tile's six columns, dV[i, j] = dV[6i + j]
                    v0, v1, v2 = dV[j, t], dV[6 + j, t], dV[12 + j, t]
                    v3, v4, v5 = dV[18 + j, t], dV[24 + j, t], dV[30 + j, t]
                    r0, r1, r2, r3, r4, r5 = rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j], rows[5, j]
                    for c in range(channels):
                        r0[c], r1[c], r2[c], r3[c], r4[c], r5[c] = _b(v0[c], v1[c], v2[c], v3[c], v4[c], v5[c])
                for a in range(6):  # then B^T along each of its six rows, added where the tile read x
                    r0, r1, r2, r3, r4, r5 = rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3], rows[a, 4], rows[a, 5]
                    out = padded[top + a, left:left + 6]
                    for c in range(channels):
                        e0, e1, e2, e3, e4, e5 = _b(r0[c], r1[c], r2[c], r3[c], r4[c], r5[c])
                        out[0, c] += e0
                        out[1, c] += e1
                        out[2, c] += e2
                        out[3, c] += e3
                        out[4, c] += e4
                        out[5, c] += e5
        layout.to_planes(padded, 1, no_bias, dx[n])


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
    (filter_transform, filter_transform_numpy),
    (filter_transform_adjoint, filter_transform_adjoint_numpy),
    (input_transform, input_transform_numpy),
    (output_transform, output_transform_numpy),
    (output_transform_adjoint, output_transform_adjoint_numpy),
    (input_transform_adjoint, input_transform_adjoint_numpy),
]
