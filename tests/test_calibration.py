"""calibration.py: the sparse thresholds are measured on the machine, cached by its signature, or fixed."""
import json

import pytest

from minilottery import bench, calibration, nets, threads


@pytest.fixture
def measuring(monkeypatch, tmp_path):
    """Thresholds not fixed, the cache in tmp_path, and calibrate() replaced by a counted stand-in."""
    monkeypatch.delenv(calibration.ENVIRONMENT, raising=False)
    monkeypatch.setenv("MINILOTTERY_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_known", {})
    calls = []

    def fake_calibrate():
        calls.append(threads.WORKERS)
        return {"train": 0.25, "evaluation": 0.125, "stack": 0.35, "measured": "2026-12-02"}

    monkeypatch.setattr(calibration, "calibrate", fake_calibrate)
    return calls


def test_break_even_is_where_a_line_through_the_sparse_costs_meets_dense():
    densities = [0.1, 0.2, 0.4]
    # sparse costs 0.5 + 5 density, dense 2 (its median): equal at 0.3
    assert calibration.break_even(densities, [1, 1.5, 2.5], [2, 2, 2]) == pytest.approx(calibration.MARGIN * 0.3)
    assert calibration.break_even(densities, [3, 3, 3], [2, 2, 2]) == 0.0         # slower everywhere
    assert calibration.break_even(densities, [1, 1, 1], [2, 2, 2]) == 0.4         # faster everywhere
    # one slow dense timing does not move it: the dense path's median
    assert calibration.break_even(densities, [1, 1.5, 2.5], [2, 2, 9]) == pytest.approx(calibration.MARGIN * 0.3)


def test_measured_once_then_read_from_the_cache_by_machine(measuring, tmp_path, monkeypatch):
    first = calibration.thresholds()
    assert (first.train, first.evaluation) == (0.25, 0.125) and measuring == [threads.WORKERS]
    cached = json.loads((tmp_path / calibration.CACHE_FILE).read_text())
    assert list(cached) == [calibration.signature()]
    monkeypatch.setattr(calibration, "_known", {})  # a new process: reads the file, measures nothing
    again = calibration.thresholds()
    assert (again.train, again.evaluation) == (0.25, 0.125) and len(measuring) == 1 and "cached" in again.source
    monkeypatch.setattr(threads, "WORKERS", threads.WORKERS + 1)  # another core count: measured afresh
    calibration.thresholds()
    assert len(measuring) == 2 and len(json.loads((tmp_path / calibration.CACHE_FILE).read_text())) == 2


def test_a_damaged_or_unwritable_cache_is_measured_again_without_failing(measuring, tmp_path, monkeypatch):
    (tmp_path / calibration.CACHE_FILE).write_text("{not json")
    assert calibration.thresholds().train == 0.25 and len(measuring) == 1
    assert json.loads((tmp_path / calibration.CACHE_FILE).read_text())  # replaced by a whole file
    monkeypatch.setattr(calibration, "_known", {})
    monkeypatch.setenv("MINILOTTERY_CACHE", str(tmp_path / calibration.CACHE_FILE / "below-a-file"))
    result = calibration.thresholds()
    assert result.train == 0.25 and "not cached" in result.source and len(measuring) == 2


def test_fixed_thresholds_and_a_clear_error_for_bad_ones(monkeypatch):
    monkeypatch.setenv(calibration.ENVIRONMENT, "0.3,0.1")
    assert calibration.thresholds()[:3] == (0.3, 0.1, 0.3)      # a stack goes by the training threshold
    monkeypatch.setenv(calibration.ENVIRONMENT, "0.3,0.1,0.4")
    assert calibration.thresholds()[:3] == (0.3, 0.1, 0.4)
    for bad in ("0.3", "high,low", "0.3,2", "0.3,0.1,0.2,0.1"):
        monkeypatch.setenv(calibration.ENVIRONMENT, bad)
        with pytest.raises(ValueError, match="two densities between 0 and 1"):
            calibration.thresholds()


def test_the_network_follows_the_measured_thresholds(measuring):
    net = nets.build("lenet", seed=0)
    assert measuring == []  # a dense network never asks
    net.set_mask(bench.random_mask(net, 0.2))  # below 0.25: trained sparse; above 0.125: BLAS evaluation
    layers = dict(net.layers)
    assert measuring and all(layers[name].sparse is not None for name in ("fc1", "fc2", "fc3"))
    assert layers["fc1"].sparse.blas_evaluation
    net.set_mask(bench.random_mask(net, 0.3))  # above 0.25 but below the stack's 0.35: Lenet trains as a stack
    assert all(layers[name].sparse is not None for name in ("fc1", "fc2", "fc3")) and net.sparse_stack is not None
    net.set_mask(bench.random_mask(net, 0.4))
    assert layers["fc1"].sparse is None and net.sparse_stack is None
    conv = nets.build("conv2", seed=0)           # a conv net's fc layers go by the training threshold
    conv.set_mask(bench.random_mask(conv, 0.3))
    assert not any(getattr(leaf, "sparse", None) for _, leaf in conv.leaves)
    conv.set_mask(bench.random_mask(conv, 0.2))
    assert dict(conv.layers)["fc1"].sparse is not None


def test_a_real_calibration_finds_sparse_faster_at_one_percent():
    # 1%: the dense path skips MNIST's zeros now, and at 2% a sparse evaluation was only 1.5x faster.
    # On one core, as an imp worker measures: the tests run two at a time (pyproject.toml), and
    # threads that wait for each other at every kernel measure the other test's load, not the kernels
    own = threads.WORKERS
    threads.use_cores(1)
    try:
        measured = calibration.calibrate(grid=(0.01, 0.5), steps=3)
    finally:
        threads.use_cores(own)
    seconds = measured["seconds"]
    assert seconds["train sparse"][0] < seconds["train dense"][0]  # 1% of Lenet's weights: several times less work
    assert seconds["evaluation sparse"][0] < seconds["evaluation dense"][0]
    assert 0.01 <= measured["train"] <= 0.5 and 0.0 <= measured["evaluation"] <= 0.5


def test_sparse_and_dense_are_timed_in_turn_and_the_fastest_kept(monkeypatch):
    """The machine's speed moves from second to second: each mode is timed beside the other."""
    # (train, evaluation, steps as a run makes them, its evaluations), sparse then dense
    modes, timings = [], iter(([99] * 8 + [5, 6, 4, 100, 7, 8, 3, 200] + [99] * 8) * 2)
    monkeypatch.setattr(nets.Network, "set_sparse", lambda net, mode: modes.append(mode) or setattr(net, "sparse", mode)
                        or setattr(net, "sparse_leaves", []) or setattr(net, "sparse_update", None)
                        or setattr(net, "sparse_stack", None))
    monkeypatch.setattr(calibration, "seconds_per_call", lambda work, calls: float(next(timings)))
    measured = calibration.calibrate(grid=(0.1, 0.2), steps=1, repeats=3)
    assert modes[-12:] == ["on", "on", "off", "off"] * 3
    assert measured["seconds"]["train sparse"] == [5.0] * 2 and measured["seconds"]["evaluation sparse"] == [6.0] * 2
    assert measured["seconds"]["train dense"] == [7.0] * 2 and measured["seconds"]["evaluation dense"] == [8.0] * 2
    share = calibration.EVALUATED_PER_STEP / 1000                  # of an evaluation of 1,000 images
    assert measured["seconds"]["stretch sparse"] == [4.0 + 100 * share] * 2
    assert measured["seconds"]["stretch dense"] == [3.0 + 200 * share] * 2


def test_a_network_with_its_own_thresholds_measures_nothing(measuring):
    net = nets.build("lenet", seed=0, sparse_thresholds=(0.5, 0.45))
    net.set_mask(bench.random_mask(net, 0.48))  # below 0.5: sparse; above 0.45: BLAS evaluation
    layers = dict(net.layers)
    assert measuring == [] and layers["fc1"].sparse is not None and layers["fc1"].sparse.blas_evaluation


def test_thresholds_for_another_core_count_are_measured_there_and_the_cores_given_back(measuring, monkeypatch):
    own = threads.WORKERS
    calls = []
    monkeypatch.setattr(threads, "use_cores", lambda count: calls.append(count) or setattr(threads, "WORKERS", count))
    calibration.thresholds_on(own + 1)
    assert measuring == [own + 1] and calls == [own + 1, own] and threads.WORKERS == own
    calibration.thresholds_on(None)  # this process's own cores: no switching
    assert calls == [own + 1, own]


def test_calibration_times_the_layers_one_at_a_time(monkeypatch):
    """The threshold serves a conv net's Dense layers, which run one at a time: Lenet's stack,
    cheaper, would set it too high for them."""
    from minilottery import sparse

    def stack_forward(*args):
        raise AssertionError("the calibration timed the stack")

    monkeypatch.setattr(sparse.SparseStack, "forward", stack_forward)
    measured = calibration.calibrate(grid=(0.05, 0.3), steps=1, repeats=1)
    assert len(measured["seconds"]["train sparse"]) == 2
