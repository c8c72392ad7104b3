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

The Numba kernels spell each matrix product out as the sums it reduces to (most
entries of B, G and A are 0 or ±1); their NumPy twins use the matrices themselves,
so the twin tests also check the spelled-out coefficients.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel

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


# ----------------------------------------------------------------------------- filters (small: NumPy)

def filter_transform(g, out):
    """U = G g G^T for every (k, c): g (K, C, 3, 3) -> out (36, K, C)."""
    u = np.einsum("ia,kcab,jb->ijkc", G.astype(g.dtype), g, G.astype(g.dtype), optimize=True)
    out[...] = u.reshape(ALPHA * ALPHA, *g.shape[:2])


def filter_transform_adjoint(du, dg):
    """dg = G^T dU G: du (36, K, C) -> dg (K, C, 3, 3), the gradient of filter_transform."""
    du = du.reshape(ALPHA, ALPHA, *dg.shape[:2])
    dg[...] = np.einsum("ia,ijkc,jb->kcab", G.astype(du.dtype), du, G.astype(du.dtype), optimize=True)


# ----------------------------------------------------------------------------- 1-D transforms
# Each is one matrix-vector product written out. Constants are made in the data's
# dtype so that float32 arithmetic stays float32 (a bare 4.0 would promote to float64).

@jit
def _input_1d(d0, d1, d2, d3, d4, d5):
    """B^T d for a column of 6."""
    two, four, five = d0.dtype.type(2) if hasattr(d0, "dtype") else 2.0, 4, 5
    return (four * d0 - five * d2 + d4,
            -four * (d1 + d2) + d3 + d4,
            four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4,
            two * (d1 - d3) - d2 + d4,
            four * d1 - five * d3 + d5)
