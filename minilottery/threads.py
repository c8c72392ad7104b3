"""Who uses the cores: OpenBLAS's own threads, or minilottery's pool of one thread per core.

Lenet's three matrix products per pass are large and regular, and OpenBLAS splits
each of them over the cores well; nothing else runs beside them. A network with
Winograd convolutions (conv.py) is different: most of its time goes to Numba
transforms and many small products, which a pool of one Python thread per core runs
chunk by chunk (``run_chunks``), each thread calling a single-threaded OpenBLAS.

The two must not meet. After every multi-threaded call OpenBLAS keeps its helper
thread spinning for up to 2^28 cycles (about 0.1 s) waiting for the next one, so a
fully connected layer's product left a helper spinning through the whole next
convolution and took a core from the pool: Conv-2 steps ran at 107 ms instead of 71.
So a network with Winograd convolutions runs its passes inside ``pool_owns_cores()``:
OpenBLAS stays on one thread (its helper sleeps for good), and ``matmul`` splits the
rows of a fully connected layer's products over the pool instead.

A Lenet with sparse layers (sparse.py), or whose first layer skips the zeros of MNIST
(kernels/sparse_input.py), is a third case: its passes are Numba kernels of tens of
microseconds, which Numba's own threads share when they spin briefly between kernels
(``kernels.helpers_spin``); OpenBLAS then stays on one thread for the dense layers beside
them, for the same reason (nets.Network.cores), and those layers' products run two at a
time, one call of OpenBLAS on each of Numba's threads (kernels/blas.py).
"""
import contextlib
import ctypes
import glob
import os
import threading

import numba
import numpy as np

# One worker per core this process may run on.
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_pool = None  # the Pool of WORKERS - 1 helpers, made on first use
_pool_busy = threading.Lock()  # held while the pool runs a caller's chunks
_pool_owns_cores = False  # inside pool_owns_cores(): matmul splits over the pool


def _forget_pool():
    """A forked child has the pool object but not its threads: make it start its own."""
    global _pool, _pool_busy
    _pool, _pool_busy = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _openblas():
    """NumPy's bundled OpenBLAS (the library NumPy already loaded), or None if NumPy links another BLAS."""
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(numpy_libs, "libscipy_openblas*.so*")):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _function(library, name):
    """One of OpenBLAS's thread-count setters (int -> previous int, or -> void), or None."""
    function = getattr(library, name, None) if library is not None else None
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
    return function


_library = _openblas()
# the calling thread's count (returns the previous one), and the whole process's
_set_blas_threads = _function(_library, "openblas_set_num_threads_local")
_set_blas_threads_global = _function(_library, "scipy_openblas_set_num_threads64_")


def openblas_address(name):
    """The address of OpenBLAS's function ``name``, for kernels that call it (kernels/blas.py);
    0 if NumPy's BLAS is not its bundled OpenBLAS or has no such function."""
    function = getattr(_library, name, None) if _library is not None else None
    return 0 if function is None else ctypes.cast(function, ctypes.c_void_p).value


def use_cores(count):
    """Run this process's work on ``count`` cores: OpenBLAS's threads, Numba's, and the pool's.

    A worker of ``imp --workers N`` calls this with its share of the cores, so that N
    jobs side by side do not queue for each other's threads.
    """
    global WORKERS, _pool
    import numba
    count = max(1, int(count))
    if _set_blas_threads_global is not None:
        _set_blas_threads_global(count)
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    if count != WORKERS:
        if _pool is not None:
            _pool.close()  # its threads end once they are idle
        WORKERS, _pool = count, None


@contextlib.contextmanager
def single_threaded_blas():
    """OpenBLAS on one thread inside the block: each pool worker already has a core, and
    two threads calling a multi-threaded OpenBLAS at once would queue for its thread pool."""
    if _set_blas_threads is None:
        yield
        return
    previous = _set_blas_threads(1)
    try:
        yield
    finally:
        _set_blas_threads(previous)


@contextlib.contextmanager
def pool_owns_cores():
    """The pool, not OpenBLAS, spreads work over the cores inside the block (see the top)."""
    global _pool_owns_cores
    outer = _pool_owns_cores
    _pool_owns_cores = True
    try:
        with single_threaded_blas():
            yield
    finally:
        _pool_owns_cores = outer


def even_slices(n_items, chunk, workers):
    """The slices run_chunks hands out: at most ``chunk`` items each, sizes that differ by
    at most one, and a count that the workers share equally. 128 images in chunks of up
    to 14 were 9 of 14 and one of 2, so one thread did 5 full chunks and the other 4 and
    the small one (70 images against 58); as 10 chunks of 12-13 they do 64 each."""
    count = -(-n_items // max(1, chunk))
    if workers > 1:
        count = min(n_items, -(-count // workers) * workers)
    return [slice(i * n_items // count, (i + 1) * n_items // count) for i in range(count)]


# ----------------------------------------------------------------------------- the pool
# Waking a sleeping thread costs 80-350 us on this virtual machine (a futex wake, then the
# hypervisor scheduling the idle vCPU), and a Resnet-18 step hands the pool work ~145
# times (its convolutions, batch norms and element-wise passes), each a wake of the helper
# and one of the caller when it waits. So the helper, once done, and the caller, waiting
# for it, first poll a counter in memory, yielding the core to any other thread between
# looks (sched_yield), and only then sleep. A hand-over to a polling helper measured 12-25 us
# against 80-100 when neither thread needed the GIL meanwhile (a thread taking the GIL from
# the other still waits for a wake: benchmarks/pool_handover.py). SPIN_YIELDS looks take
# ~1.2 ms here, more than the gaps inside a step; a pool left idle longer sleeps, and stops
# taking a core that other processes could use.
# (Resnet-18 steps alternated with 0, 2,000 and 20,000 looks: 2,000 and 20,000 were
# 1.02-1.13x faster than 0 in medians of 10-12 pairs, and not told apart from each other.)
SPIN_YIELDS = 2_000

_reached = None  # compiled on first use (below)


def _compile_reached():
    """``reached(counter, value, looks)``: whether counter[0] reaches value within ``looks`` looks,
    yielding the core between them (sched_yield: an opaque call, so each look reads memory
    again). Runs without the GIL. Compiled when the first pool starts, not cached: it calls
    libc by address."""
    global _reached
    if _reached is None:
        try:
            sched_yield = ctypes.CDLL(None).sched_yield
        except (OSError, AttributeError, TypeError):  # no POSIX libc: look once, then sleep
            _reached = lambda counter, value, looks: counter[0] >= value  # noqa: E731
            return _reached
        sched_yield.argtypes, sched_yield.restype = [], ctypes.c_int

        @numba.njit("boolean(int64[:], int64, int64)", nogil=True)
        def reached(counter, value, looks):
            for _ in range(looks):
                if counter[0] >= value:
                    return True
                sched_yield()
            return counter[0] >= value

        _reached = reached
    return _reached


class Pool:
    """``helpers`` threads that run the caller's ``drain(worker)`` beside it, handed over by a
    counter each side polls before it sleeps (above)."""

    def __init__(self, helpers):
        self.helpers, self.reached = helpers, _compile_reached()
        self.started = np.zeros(1, np.int64)  # generation of the latest task
        self.finished = np.zeros(helpers + 1, np.int64)  # the generation each helper finished last
        self.task, self.errors, self.closed = None, [], False
        self.wake = threading.Condition()
        for worker in range(1, helpers + 1):
            threading.Thread(target=self._serve, args=(worker,), name=f"minilottery-{worker}", daemon=True).start()

    def _serve(self, worker):
        generation = 0
        while True:
            generation += 1
            if not self.reached(self.started, generation, SPIN_YIELDS):
                with self.wake:
                    self.wake.wait_for(lambda: self.started[0] >= generation or self.closed)
            if self.closed:
                return
            try:
                self.task(worker)
            except BaseException as error:  # noqa: BLE001  (handed to the caller)
                self.errors.append(error)
            with self.wake:
                self.finished[worker] = generation
                self.wake.notify_all()

    def run(self, drain):
        """drain(0) here and drain(1..helpers) on the helpers; returns when all are done,
        re-raising the first exception any of them raised."""
        generation = int(self.started[0]) + 1
        self.task, self.errors = drain, []
        with self.wake:
            self.started[0] = generation
            self.wake.notify_all()
        try:
            drain(0)
        finally:
            for worker in range(1, self.helpers + 1):
                if not self.reached(self.finished[worker:worker + 1], generation, SPIN_YIELDS):
                    with self.wake:
                        self.wake.wait_for(lambda: self.finished[worker] >= generation)
        if self.errors:
            raise self.errors[0]

    def close(self):
        """Let the helpers end once they are idle."""
        with self.wake:
            self.closed = True
            self.wake.notify_all()


def run_chunks(n_items, chunk, work):
    """Call ``work(worker, items)`` for consecutive slices of up to ``chunk`` items covering
    ``n_items`` (evened out: ``even_slices``), on up to WORKERS threads; ``worker``
    (0, 1, ...) names the thread's own scratch.

    The kernels and matrix products a chunk runs release the GIL, so the threads run
    in parallel. Chunks are handed out one at a time, so a thread slowed by another
    process simply does fewer of them.
    """
    global _pool
    chunks = even_slices(n_items, chunk, WORKERS)
    slices = iter(chunks)

    def drain(worker):
        for items in slices:  # a shared iterator: each next() hands out one chunk
            work(worker, items)

    # the pool serves one caller at a time: a run_chunks inside a chunk, or from another
    # thread while the pool is busy, runs on its caller's thread alone
    if WORKERS <= 1 or len(chunks) <= 1 or not _pool_busy.acquire(blocking=False):
        drain(0)
        return
    try:
        if _pool is None or _pool.helpers != WORKERS - 1:
            if _pool is not None:
                _pool.close()
            _pool = Pool(WORKERS - 1)
        with single_threaded_blas():
            _pool.run(drain)
    finally:
        _pool_busy.release()


# An element-wise pass over fewer values than this runs on the calling thread.
SPLIT_VALUES = 1 << 18


def elementwise(kernel, arrays, args=(), split=None):
    """``kernel(*arrays, *args)`` on flat arrays of one size, in slices side by side on the pool
    when ``split`` (by default: inside pool_owns_cores()) and the arrays are large. The kernel
    must release the GIL. A ReLU over a batch of Resnet-18's 16-channel maps is 2M values."""
    size = arrays[0].size
    split = _pool_owns_cores if split is None else split
    if not split or WORKERS == 1 or size < SPLIT_VALUES:
        kernel(*arrays, *args)
        return
    run_chunks(size, -(-size // WORKERS), lambda worker, part: kernel(*(a[part] for a in arrays), *args))


# A product smaller than this many multiply-adds runs on the calling thread: handing
# rows to the pool costs tens of microseconds.
SPLIT_MACS = 1 << 21


def matmul(a, b, out=None):
    """a @ b (2-D), written to ``out`` if given. Inside pool_owns_cores() a large product
    is split over the pool, by rows of a or by columns of b, whichever is the larger
    operand, so that each thread reads only its share of it (a fully connected layer's
    W is read once, not once per thread); elsewhere OpenBLAS threads it as it likes."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    by_rows = a.size >= b.size
    parts = a.shape[0] if by_rows else b.shape[1]
    if not _pool_owns_cores or WORKERS == 1 or parts < 2 * WORKERS or a.size * b.shape[1] < SPLIT_MACS:
        return np.matmul(a, b, out=out)
    if by_rows:
        run_chunks(parts, -(-parts // WORKERS), lambda worker, rows: np.matmul(a[rows], b, out=out[rows]))
    else:
        run_chunks(parts, -(-parts // WORKERS), lambda worker, cols: np.matmul(a, b[:, cols], out=out[:, cols]))
    return out


def matmul_each(a, b):
    """a @ b[n] for every n of b (N, k, m), split over the pool by n inside pool_owns_cores()."""
    out = np.empty((b.shape[0], a.shape[0], b.shape[2]), np.result_type(a, b))
    if not _pool_owns_cores or WORKERS == 1 or b.shape[0] < 2:
        return np.matmul(a, b, out=out)
    run_chunks(b.shape[0], -(-b.shape[0] // WORKERS), lambda worker, part: np.matmul(a, b[part], out=out[part]))
    return out
