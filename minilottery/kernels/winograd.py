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

from . import FASTMATH, jit

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
# Each kernel works on one (image, channel) plane at a time, on the calling thread.
# A 6x6 tile transform is two passes of 1-D transforms, one along rows and one down
# columns, each over a whole row of tiles so that the inner loop runs over tiles.
# A plane's 36 x P transformed values (P = TH * TW tiles) live in a small local
# block that is copied to or from V or M in 36 contiguous runs: writing the 36
# positions of each tile straight into V costs 3-4x more.

@jit_nogil
def input_transform(x, V, tiles_h, tiles_w):
    """V[6i + j, c, t] = (B^T d B)[i, j] for the 6x6 input tile d of tile t, channel c.

    The padded plane is kept with its columns grouped by their place in a tile,
    q[r, b * (TW + 1) + u] = padded[r, 4u + b], so that B^T down the columns runs over
    contiguous memory and tile tw finds its six columns at u = tw (b = 0..3) and
    u = tw + 1 (b = 0, 1); 5-20% faster than reading six neighbours per tile.
    """
    n_images, channels, height, width = x.shape
    tiles, span = tiles_h * tiles_w, tiles_w + 1
    q = np.zeros((4 * tiles_h + 2, 4 * span), x.dtype)  # the "same" padding of 1 stays 0
    rows = np.empty((6, 4 * span), x.dtype)               # B^T d for one row of tiles, in q's column order
    block = np.empty((36, tiles), x.dtype)
    for plane in range(n_images * channels):
        n, c = plane // channels, plane % channels
        for r in range(height):
            for col in range(width):
                p = col + 1
                q[r + 1, (p & 3) * span + (p >> 2)] = x[n, c, r, col]
        for th in range(tiles_h):
            top = 4 * th
            for e in range(4 * span):
                e0, e1, e2, e3, e4, e5 = _b_t(q[top, e], q[top + 1, e], q[top + 2, e],
                                              q[top + 3, e], q[top + 4, e], q[top + 5, e])
                rows[0, e], rows[1, e], rows[2, e], rows[3, e], rows[4, e], rows[5, e] = e0, e1, e2, e3, e4, e5
            for i in range(6):
                for tw in range(tiles_w):
                    e0, e1, e2, e3, e4, e5 = _b_t(rows[i, tw], rows[i, span + tw], rows[i, 2 * span + tw],
                                                  rows[i, 3 * span + tw], rows[i, tw + 1], rows[i, span + tw + 1])
                    t = th * tiles_w + tw
                    block[6 * i, t], block[6 * i + 1, t], block[6 * i + 2, t] = e0, e1, e2
                    block[6 * i + 3, t], block[6 * i + 4, t], block[6 * i + 5, t] = e3, e4, e5
        for xi in range(36):
            V[xi, c, n * tiles:(n + 1) * tiles] = block[xi]


def input_transform_numpy(x, V, tiles_h, tiles_w):
    n_images, channels, height, width = x.shape
    padded = np.zeros((n_images, channels, 4 * tiles_h + 2, 4 * tiles_w + 2))
    padded[:, :, 1:height + 1, 1:width + 1] = x
    d = np.empty((n_images, channels, tiles_h, tiles_w, ALPHA, ALPHA))  # every 6x6 tile
    for a in range(ALPHA):
        for b in range(ALPHA):
            d[..., a, b] = padded[:, :, a:a + 4 * tiles_h:4, b:b + 4 * tiles_w:4]
    v = np.einsum("ia,ncuvab,jb->ijcnuv", B_T, d, B_T)
    V[...] = v.reshape(ALPHA * ALPHA, channels, -1)


@jit_nogil
def output_transform(M, bias, y, tiles_h, tiles_w):
    """y[n, k] = A^T M A + b[k], each tile's 4x4 block, cut at the image border."""
    n_images, out_channels, height, width = y.shape
    tiles = tiles_h * tiles_w
    for plane in range(n_images * out_channels):
        n, k = plane // out_channels, plane % out_channels
        block = np.empty((36, tiles), y.dtype)
        for xi in range(36):
            block[xi] = M[xi, k, n * tiles:(n + 1) * tiles]
        rows = np.empty((6, 4 * tiles_w), y.dtype)  # m A along each of the 6 rows of a tile row
        full = np.empty((4 * tiles_h, 4 * tiles_w), y.dtype)  # the plane before cutting at H, W
        for th in range(tiles_h):
            for i in range(6):
                for tw in range(tiles_w):
                    s, t = 4 * tw, th * tiles_w + tw
                    e0, e1, e2, e3 = _a_t(block[6 * i, t], block[6 * i + 1, t], block[6 * i + 2, t],
                                          block[6 * i + 3, t], block[6 * i + 4, t], block[6 * i + 5, t])
                    rows[i, s], rows[i, s + 1], rows[i, s + 2], rows[i, s + 3] = e0, e1, e2, e3
            top = 4 * th
            for col in range(4 * tiles_w):
                e0, e1, e2, e3 = _a_t(rows[0, col], rows[1, col], rows[2, col],
                                      rows[3, col], rows[4, col], rows[5, col])
                full[top, col], full[top + 1, col], full[top + 2, col], full[top + 3, col] = e0, e1, e2, e3
        for r in range(height):
            for col in range(width):
                y[n, k, r, col] = full[r, col] + bias[k]


def output_transform_numpy(M, bias, y, tiles_h, tiles_w):
    n_images, out_channels, height, width = y.shape
    m = M.reshape(ALPHA, ALPHA, out_channels, n_images, tiles_h, tiles_w)
    blocks = np.einsum("ia,abknuv,jb->nkuivj", A_T, m, A_T)  # (N, K, TH, 4, TW, 4)
    full = blocks.reshape(n_images, out_channels, 4 * tiles_h, 4 * tiles_w)
    y[...] = full[:, :, :height, :width] + bias[:, None, None]


@jit_nogil
def output_transform_adjoint(dy, dM, bias_partial, tiles_h, tiles_w):
    """dM = A dY A^T per tile (dY is 0 beyond the image); bias_partial[n, k] = sum of dy[n, k].

    The plane is copied with its columns grouped by their place in a tile,
    full[r, b * TW + tw] = dY[r, 4tw + b], so that both passes (A down the columns,
    then A along each row of a tile) run over tiles in contiguous memory: 30-35%
    faster than reading four neighbouring columns per tile.
    """
    n_images, out_channels, height, width = dy.shape
    tiles = tiles_h * tiles_w
    full = np.zeros((4 * tiles_h, 4 * tiles_w), dy.dtype)  # stays 0 beyond the image
    rows = np.empty((6, 4 * tiles_w), dy.dtype)  # A dY for one row of tiles, in full's column order
    block = np.empty((36, tiles), dy.dtype)
    for plane in range(n_images * out_channels):
        n, k = plane // out_channels, plane % out_channels
        total = dy.dtype.type(0)
        for r in range(height):
            for col in range(width):
                value = dy[n, k, r, col]
                full[r, (col & 3) * tiles_w + (col >> 2)] = value
                total += value
        bias_partial[n, k] = total
        for th in range(tiles_h):
            top = 4 * th
            for e in range(4 * tiles_w):
                e0, e1, e2, e3, e4, e5 = _a(full[top, e], full[top + 1, e], full[top + 2, e], full[top + 3, e])
                rows[0, e], rows[1, e], rows[2, e], rows[3, e], rows[4, e], rows[5, e] = e0, e1, e2, e3, e4, e5
            for i in range(6):
                for tw in range(tiles_w):
                    e0, e1, e2, e3, e4, e5 = _a(rows[i, tw], rows[i, tiles_w + tw],
                                                rows[i, 2 * tiles_w + tw], rows[i, 3 * tiles_w + tw])
                    t = th * tiles_w + tw
                    block[6 * i, t], block[6 * i + 1, t], block[6 * i + 2, t] = e0, e1, e2
                    block[6 * i + 3, t], block[6 * i + 4, t], block[6 * i + 5, t] = e3, e4, e5
        for xi in range(36):
            dM[xi, k, n * tiles:(n + 1) * tiles] = block[xi]


def output_transform_adjoint_numpy(dy, dM, bias_partial, tiles_h, tiles_w):
    n_images, out_channels, height, width = dy.shape
    full = np.zeros((n_images, out_channels, 4 * tiles_h, 4 * tiles_w))
    full[:, :, :height, :width] = dy
    blocks = full.reshape(n_images, out_channels, tiles_h, TILE, tiles_w, TILE)
    dm = np.einsum("ia,nkuivj,jb->abknuv", A_T, blocks, A_T)
    dM[...] = dm.reshape(ALPHA * ALPHA, out_channels, -1)
    bias_partial[...] = dy.sum(axis=(2, 3))


@jit_nogil
def input_transform_adjoint(dV, dx, tiles_h, tiles_w):
    """dx = sum over tiles of B dV B^T, placed where each tile read x (tiles overlap by 2)."""
    n_images, channels, height, width = dx.shape
    tiles = tiles_h * tiles_w
    for plane in range(n_images * channels):
        n, c = plane // channels, plane % channels
        block = np.empty((36, tiles), dx.dtype)
        for xi in range(36):
            block[xi] = dV[xi, c, n * tiles:(n + 1) * tiles]
        rows = np.empty((6, 4 * tiles_w + 2), dx.dtype)  # dV B^T along each of the 6 rows, overlaps summed
        padded = np.zeros((4 * tiles_h + 2, 4 * tiles_w + 2), dx.dtype)
        for th in range(tiles_h):
            rows[:, :2] = 0
            for i in range(6):
                for tw in range(tiles_w):
                    s, t = 4 * tw, th * tiles_w + tw
                    e0, e1, e2, e3, e4, e5 = _b(block[6 * i, t], block[6 * i + 1, t], block[6 * i + 2, t],
                                                block[6 * i + 3, t], block[6 * i + 4, t], block[6 * i + 5, t])
                    rows[i, s] += e0  # tile tw - 1 wrote columns s and s + 1 too
                    rows[i, s + 1] += e1
                    rows[i, s + 2], rows[i, s + 3], rows[i, s + 4], rows[i, s + 5] = e2, e3, e4, e5
            top = 4 * th
            for col in range(4 * tiles_w + 2):
                e0, e1, e2, e3, e4, e5 = _b(rows[0, col], rows[1, col], rows[2, col],
                                            rows[3, col], rows[4, col], rows[5, col])
                padded[top, col] += e0  # tile row th - 1 wrote rows top and top + 1 too
                padded[top + 1, col] += e1
                padded[top + 2, col], padded[top + 3, col], padded[top + 4, col], padded[top + 5, col] = e2, e3, e4, e5
        dx[n, c] = padded[1:height + 1, 1:width + 1]


def input_transform_adjoint_numpy(dV, dx, tiles_h, tiles_w):
    n_images, channels, height, width = dx.shape
    dv = dV.reshape(ALPHA, ALPHA, channels, n_images, tiles_h, tiles_w)
    dd = np.einsum("ia,ijcnuv,jb->ncuvab", B_T, dv, B_T)
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
