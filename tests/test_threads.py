"""threads.py: products split over minilottery's pool must equal NumPy's, and really split."""
import numpy as np
import pytest

from minilottery import nets, threads
from minilottery.kernels import winograd


@pytest.fixture
def always_split(monkeypatch):
    """Two workers and no size floor, so that every product inside pool_owns_cores() splits."""
    monkeypatch.setattr(threads, "WORKERS", 2)
    monkeypatch.setattr(threads, "SPLIT_MACS", 0)
    chunks = []
    run_chunks = threads.run_chunks

    def counting(n_items, chunk, work):
        chunks.append((n_items, chunk))
        run_chunks(n_items, chunk, work)

    monkeypatch.setattr(threads, "run_chunks", counting)
    return chunks


def test_matmul_splits_the_larger_operand_inside_the_pool(always_split, rng):
    a, b = rng.standard_normal((9, 5)), rng.standard_normal((5, 4))  # a is the larger: its 9 rows split
    assert np.array_equal(threads.matmul(a, b), a @ b) and not always_split  # outside: plain NumPy
    with threads.pool_owns_cores():
        out = np.full((9, 4), np.nan)
        threads.matmul(a, b, out=out)
        transposed = threads.matmul(b.T, a.T)  # strided views; a.T is the larger: its 9 columns split
    assert always_split == [(9, 5), (9, 5)]
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)
    np.testing.assert_allclose(transposed, b.T @ a.T, rtol=1e-12)


def test_matmul_each_splits_images_inside_the_pool(always_split, rng):
    w, cols = rng.standard_normal((4, 6)), rng.standard_normal((5, 6, 3))
    with threads.pool_owns_cores():
        y = threads.matmul_each(w, cols)
    assert always_split == [(5, 3)]
    np.testing.assert_allclose(y, np.matmul(w, cols), rtol=1e-12)


def test_winograds_filter_transforms_split_inside_the_pool(always_split, rng):
    g, dU = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((36, 5, 3))
    U, dg = np.empty((36, 5, 3)), np.empty((5, 3, 3, 3))
    U_twin, dg_twin = np.empty_like(U), np.empty_like(dg)
    with threads.pool_owns_cores():
        winograd.filter_transform(g, U)
        winograd.filter_transform_adjoint(dU, dg)
    assert len(always_split) == 2
    winograd.filter_transform_numpy(g, U_twin)
    winograd.filter_transform_adjoint_numpy(dU, dg_twin)
    np.testing.assert_allclose(U, U_twin, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dg, dg_twin, rtol=1e-12, atol=1e-12)


def test_only_winograd_networks_take_the_cores_from_openblas():
    assert nets.build("conv2", seed=0).pool_threads and nets.build("resnet18", seed=0).pool_threads
    assert not nets.build("lenet", seed=0).pool_threads


def test_a_failing_chunk_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(threads, "WORKERS", 2)

    def work(worker, items):
        if items.start == 3:
            raise ValueError("chunk 3")

    with pytest.raises(ValueError, match="chunk 3"):
        threads.run_chunks(4, 1, work)


@pytest.mark.parametrize("n_items, chunk", [(128, 14), (128, 28), (128, 56), (60, 7), (60, 14), (5, 2), (3, 5), (1, 1), (0, 4)])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_chunks_are_even_and_shared_equally(monkeypatch, n_items, chunk, workers):
    """run_chunks covers every item once in chunks no larger than asked, whose count the
    workers share equally, so that taking them in turn no worker gets more than its
    share of the items plus one per chunk of rounding (128 images in chunks of up to 14:
    64 each, where 9 chunks of 14 and one of 2 gave one thread 70)."""
    monkeypatch.setattr(threads, "WORKERS", workers)
    seen = []
    threads.run_chunks(n_items, chunk, lambda worker, items: seen.append((items.start, items.stop)))
    assert sorted(i for start, stop in seen for i in range(start, stop)) == list(range(n_items))
    sizes = [stop - start for start, stop in sorted(seen)]
    assert all(0 < size <= chunk for size in sizes)
    if n_items > chunk and workers > 1:
        assert len(sizes) % workers == 0
        shares = [sum(sizes[worker::workers]) for worker in range(workers)]
        assert max(shares) <= -(-n_items // workers) + len(sizes) // workers
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("spin_yields", [threads.SPIN_YIELDS, 0])
def test_the_pool_hands_chunks_to_a_helper_thread_polling_or_asleep(monkeypatch, spin_yields):
    """Its helper takes chunks on a thread of its own, whether it polls for work or (with no
    looks left: 0) sleeps until woken, and the caller waits for its last chunk either way."""
    import threading
    import time
    monkeypatch.setattr(threads, "WORKERS", 2)
    monkeypatch.setattr(threads, "SPIN_YIELDS", spin_yields)
    for _ in range(3):
        seen = {}

        def work(worker, items):
            time.sleep(0.002)  # long enough that both threads take chunks
            seen[items.start] = (worker, threading.get_ident())

        threads.run_chunks(8, 1, work)
        assert sorted(seen) == list(range(8))
        assert {worker for worker, _ in seen.values()} == {0, 1}
        assert len({ident for _, ident in seen.values()}) == 2
        time.sleep(0.02)  # idle beyond the polling: the helper goes to sleep


def test_a_run_chunks_inside_a_chunk_runs_on_its_callers_thread(monkeypatch):
    monkeypatch.setattr(threads, "WORKERS", 2)
    inner = []

    def work(worker, items):
        threads.run_chunks(4, 1, lambda inner_worker, part: inner.append((worker, inner_worker, part.start)))

    threads.run_chunks(2, 1, work)
    assert sorted(start for _, _, start in inner) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(inner_worker == 0 for _, inner_worker, _ in inner)  # the pool was busy with the outer call


def test_the_pool_follows_a_change_of_workers(monkeypatch):
    for workers in (3, 2):
        monkeypatch.setattr(threads, "WORKERS", workers)
        seen = set()
        threads.run_chunks(workers * 4, 1, lambda worker, items: seen.add(worker))
        assert seen <= set(range(workers)) and threads._pool.helpers == workers - 1


def test_without_a_posix_libc_the_pool_sleeps_instead_of_polling(monkeypatch):
    import ctypes

    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    monkeypatch.setattr(threads, "WORKERS", 2)
    monkeypatch.setattr(threads, "_reached", None)
    monkeypatch.setattr(threads, "_pool", None)
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    seen = []
    threads.run_chunks(6, 1, lambda worker, items: seen.append(items.start))
    assert sorted(seen) == list(range(6))
    assert not hasattr(threads._pool.reached, "py_func")  # the plain look, not the compiled loop
