"""The vector registers: what this CPU has, blocks of accumulators kept in them, 8 x 8 transposes.

Numba leaves the choice of registers to LLVM; these three help it where a kernel's speed
depends on what stays in them:

* ``AVX512``: whether Numba compiles for AVX-512 here (32 registers of 16 float32) or less
  (AVX2: 16 of 8). Register blocks are sized by it (sparse_input.py).
* ``register_block``: a small array of accumulators on the stack, which LLVM promotes to
  registers (sparse_input.py, sparse_stack.py, parts.py).
* ``transpose_block``: an 8 x 8 block transposed in registers by shuffles (layout.py, sparse.py).
"""
import os

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload


def compiles_for_avx512():
    """Whether Numba's code here has AVX-512: 32 vector registers of 16 float32, against AVX2's
    16 of 8. Register blocks are sized by it (kernels/sparse_input.py). From the CPU features
    Numba compiles for: NUMBA_CPU_FEATURES if set, else the host's."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features:
        return "+avx512f" in features.split(",")
    try:
        from llvmlite import binding
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except (ImportError, RuntimeError):
        return False


AVX512 = compiles_for_avx512()

# ----------------------------------------------------------------------------- register blocks

@intrinsic
def _stack_pointer(typingctx, count, dtype):
    """A pointer to ``count`` (a literal) values of ``dtype`` on the kernel's stack."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    element = dtype.dtype

    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(element)
        slot = cgutils.alloca_once(builder, ir.ArrayType(value_type, count.literal_value))
        return builder.bitcast(slot, value_type.as_pointer())

    return types.CPointer(element)(count, dtype), codegen


def register_block(rows, columns, dtype):
    """A (rows, columns) work array of accumulators that LLVM keeps in vector registers.

    ``np.zeros`` in a kernel is heap memory, so a loop that adds into it loads and stores
    every accumulator on every pass; on the stack, with sizes known when the kernel
    compiles (``rows`` and ``columns`` must be constants), LLVM promotes the whole block
    to registers. Lenet's first layer with 4 x 64 accumulators: 233 -> 160 us on one
    core. As plain Python (NUMBA_DISABLE_JIT=1) it is an ordinary array.
    """
    return np.empty((rows, columns), dtype)


@overload(register_block)
def _register_block(rows, columns, dtype):
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(columns, types.IntegerLiteral)):
        raise TypingError("register_block needs sizes known when the kernel compiles (module constants)")
    count = rows.literal_value * columns.literal_value

    def block(rows, columns, dtype):
        return numba.carray(_stack_pointer(count, dtype), (rows, columns))

    return block


# ----------------------------------------------------------------------------- 8 x 8 transposes

BLOCK = 8  # values per side of a transposed block: one AVX2 vector of float32


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
