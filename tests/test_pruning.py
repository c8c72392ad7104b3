"""Masks and magnitude pruning say what the paper says (Section 1 and Figure 2's formula)."""
import numpy as np
import pytest

from minilottery import hparams, nets, pruning
from minilottery.masks import Mask


def global_threshold(mask, weights, unpruned=()):
    """The smallest magnitude still kept across the pruned layers."""
    values = [np.abs(weights[n])[mask[n] == 1] for n in mask if n not in unpruned]
    return float(min(v.min() for v in values if v.size))


@pytest.fixture(scope="module")
def lenet():
    return nets.build("lenet", seed=0)


def rates_of(net, hp):
    return {name: hp.rate(kind) for name, kind in net.kinds.items()}


def test_mask_refuses_values_other_than_0_and_1():
    with pytest.raises(ValueError, match="may only hold 0 and 1"):
        Mask({"fc1.weight": np.array([0.0, 0.5, 1.0])})
    with pytest.raises(ValueError, match="holds 2"):
        Mask({"fc1.weight": np.array([2, 1, 0])})


def test_pm_per_layer_after_k_rounds_follows_the_formula(lenet, rng):
    hp = hparams.defaults("lenet")
    rates = rates_of(lenet, hp)
    sizes = {name: m.size for name, m in lenet.masks.items()}
    mask = Mask.ones_like(lenet)
    for k in range(1, 8):
        weights = {name: rng.standard_normal(m.shape) for name, m in lenet.masks.items()}
        mask = pruning.prune_layerwise(mask, weights, rates)
        assert {name: mask.kept(name) for name in mask} == pruning.counts_after(sizes, rates, k)
        for name in mask:  # per layer: (1 - p)^k up to rounding one weight per round
            assert abs(mask.density(name) - (1 - rates[name]) ** k) <= k / sizes[name]
        assert abs(mask.density() - pruning.paper_pm(sizes, rates, k)) < 1e-4
    # the paper's Lenet sequence: Pm 51.3% after 3 rounds, 21.1% after 7
    assert pruning.paper_pm(sizes, rates, 3) == pytest.approx(0.513, abs=5e-4)
    assert pruning.paper_pm(sizes, rates, 7) == pytest.approx(0.211, abs=5e-4)


def test_output_layer_prunes_at_half_rate(lenet, rng):
    assert lenet.kinds == {"fc1.weight": "fc", "fc2.weight": "fc", "fc3.weight": "output"}
    weights = {name: rng.standard_normal(m.shape) for name, m in lenet.masks.items()}
    mask = pruning.prune_layerwise(Mask.ones_like(lenet), weights, rates_of(lenet, hparams.defaults("lenet")))
    assert mask.density("fc1.weight") == pytest.approx(0.8, abs=1e-5)
    assert mask.density("fc2.weight") == pytest.approx(0.8)
    assert mask.density("fc3.weight") == pytest.approx(0.9)


def test_magnitude_pruning_removes_the_smallest_and_never_revives(rng):
    mask = Mask({"w": (rng.random((20, 30)) < 0.5).astype(np.float32)})
    weights = {"w": rng.standard_normal((20, 30))}
    weights["w"][mask["w"] == 0] = 100.0  # huge pruned weights must not come back
    new = pruning.prune_layerwise(mask, weights, {"w": 0.3})
    assert np.all(new["w"] <= mask["w"])
    assert new.kept() == mask.kept() - round(0.3 * mask.kept())
    removed = (mask["w"] == 1) & (new["w"] == 0)
    assert np.abs(weights["w"][removed]).max() <= np.abs(weights["w"][new["w"] == 1]).min()


def test_ties_are_broken_deterministically():
    mask = Mask({"w": np.ones(10, np.float32)})
    new = pruning.prune_layerwise(mask, {"w": np.ones(10)}, {"w": 0.3})
    np.testing.assert_array_equal(new["w"], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])


def test_global_pruning_uses_one_threshold(rng):
    mask = Mask({"a": np.ones((30, 10), np.float32), "b": np.ones((50,), np.float32),
                 "skip": np.ones((5, 5), np.float32)})
    weights = {"a": rng.standard_normal((30, 10)), "b": 3 * rng.standard_normal(50), "skip": 1e-6 * np.ones((5, 5))}
    new = pruning.prune_global(mask, weights, 0.4, unpruned=["skip"])
    pruned = np.concatenate([np.abs(weights[n])[(mask[n] == 1) & (new[n] == 0)] for n in ("a", "b")])
    kept = np.concatenate([np.abs(weights[n])[new[n] == 1] for n in ("a", "b")])
    assert pruned.max() <= kept.min() == global_threshold(new, weights, unpruned=["skip"])
    assert len(pruned) == round(0.4 * 350)
    assert new.density("skip") == 1.0
    assert new.density("a") != new.density("b")  # layers lose different fractions


def test_random_mask_has_the_same_counts_at_other_positions(lenet, rng):
    weights = {name: rng.standard_normal(m.shape) for name, m in lenet.masks.items()}
    mask = pruning.prune_layerwise(Mask.ones_like(lenet), weights, rates_of(lenet, hparams.defaults("lenet")))
    random = pruning.random_like(mask, np.random.default_rng(0))
    for name in mask:
        assert random.kept(name) == mask.kept(name)
        assert not np.array_equal(random[name], mask[name])


def test_one_shot_keeps_the_largest(rng):
    weights = {"w": rng.standard_normal(100), "v": rng.standard_normal(40)}
    mask = pruning.keep_largest(weights, {"w": 10, "v": 40})
    assert mask.kept("w") == 10 and mask.kept("v") == 40
    assert np.abs(weights["w"][mask["w"] == 1]).min() >= np.abs(weights["w"][mask["w"] == 0]).max()
    both = pruning.keep_largest_global(weights, 30, unpruned=["v"])
    assert both.kept("w") == 30 and both.density("v") == 1.0


def test_mask_file_round_trip_and_corruption(tmp_path, lenet):
    mask = Mask.ones_like(lenet)
    mask.save(tmp_path / "mask.npz")
    assert Mask.load(tmp_path / "mask.npz", like=lenet).kept() == mask.kept()
    (tmp_path / "mask.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="damaged NPZ"):
        Mask.load(tmp_path / "mask.npz")


def test_a_mask_refuses_anything_but_0_and_1_when_assigned_too():
    mask = Mask({"w": np.ones(3)})
    with pytest.raises(ValueError, match="a mask may only hold 0 and 1"):
        mask["w"] = np.array([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="a mask may only hold 0 and 1"):
        mask.update(w=np.array([2.0, 0.0, 1.0]))
    assert np.array_equal(mask["w"], np.ones(3))


def test_the_output_layer_prunes_at_half_the_fc_rate_unless_told_otherwise():
    from dataclasses import replace
    hp = hparams.defaults("lenet")
    assert replace(hp, rate_fc=0.4).rate("output") == pytest.approx(0.2)
    assert replace(hp, rate_fc=0.4, rate_output=0.3).rate("output") == pytest.approx(0.3)
    assert hparams.Hyperparameters.from_dict(replace(hp, rate_fc=0.4).to_dict()).rate("output") == pytest.approx(0.2)
    kinds = nets.build("lenet").kinds
    assert kinds == {"fc1.weight": "fc", "fc2.weight": "fc", "fc3.weight": "output"}
