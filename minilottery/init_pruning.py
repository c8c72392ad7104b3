"""Pruning at initialisation, as controls beside the winning ticket: SNIP and SynFlow.

Each chooses a mask at the weights a branch starts from (θ₀), before any training,
with the ticket's counts at that round: the same number of weights in every layer
(layer-wise pruning) or the same total over the pruned layers (global pruning). The
branch then trains from θ₀ like the ticket. Where the ticket's mask comes from
training and pruning again and again, these read one number per weight at θ₀:

* SNIP (Lee, Ajanthan & Torr, ICLR 2019): the score |g ⊙ θ|, with g = ∂L/∂θ of the
  dense network at θ₀ on one minibatch of training data; the highest scores are
  kept, in one shot.
* SynFlow (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020): the score |∂R/∂θ ⊙ θ|,
  where R = 1ᵀ f(1; |θ|) is the sum of the logits of the network whose parameters
  are replaced by their magnitudes, fed one all-ones input, in evaluation mode
  (batch norm with its running statistics). It needs no data. Pruning is
  iterative: at step s of 100 every layer keeps the fraction d^(s/100) of its
  weights (d: the layer's target density; the whole network's under global
  pruning), scored again after every step. In float64, because R multiplies the
  magnitudes of every layer, 20 of them in VGG-19.
"""
import numpy as np

from . import nets, pruning
from .losses import softmax_cross_entropy
from .masks import Mask

SYNFLOW_STEPS = 100


def snip_scores(net, x, y):
    """|∂L/∂θ ⊙ θ| of every prunable weight, L the mean loss of ``net`` on the minibatch (x, y)."""
    _, dlogits = softmax_cross_entropy(net.forward(x, train=True), y)
    net.backward(dlogits)
    return {name: np.abs(net.grads[name] * net.params[name]) for name in net.masks}


def synflow_scores(net):
    """|∂R/∂θ ⊙ θ| with R the sum of ``net``'s logits for one all-ones input.

    ``net`` must already hold the magnitudes |θ| (``synflow`` puts them there)."""
    logits = net.forward(np.ones((1, *net.input_shape), net.dtype), train=False)
    net.backward(np.ones_like(logits))
    return {name: np.abs(net.grads[name] * net.params[name]) for name in net.masks}


def snip(net, x, y, target, unpruned=(), global_pruning=False):
    """SNIP's mask, with ``target``'s counts, for ``net`` (dense, at the weights to score)."""
    return pruning.keep_counts(snip_scores(net, x, y), target, unpruned, global_pruning)


def synflow(name, weights, target, unpruned=(), global_pruning=False, input_shape=None,
            steps=SYNFLOW_STEPS):
    """SynFlow's mask for network ``name`` at ``weights`` (by parameter name), with ``target``'s
    counts, reached in ``steps`` exponentially spaced steps."""
    net = nets.build(name, input_shape=input_shape, dtype=np.float64, sparse="off")
    magnitudes = {key: np.abs(value).astype(np.float64) for key, value in weights.items()}
    sizes = {key: target[key].size for key in target}
    pruned = [key for key in target if key not in unpruned]
    total, kept = sum(sizes[k] for k in pruned), target.kept() - sum(sizes[k] for k in target if k in unpruned)
    mask = Mask.ones_like(net)
    for step in range(1, steps + 1):
        fraction = step / steps
        net.set_params(magnitudes)
        net.set_mask(mask)  # the pruned weights are zero, so their paths carry nothing
        scores = synflow_scores(net)
        for key in mask:  # a pruned weight never comes back, whatever its score
            scores[key][mask[key] == 0] = -np.inf
        if global_pruning:
            mask = pruning.keep_top_global(scores, round(total * (kept / total) ** fraction), unpruned)
        else:
            counts = {key: round(sizes[key] * (target.kept(key) / sizes[key]) ** fraction) for key in target}
            mask = pruning.keep_top(scores, counts)
    return mask
