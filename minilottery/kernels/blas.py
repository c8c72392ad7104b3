"""OpenBLAS's matrix product called from Numba's threads: a fully connected layer's products
two at a time, one on each core.

A Lenet pass whose first layer skips the zeros of MNIST (sparse_input.py) runs on Numba's
threads, with OpenBLAS held to one thread so that the two never compete (threads.py). The
products left to BLAS, fc2's and fc3's, then ran on one core while the other waited: fc2's
three took 185 us of a 720 us step on a Zen 2. Here each product is one call of OpenBLAS's
gemm on one thread, and a prange of two makes two calls at once:

    forward     y = x W         columns [0, split) beside columns [split, out)
    backward    dW = x^T dy     beside    dx = dy W^T
                (no dx wanted: dW's columns in two parts, as the forward's)

The backward's two calls are the very products one thread makes, so they give its numbers.
A part of the columns is a smaller product, which OpenBLAS may sum in another order than
the whole (float rounding); the parts are the same on any number of threads, so the numbers
never depend on the thread count. On one thread the two calls run one after the other.

Numba calls gemm at its address, which the kernel takes as an argument (an address compiled
into the kernel would not survive its on-disk cache). ``AVAILABLE`` is False where NumPy's
BLAS is not its bundled 64-bit OpenBLAS, and with the JIT off; callers then use NumPy.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .. import threads
from . import jit_inline, jit_parallel

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enumerations
GEMM = {np.dtype(np.float32): threads.openblas_address("scipy_cblas_sgemm64_"),
        np.dtype(np.float64): threads.openblas_address("scipy_cblas_dgemm64_")}
SET_THREADS = threads.openblas_address("openblas_set_num_threads_local")  # the calling thread's count
AVAILABLE = all(GEMM.values()) and bool(SET_THREADS) and not numba.config.DISABLE_JIT
SPLIT_ALIGN = 8  # a part of the columns starts on a multiple of this (one AVX2 register of float32)


@intrinsic
def _call_gemm(typingctx, address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """cblas_?gemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc) at ``address``
    (64-bit integers); a, b and c are arrays whose data pointers are passed."""
    real = c.dtype

    def codegen(context, builder, signature, args):
        address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        value = context.get_value_type(real)
        pointer = value.as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, value, pointer, i64,
                                                        pointer, i64, value, pointer, i64])
        function = builder.inttoptr(address, function_type.as_pointer())
        arrays = signature.args[6], signature.args[8], signature.args[10]

        def data(array_type, array):
            return context.make_array(array_type)(context, builder, array).data

        def int32(value):
            return builder.trunc(value, i32)

        builder.call(function, [ir.Constant(i32, ROW_MAJOR), int32(trans_a), int32(trans_b), m, n, k,
                                ir.Constant(value, 1.0), data(arrays[0], a), lda, data(arrays[1], b), ldb,
                                ir.Constant(value, 0.0), data(arrays[2], c), ldc])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64, types.int64, types.int64, types.int64,
                      a, types.int64, b, types.int64, c, types.int64), codegen


@intrinsic
def _call_set_threads(typingctx, address, count):
    """openblas_set_num_threads_local(count) at ``address``: returns the calling thread's previous count."""
    def codegen(context, builder, signature, args):
        address, count = args
        i32 = ir.IntType(32)
        function = builder.inttoptr(address, ir.FunctionType(i32, [i32]).as_pointer())
        return builder.sext(builder.call(function, [builder.trunc(count, i32)]), ir.IntType(64))

    return types.int64(types.int64, types.int64), codegen


@jit_inline
def _product(gemm, a, b, c):
    """c = a @ b by gemm, each operand a 2-D view with its rows or its columns contiguous (a
    transposed view is read as it lies, by gemm's transpose flag)."""
    size = c.itemsize
    trans_a, trans_b = a.strides[1] != size, b.strides[1] != size
    lda = (a.strides[1] if trans_a else a.strides[0]) // size
    ldb = (b.strides[1] if trans_b else b.strides[0]) // size
    _call_gemm(gemm, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, c.shape[0], c.shape[1],
               a.shape[1], a, lda, b, ldb, c, c.strides[0] // size)


@jit_parallel
def products_side_by_side(gemm, set_threads, hold, a0, b0, c0, a1, b1, c1):
    """c0 = a0 @ b0 beside c1 = a1 @ b1, each by one call of OpenBLAS's gemm (at address
    ``gemm``), on one OpenBLAS thread if ``hold`` (the two calls share Numba's threads; else
    they run in turn with OpenBLAS's own thread count). ``set_threads``: the address of
    openblas_set_num_threads_local."""
    for part in prange(2):
        before = _call_set_threads(set_threads, 1) if hold else 0
        if part == 0:
            _product(gemm, a0, b0, c0)
        else:
            _product(gemm, a1, b1, c1)
        if hold:
            _call_set_threads(set_threads, before)


def products_side_by_side_numpy(gemm, set_threads, hold, a0, b0, c0, a1, b1, c1):
    np.matmul(a0, b0, out=c0)
    np.matmul(a1, b1, out=c1)


def two_threads():
    """Whether the two calls may run at once, each then held to one of OpenBLAS's threads."""
    return numba.get_num_threads() > 1


def column_split(columns):
    """Where a product's columns are cut in two: near the middle, on a multiple of SPLIT_ALIGN
    (fc2's 100: 48 | 52); 0 (not cut) below two multiples."""
    return columns // 2 // SPLIT_ALIGN * SPLIT_ALIGN


def by_columns(a, b, out):
    """out = a @ b (a layer's forward: x (N, in) @ W (in, out), no bias), the columns of b and
    out in two parts side by side; one product on this thread where they are too few to cut
    (fc3's 10: 15 us in two parts, 10 in one)."""
    split = column_split(b.shape[1])
    if split == 0:
        np.matmul(a, b, out=out)
        return
    products_side_by_side(GEMM[out.dtype], SET_THREADS, two_threads(), a, b[:, :split], out[:, :split],
                          a, b[:, split:], out[:, split:])


def backward(x, dy, w, dw, dx=None):
    """dW = x^T dy beside dx = dy W^T; without dx, dW's columns in two parts."""
    if dx is None:
        by_columns(x.T, dy, dw)
        return
    products_side_by_side(GEMM[dw.dtype], SET_THREADS, two_threads(), x.T, dy, dw, dy, w.T, dx)


TWINS = [
    (products_side_by_side, products_side_by_side_numpy),
]
