"""Magnitude pruning (the paper's step 3) and the random-pruning control.

Step 3 of "Identifying winning tickets": prune p% of the weights of smallest
magnitude in the trained weights θ_j, creating a mask m. Two variants:

* layer-wise (Lenet, Conv-2/4/6): each layer removes the fraction p of its own
  *remaining* weights, with its own rate (conv, fc, and the output layer at half
  the fc rate). Exactly round(p × remaining) weights go in each layer, so after n
  rounds a layer keeps the count given by applying that rule n times and
  Pm follows the paper's formula W·(1-p)ⁿ up to that rounding.
* global (Resnet-18, VGG-19): one magnitude threshold over all prunable layers
  together; layers whose kind is left unpruned (shortcut, output) keep everything.

Ties in magnitude are broken by position (a stable sort), so pruning is
deterministic. Every function returns a new ``Mask`` and never revives a weight.
"""
import numpy as np

from .masks import Mask


def smallest_kept(magnitudes, mask, count):
    """Flat positions of the ``count`` smallest magnitudes among kept positions."""
    kept = np.flatnonzero(mask.reshape(-1))
    order = np.argsort(magnitudes.reshape(-1)[kept], kind="stable")
    return kept[order[:count]]


def remove(mask, positions):
    new = mask.copy().reshape(-1)
    new[positions] = 0
    return new.reshape(mask.shape)


def prune_layerwise(mask, weights, rates):
    """Each layer drops round(rate × remaining) of its smallest-magnitude kept weights.

    ``weights``: trained weights by name; ``rates``: fraction p per name (0 = unpruned).
    """
    new = {}
    for name, layer_mask in mask.items():
        count = int(round(rates[name] * np.count_nonzero(layer_mask)))
        new[name] = remove(layer_mask, smallest_kept(np.abs(weights[name]), layer_mask, count))
    return Mask(new)


def prune_global(mask, weights, rate, unpruned=()):
    """Drop round(rate × remaining) weights with one threshold over all layers not in ``unpruned``."""
    names = [name for name in mask if name not in unpruned]
    kept = [np.flatnonzero(mask[name].reshape(-1)) for name in names]
    magnitudes = np.concatenate([np.abs(weights[n]).reshape(-1)[k] for n, k in zip(names, kept)])
    owners = np.concatenate([np.full(len(k), i) for i, k in enumerate(kept)])
    count = int(round(rate * len(magnitudes)))
    doomed = np.argsort(magnitudes, kind="stable")[:count]
    new = {name: layer_mask.copy() for name, layer_mask in mask.items()}
    offsets = np.cumsum([0] + [len(k) for k in kept])
    for i, name in enumerate(names):
        mine = doomed[owners[doomed] == i] - offsets[i]
        new[name] = remove(mask[name], kept[i][mine])
    return Mask(new)


def keep_largest(weights, counts):
    """One-shot pruning: keep the ``counts[name]`` largest-magnitude weights of each layer."""
    return keep_top({name: np.abs(weights[name]) for name in counts}, counts)


def keep_largest_global(weights, total, unpruned=()):
    """One-shot global pruning: keep the ``total`` largest weights over the pruned layers."""
    return keep_top_global({name: np.abs(value) for name, value in weights.items()}, total, unpruned)


def keep_top(scores, counts):
    """Keep the ``counts[name]`` highest-scoring weights of each layer (ties: the first)."""
    new = {}
    for name, count in counts.items():
        flat = scores[name].reshape(-1)
        layer = np.zeros(flat.size, np.float32)
        layer[np.argsort(-flat, kind="stable")[:count]] = 1
        new[name] = layer.reshape(scores[name].shape)
    return Mask(new)


def keep_top_global(scores, total, unpruned=()):
    """Keep the ``total`` highest scores over all layers not in ``unpruned`` (those keep all)."""
    names = [n for n in scores if n not in unpruned]
    flat = np.concatenate([scores[n].reshape(-1) for n in names])
    keep = np.zeros(flat.size, np.float32)
    keep[np.argsort(-flat, kind="stable")[:total]] = 1
    new, offset = {}, 0
    for name in scores:
        if name in unpruned:
            new[name] = np.ones(scores[name].shape, np.float32)
            continue
        size = scores[name].size
        new[name] = keep[offset:offset + size].reshape(scores[name].shape)
        offset += size
    return Mask(new)


def keep_counts(scores, target, unpruned=(), global_pruning=False):
    """Keep the highest ``scores`` with ``target``'s counts: in every layer, or (global
    pruning) the same total over the layers not in ``unpruned``."""
    if global_pruning:
        return keep_top_global(scores, sum(target.kept(n) for n in target if n not in unpruned), unpruned)
    return keep_top(scores, {name: target.kept(name) for name in target})


def random_like(mask, rng):
    """The random-pruning control: the same number of kept weights per layer, at random positions."""
    new = {}
    for name, layer_mask in mask.items():
        layer = np.zeros(layer_mask.size, np.float32)
        layer[rng.permutation(layer_mask.size)[:np.count_nonzero(layer_mask)]] = 1
        new[name] = layer.reshape(layer_mask.shape)
    return Mask(new)


def counts_after(sizes, rates, rounds):
    """Weights kept per layer after ``rounds`` of layer-wise pruning: n ← n - round(p n)."""
    counts = dict(sizes)
    for _ in range(rounds):
        counts = {name: n - int(round(rates[name] * n)) for name, n in counts.items()}
    return counts


def paper_pm(sizes, rates, rounds):
    """The paper's formula: Pm = Σ W_layer (1 - p_layer)ⁿ / W (no rounding)."""
    total = sum(sizes.values())
    return sum(n * (1 - rates[name]) ** rounds for name, n in sizes.items()) / total
