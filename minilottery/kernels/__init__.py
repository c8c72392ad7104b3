"""Numba kernels: the hot path of minilottery, kept apart from the readable layers.

Every kernel here has a plain NumPy twin with the same signature and the same
in-place effect (the twin's name ends in ``_numpy``); ``TWINS`` lists the pairs and
the tests assert that each pair agrees. With ``NUMBA_DISABLE_JIT=1`` the kernels
run as ordinary Python, which is slow but still correct. Compiled kernels are
cached on disk (``cache=True``), so only the first run pays for compilation.
"""
import ctypes
import hashlib
import os

from .. import set_environment

# If Numba's threads come from OpenMP, let idle ones sleep instead of spinning for
# good: spinning threads steal the two cores from OpenBLAS and made a Lenet step 10x
# slower. But waking a sleeping thread costs 100-130 us on a virtual machine, longer
# than a sparse kernel of Lenet runs, so GNU OpenMP's helpers spin 4,000 rounds (about
# 0.1 ms here) after a parallel region before they sleep: the next region of a sparse
# training step finds them awake. (20,000 rounds, 0.5 ms, made Resnet-18 1.05x slower
# when its batch norms ran on Numba's threads, whose helper then spun while minilottery's
# pool ran the next convolution; a conv net's passes now run on the pool alone.)
set_environment("OMP_WAIT_POLICY", "PASSIVE")
set_environment("GOMP_SPINCOUNT", "4000")

import numba  # noqa: E402  (after the environment variable above)
import numpy as np  # noqa: E402

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3)
KEEP_BYTES = 1 << 30


def keep_freed_memory():
    """Let glibc serve arrays of up to 1 GiB from its heap and keep up to 1 GiB of freed memory.

    By default glibc maps every array above 32 MiB afresh and unmaps it when freed, so
    the kernel zeroes its pages again at first touch. An evaluation batch of 1,000 CIFAR
    images makes several arrays of 262 MB per layer: after a block of training steps the
    next evaluations ran Conv-2 at 800-1,000 images/s instead of 2,900. Dask's nanny also
    starts workers with MALLOC_TRIM_THRESHOLD_=65536, which cost a Lenet step a sixth.
    Not glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    except (OSError, AttributeError):
        pass


keep_freed_memory()


def forget_stale_compilations(here=os.path.dirname(os.path.abspath(__file__))):
    """Drop this package's compiled kernels from Numba's on-disk cache when any of its sources changed.

    Numba keys a cached kernel by the source of its own module only, so a kernel that
    calls a helper from another module (winograd_tiles's transforms call layout.py's
    copies) kept running the helper's old code after the helper was edited: the tests
    passed, and the timings measured, the code as it was. The cache files in
    ``__pycache__`` are deleted whenever the digest of the modules here differs from the
    one recorded beside them; the next call compiles afresh. A read-only install, whose
    kernels Numba caches under the user's cache directory, is left as it is.
    """
    digest = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as source:
                digest.update(name.encode() + b"\0" + source.read())
    cache = os.path.join(here, "__pycache__")
    stamp = os.path.join(cache, "kernel-sources.sha256")
    try:
        with open(stamp) as recorded:
            if recorded.read() == digest.hexdigest():
                return
    except OSError:
        pass
    try:
        os.makedirs(cache, exist_ok=True)
        for name in os.listdir(cache):
            if name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(cache, name))
        with open(stamp, "w") as recorded:
            recorded.write(digest.hexdigest())
    except OSError:
        pass


forget_stale_compilations()

# Fast-math without "no NaNs/infinities", so that a diverging loss still shows as NaN;
# NumPy's error model, so that x / 0 gives inf or NaN instead of raising.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
jit = numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
jit_parallel = numba.njit(cache=True, fastmath=FASTMATH, parallel=True, error_model="numpy")
# Kernels that threads.py's pool calls from several threads at once release the GIL.
jit_nogil = numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
# Per-element helpers shared by kernels, inlined into each caller so its loop still vectorises.
jit_inline = numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")

# Values smaller than this are flushed to exactly 0 in optimizer state. Adam's
# moment estimates of a weight that stops getting gradient decay geometrically
# (0.9^t) into float32 denormals after ~800 steps, and arithmetic on denormals is
# 3-5x slower on x86. 1e-30 is far above the denormal range (< 1.2e-38) and far
# below anything that changes an update.
FLUSH_BELOW = 1e-30


CACHE_LINE = 64  # bytes


def aligned_zeros(shape, dtype):
    """Zeros whose first element starts a cache line.

    NumPy aligns to 16 bytes, so a row of 64 float32 that the sparse kernels read as
    four 64-byte vectors straddled two cache lines in three cases out of four: Lenet's
    first sparse layer at Pm 5% ran its forward in 62 us from such rows and 46 us from
    aligned ones (the same kernel, the same data).
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.zeros(count * dtype.itemsize + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


class Scratch:
    """Work arrays by name, reusing the same memory on every call."""

    def __init__(self):
        self.arrays = {}

    def __call__(self, name, shape, dtype):
        """A C-contiguous array of ``shape`` (its contents are whatever was there)."""
        size = int(np.prod(shape))
        flat = self.arrays.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self.arrays[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


class one_numba_thread:  # noqa: N801  (used like a function: ``with one_numba_thread():``)
    """Numba's parallel kernels on one thread inside the block, the count put back after.

    Setting it and back costs ~3 us, so a block already on one thread (a worker of
    ``imp --workers 2``, or a pass of a network with sparse layers, which holds the
    count at 1 for all their kernels: nets.Network.cores) leaves it alone. A plain class
    rather than contextlib's generator: it wraps every optimizer and sparse kernel call.
    """

    def __enter__(self):
        self.previous = numba.get_num_threads()
        if self.previous != 1:
            numba.set_num_threads(1)

    def __exit__(self, *exc_info):
        if self.previous != 1:
            numba.set_num_threads(self.previous)


@numba.njit(parallel=True, cache=True)
def _parallel_region(x):
    for i in numba.prange(x.size):
        x[i] = i


_helpers_spin = None


def spin_count():
    """GOMP_SPINCOUNT's rounds; 0 if unset (OMP_WAIT_POLICY=PASSIVE then spins none) or not a
    plain number (GNU OpenMP also reads "10k" or "infinite": the sparse kernels then keep to
    one thread, the safe side)."""
    try:
        return int(os.environ.get("GOMP_SPINCOUNT", "0"))
    except ValueError:
        return 0


def helpers_spin():
    """Whether Numba's threads are GNU OpenMP's, which spin briefly before they sleep
    (GOMP_SPINCOUNT above), so that a parallel kernel of a few microseconds is worth
    sharing between cores. Numba's own workqueue threads always sleep."""
    global _helpers_spin
    if _helpers_spin is None:
        _parallel_region(np.zeros(2))  # Numba picks its threading layer at the first region
        try:
            layer = numba.threading_layer()
        except ValueError:  # no layer: NUMBA_DISABLE_JIT=1, the kernels run as plain Python
            layer = None
        _helpers_spin = layer == "omp" and spin_count() > 0
    return _helpers_spin


def single_threaded(kernel, *args):
    """Run a ``prange`` kernel on one thread.

    The optimizer kernels use ``prange`` because it is what lets LLVM vectorise a
    loop over five arrays (a plain loop needs more run-time alias checks than it
    allows), but handing the loop to a second thread costs more than it saves
    beside OpenBLAS, whose threads then compete for the same two cores.
    """
    with one_numba_thread():
        return kernel(*args)
