"""Winograd's minimal filtering F(4x4, 3x3): the fast path of every 3x3, stride-1 "same" convolution.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), after
Winograd (1980). A 4x4 block of a 3x3 convolution's output is computed from the 6x6
input tile d that covers it and the 3x3 filter g as

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A                       (Lavin & Gray, eq. 8)

with the constant matrices below. Summed over input channels, the element-wise
product becomes 36 independent matrix products, one per position ξ of the 6x6
transformed tile:

    M_ξ = V_ξ U_ξ^T,   U_ξ: (K, C) transformed filters,   V_ξ: (T, C) transformed tiles

which cost 36 multiply-adds per tile and channel pair instead of 16 * 9 = 144 for the
direct convolution: 4x fewer, done by BLAS. Because the whole computation is linear,
its gradient runs the same transforms transposed (the adjoint), which is what the
backward pass does:

    dM = A dY A^T     dU_ξ = dM_ξ^T V_ξ    dg = G^T dU G
                      dV_ξ = dM_ξ U_ξ      dd = B dV B^T (tiles overlap, so dd adds up)

Layouts: x (N, C, H, W); V (36, T, C) and M (36, T, K) with the tile index
t = (n * TH + th) * TW + tw over a TH x TW grid of 4x4 output tiles. Tile (th, tw)
reads input rows 4th-1 .. 4th+4 (the "same" padding of 1); pixels outside the
image read as 0, and outputs beyond H or W are dropped, so H and W need not be
multiples of 4.

This module holds the matrices, the 1-D transforms they reduce to and the filter
transform, applied to every 3x3 weight once per step as one BLAS product with G ⊗ G.
The transforms of the activations, B^T d B and A^T M A and their adjoints, are
winograd_tiles.py's Numba kernels, which spell each matrix product out as the sums it
reduces to (most entries of B and A are 0 or ±1) through the 1-D transforms below;
their NumPy twins use the matrices themselves, so the twin tests also check the
spelled-out coefficients.
"""
import numpy as np

from .. import threads
from . import jit

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
    """U[6i + j, k, c] = (G g G^T)[i, j] for every filter g = w[k, c] (3x3), as U = (G ⊗ G) g.

    A product with an inner dimension of 9 is bound by writing U, 38 MB for VGG-19's
    512-channel layers: over the pool (threads.matmul) that took 3.4 ms, on one thread 5.7."""
    threads.matmul(G_KRON[g.dtype], g.reshape(-1, 9).T, out=U.reshape(36, -1))


def filter_transform_numpy(g, U):
    u = np.einsum("ia,kcab,jb->ijkc", G, g, G)
    U[...] = u.reshape(ALPHA * ALPHA, *g.shape[:2])


def filter_transform_adjoint_numpy(dU, dg):
    du = dU.reshape(ALPHA, ALPHA, *dg.shape[:2])
    dg[...] = np.einsum("ia,ijkc,jb->kcab", G, du, G)


def filter_transform_adjoint(dU, dg):
    """dg[k, c] = G^T dU G, the gradient of filter_transform: dg = (G ⊗ G)^T dU."""
    threads.matmul(dU.reshape(36, -1).T, G_KRON[dg.dtype], out=dg.reshape(-1, 9))  # 512 channels: 7.1 -> 4.3 ms


TWINS = [
    (filter_transform, filter_transform_numpy),
    (filter_transform_adjoint, filter_transform_adjoint_numpy),
]
