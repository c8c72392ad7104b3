"""Property-based tests (Hypothesis): the data readers and the paper's pruning invariants.

* the IDX reader gives back whatever ``write_idx`` wrote, of every element type and
  shape, and any damage to the bytes is either harmless or a DataFileError, never
  another exception;
* the CIFAR-10 reader gives back the records it was handed, and refuses any byte count
  that is not whole batches;
* magnitude pruning removes exactly round(p × remaining) weights per layer, the smallest
  ones, and never brings a pruned weight back; after k rounds a layer keeps the count of
  the paper's formula W·(1 − p)^k up to that rounding;
* an optimizer step never moves a pruned weight away from exactly zero.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilottery import datasets, idx, optim, pruning
from minilottery.idx import DataFileError
from minilottery.masks import Mask

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
IDX_DTYPES = [np.dtype(d) for d in (np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8")]


@st.composite
def idx_arrays(draw):
    dtype = draw(st.sampled_from(IDX_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    elements = st.floats(-1e6, 1e6, width=32) if dtype.kind == "f" else None
    return draw(hnp.arrays(dtype.newbyteorder("="), shape, elements=elements))


@SETTINGS
@given(array=idx_arrays(), gzipped=st.booleans())
def test_idx_reads_back_what_was_written(tmp_path, array, gzipped):
    path = tmp_path / ("x.gz" if gzipped else "x")
    idx.write_idx(path, array)
    back = idx.read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@SETTINGS
@given(array=idx_arrays(), data=st.data())
def test_damaged_idx_bytes_are_harmless_or_a_data_file_error(tmp_path, array, data):
    path = tmp_path / "x"
    idx.write_idx(path, array)
    raw = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "append"]))
    if how == "truncate":
        raw = raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif how == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    else:
        raw += bytes(data.draw(st.binary(min_size=1, max_size=9)))
    path.write_bytes(bytes(raw))
    try:
        back = idx.read_idx(path)
    except DataFileError as error:
        assert str(path) in str(error)
        return
    assert back.size * back.itemsize == len(raw) - 4 - 4 * back.ndim  # whatever it read, it read whole


@st.composite
def cifar_batches(draw):
    per_batch = draw(st.integers(1, 4))
    batches = draw(st.integers(1, 3))
    labels = draw(hnp.arrays(np.uint8, (batches, per_batch), elements=st.integers(0, 9)))
    pixels = draw(hnp.arrays(np.uint8, (batches, per_batch, 3, 32, 32)))
    return labels, pixels


@SETTINGS
@given(batches=cifar_batches())
def test_cifar10_reads_back_its_records(tmp_path, monkeypatch, batches):
    labels, pixels = batches
    monkeypatch.setattr(datasets, "CIFAR_BATCH", labels.shape[1])
    paths = []
    for b in range(len(labels)):
        paths.append(tmp_path / f"data_batch_{b + 1}.bin")
        paths[-1].write_bytes(np.column_stack([labels[b], pixels[b].reshape(len(labels[b]), -1)]).tobytes())
    images, read_labels = datasets.read_cifar_batches(paths)
    np.testing.assert_array_equal(read_labels, labels.reshape(-1))
    np.testing.assert_array_equal(images, pixels.reshape(-1, 3, 32, 32))


@SETTINGS
@given(size=st.integers(0, 4 * datasets.CIFAR_RECORD + 7))
def test_cifar10_refuses_any_size_but_whole_batches(tmp_path, monkeypatch, size):
    monkeypatch.setattr(datasets, "CIFAR_BATCH", 2)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(size))
    if size == 2 * datasets.CIFAR_RECORD:
        assert len(datasets.read_cifar_batches([path])[1]) == 2
        return
    with pytest.raises(DataFileError, match="data_batch_1.bin"):
        datasets.read_cifar_batches([path])


@st.composite
def layers(draw):
    """A layer's trained weights (with ties), its mask and a pruning rate."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=12))
    weights = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0])
                              | st.floats(-4, 4, width=32)))
    mask = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))
    rate = draw(st.floats(0, 0.95))
    return weights, mask, rate


@SETTINGS
@given(layer=layers())
def test_layerwise_pruning_removes_the_smallest_kept_weights_and_revives_none(layer):
    weights, mask, rate = layer
    new = pruning.prune_layerwise(Mask({"w": mask}), {"w": weights}, {"w": rate})["w"]
    kept_before = int(mask.sum())
    assert np.all(new <= mask)  # no pruned weight comes back
    assert int(new.sum()) == kept_before - int(round(rate * kept_before))
    removed = (mask == 1) & (new == 0)
    if removed.any() and new.any():
        assert np.abs(weights[removed]).max() <= np.abs(weights[new == 1]).min()


@SETTINGS
@given(size=st.integers(1, 3000), rate=st.sampled_from([0.1, 0.15, 0.2]), rounds=st.integers(0, 12), seed=st.integers(0, 99))
def test_counts_after_k_rounds_follow_the_papers_formula(size, rate, rounds, seed):
    rng = np.random.default_rng(seed)
    mask = Mask({"w": np.ones(size, np.float32)})
    for _ in range(rounds):
        mask = pruning.prune_layerwise(mask, {"w": rng.standard_normal(size).astype(np.float32)}, {"w": rate})
    assert mask.kept() == pruning.counts_after({"w": size}, {"w": rate}, rounds)["w"]
    assert abs(mask.kept() - size * (1 - rate) ** rounds) <= rounds * 0.5 + 1e-9


class Flat:
    """The three flat buffers an optimizer works on (nets.Network has the same)."""

    def __init__(self, params, grads, mask):
        self.dtype = params.dtype
        self.flat_params, self.flat_grads, self.flat_mask = params * mask, grads, mask


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["adam", "momentum", "sgd"]), steps=st.integers(1, 5))
def test_an_optimizer_step_leaves_pruned_weights_exactly_zero(data, kind, steps):
    n = data.draw(st.integers(1, 64))
    floats = st.floats(-10, 10, width=32)
    params = data.draw(hnp.arrays(np.float32, n, elements=floats))
    mask = data.draw(hnp.arrays(np.float32, n, elements=st.sampled_from([0.0, 1.0])))
    net = Flat(params, np.zeros(n, np.float32), mask)
    optimizer = optim.make(kind, net, momentum=0.9, weight_decay=data.draw(st.sampled_from([0.0, 1e-4])))
    for _ in range(steps):
        net.flat_grads[...] = data.draw(hnp.arrays(np.float32, n, elements=floats))
        optimizer.step(1e-3)
        assert np.all(net.flat_params[mask == 0] == 0)
