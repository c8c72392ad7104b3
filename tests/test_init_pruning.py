"""SNIP and SynFlow (pruning at initialisation): scores checked against values worked out
by hand on tiny networks, and the masks they choose against the ticket's counts."""
import numpy as np
import pytest

from minilottery import init_pruning, nets
from minilottery.layers import Dense, ReLU
from minilottery.masks import Mask


def tiny(layers, weights):
    net = nets.Network("tiny", layers, dtype=np.float64, sparse="off")
    net.set_params({name: np.zeros_like(value) for name, value in net.params.items()})
    net.set_params({**net.snapshot(), **{k: np.array(v, np.float64) for k, v in weights.items()}})
    return net


def test_snip_scores_by_hand():
    # logits z = x W with b = 0: both images give z1 = z2 (1·1 + 0·3 = 1, 1; 0 + 2·3 = 6, 6),
    # so p = (1/2, 1/2). With labels 0 and 1, dL/dz = (p − onehot) / 2 for the mean loss:
    # image 1 (−1/4, 1/4), image 2 (1/4, −1/4). g = xᵀ dL/dz = [[−1/4, 1/4], [1/2, −1/2]],
    # and |g ⊙ W| = [[1/4, 1/4], [3/2, 3/2]].
    net = tiny([("fc", Dense(2, 2, np.float64))], {"fc.weight": [[1, 1], [3, 3]]})
    scores = init_pruning.snip_scores(net, np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 1]))
    np.testing.assert_allclose(scores["fc.weight"], [[0.25, 0.25], [1.5, 1.5]])
    assert list(scores) == ["fc.weight"]  # biases are never pruned, so never scored


def test_synflow_scores_by_hand():
    # With every parameter positive and an all-ones input the ReLU passes everything:
    # h = 1ᵀ|W1| = (1 + 3 + 1, 2 + 0.5 + 1) = (5, 3.5) and R = Σ_j h_j s_j, s = |W2| 1 = (3, 3.5).
    # ∂R/∂W1_ij = s_j, ∂R/∂W2_jk = h_j, so the scores are |W1_ij| s_j and h_j |W2_jk|.
    net = tiny([("fc1", Dense(3, 2, np.float64)), ("relu", ReLU()), ("fc2", Dense(2, 2, np.float64))],
               {"fc1.weight": [[1, 2], [3, 0.5], [1, 1]], "fc2.weight": [[2, 1], [0.5, 3]]})
    net.input_shape = (3,)
    scores = init_pruning.synflow_scores(net)
    np.testing.assert_allclose(scores["fc1.weight"], [[3, 7], [9, 1.75], [3, 3.5]])
    np.testing.assert_allclose(scores["fc2.weight"], [[10, 5], [1.75, 10.5]])


def test_synflow_scores_are_the_paths_through_each_weight():
    # R sums, over every input-to-output path, the product of the magnitudes on it; a weight's
    # score is the sum over the paths through it, here by brute force over every path
    rng = np.random.default_rng(0)
    w1, w2, w3 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    net = tiny([("fc1", Dense(4, 3, np.float64)), ("r1", ReLU()), ("fc2", Dense(3, 3, np.float64)),
                ("r2", ReLU()), ("fc3", Dense(3, 2, np.float64))],
               {"fc1.weight": np.abs(w1), "fc2.weight": np.abs(w2), "fc3.weight": np.abs(w3)})
    net.input_shape = (4,)
    scores = init_pruning.synflow_scores(net)
    expected = np.zeros((3, 3))
    for i in range(4):
        for j in range(3):
            for k in range(3):
                for m in range(2):
                    expected[j, k] += abs(w1[i, j] * w2[j, k] * w3[k, m])
    np.testing.assert_allclose(scores["fc2.weight"], expected)


@pytest.mark.parametrize("global_pruning", [False, True])
def test_synflow_mask_has_the_tickets_counts(global_pruning):
    net = nets.build("lenet", seed=0)
    rng = np.random.default_rng(1)
    target = Mask({n: rng.random(m.shape) < d for (n, m), d in zip(net.masks.items(), (0.2, 0.3, 0.6))})
    mask = init_pruning.synflow(
        "lenet", net.snapshot(), target, global_pruning=global_pruning, steps=10)
    if global_pruning:
        assert mask.kept() == target.kept()
    else:
        assert {n: mask.kept(n) for n in mask} == {n: target.kept(n) for n in target}
    assert mask.kept() < mask.size()


def test_synflow_keeps_every_layer_at_one_percent():
    # Iterative SynFlow avoids layer collapse (Tanaka et al.): pruned globally to 1% of
    # Lenet's weights in 100 steps every layer keeps some (the target's 1% lies all in fc1);
    # scored once, fc1 loses everything
    net = nets.build("lenet", seed=0)
    target = Mask({n: np.zeros(m.shape, np.float32) for n, m in net.masks.items()})
    total = sum(m.size for m in net.masks.values())
    flat = np.zeros(total, np.float32)
    flat[:total // 100] = 1
    offset = 0
    for name in target:
        target[name] = flat[offset:offset + target[name].size].reshape(target[name].shape)
        offset += target[name].size
    mask = init_pruning.synflow("lenet", net.snapshot(), target, global_pruning=True, steps=100)
    assert mask.kept() == target.kept()
    assert all(mask.kept(n) > 0 for n in mask), {n: mask.kept(n) for n in mask}
    one_step = init_pruning.synflow("lenet", net.snapshot(), target, global_pruning=True, steps=1)
    assert one_step.kept("fc1.weight") == 0  # in one step the widest layer goes: the net is cut


def test_snip_mask_keeps_the_highest_scores():
    net = nets.build("lenet", seed=0)
    rng = np.random.default_rng(3)
    x, y = rng.random((60, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 60)
    target = Mask({n: (rng.random(m.shape) < 0.1).astype(np.float32) for n, m in net.masks.items()})
    scores = init_pruning.snip_scores(net, x, y)
    mask = init_pruning.snip(net, x, y, target)
    for name in mask:
        assert mask.kept(name) == target.kept(name)
        assert scores[name][mask[name] == 1].min() >= scores[name][mask[name] == 0].max()
