"""The mask m: which weights of a network are still in the ticket.

The paper writes a pruned network as f(x; m ⊙ θ): m holds a 0/1 entry for every
prunable weight (biases are never pruned). Following open_lth, a ``Mask`` refuses
any value other than 0 and 1, and pruning (pruning.py) returns a *new* mask, so a
round never edits the mask of the round before.

Pm, the paper's "percent of weights remaining", is the fraction of ones over all
prunable weights (weights of layers left dense, such as Resnet-18's shortcuts,
count as ones).
"""
import numpy as np

from .files import RunFileError, read_npz, write_npz


class Mask(dict):
    """A dict from weight name to a 0/1 float32 array of that weight's shape."""

    def __init__(self, arrays):
        super().__init__()
        for name, values in arrays.items():
            self[name] = values

    def __setitem__(self, name, values):
        """Every way in refuses anything but 0 and 1, building a mask or assigning to it."""
        values = np.asarray(values)
        if not np.all((values == 0) | (values == 1)):
            bad = values[(values != 0) & (values != 1)].flat[0]
            raise ValueError(f"mask of {name} holds {bad.item()!r}; a mask may only hold 0 and 1")
        super().__setitem__(name, values.astype(np.float32))

    def update(self, *args, **kwargs):
        for name, values in dict(*args, **kwargs).items():
            self[name] = values

    @classmethod
    def ones_like(cls, net):
        """The dense network's mask: every prunable weight kept."""
        return cls({name: np.ones(mask.shape, np.float32) for name, mask in net.masks.items()})

    def kept(self, name=None):
        """Number of weights kept, in one layer or all of them."""
        names = [name] if name else list(self)
        return int(sum(np.count_nonzero(self[n]) for n in names))

    def size(self, name=None):
        names = [name] if name else list(self)
        return int(sum(self[n].size for n in names))

    def density(self, name=None):
        """Pm as a fraction: kept / total, overall or for one layer."""
        return self.kept(name) / self.size(name)

    def per_layer_density(self):
        return {name: self.density(name) for name in self}

    def save(self, path):
        write_npz(path, {name: values.astype(np.uint8) for name, values in self.items()})

    @classmethod
    def load(cls, path, like=None):
        """Read a mask file; ``like`` (a network) checks names and shapes."""
        arrays = read_npz(path)
        try:
            mask = cls(arrays)
        except ValueError as error:
            raise RunFileError(f"{path}: corrupt mask file ({error}); delete it to recompute") from None
        if like is not None:
            expected = {name: m.shape for name, m in like.masks.items()}
            found = {name: m.shape for name, m in mask.items()}
            if expected != found:
                raise RunFileError(f"{path}: corrupt mask file (its weights and shapes do not match "
                                   f"{like.name}); delete it to recompute")
        return mask
