"""Hyperparameters: one dataclass, with the paper's values per network (its Figure 2 table).

Every default lives here and only here; the command line mirrors these fields
(cli.py builds its options from them). Sources, all in the paper:

* Lenet: Adam 1.2e-3, batch 60, 50K iterations; fc 20%, output 10% per round.
* Conv-2/4/6: Adam 2e-4 / 3e-4 / 3e-4, batch 60, 20K / 25K / 30K iterations; conv
  10% / 10% / 15%, fc 20%, output 10%. The dropout variant (Section 3) uses p = 0.5,
  lr 3e-4 / 2e-4 / 2e-4 and three times the iterations (``dropout_variant``).
* Resnet-18: SGD momentum 0.9, batch 128, 30K iterations, lr drops ×0.1 at 20K and
  25K, weight decay 1e-4; global pruning of conv layers at 20%, shortcut and output
  weights unpruned. The paper finds winning tickets at lr 0.03 with 20K iterations
  of warmup (Section 5), which is the default here; ``--lr 0.1 --warmup 0`` is its
  dense baseline.
* VGG-19: as Resnet-18 but batch 64, 112K iterations (160 epochs of 45K images),
  drops at epochs 80 and 120, lr 0.1 with 10K iterations of warmup, output unpruned.
* Evaluation every 100 iterations (Appendix C).
"""
from dataclasses import asdict, dataclass, field, fields, replace


KINDS = ("conv", "fc", "output", "shortcut")  # the kinds of prunable weight (nets.Network.kinds)


@dataclass
class Hyperparameters:
    net: str = "lenet"
    dataset: str = "mnist"
    # training (Appendix C)
    iterations: int = 50_000
    batch_size: int = 60
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup: int = 0
    milestones: tuple = ()
    gamma: float = 0.1
    dropout: float = 0.0
    augment: bool = False
    eval_every: int = 100
    # pruning (Section 1, "Identifying winning tickets")
    pruning: str = "layerwise"  # or "global"
    rate_conv: float = 0.0
    rate_fc: float = 0.2
    rate_output: float = 0.1
    unpruned: tuple = field(default=())  # kinds left dense: "shortcut", "output", "fc"

    def to_dict(self):
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in fields(cls)}
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items() if key in names})

    def rate(self, kind):
        """The fraction p of a layer's remaining weights that each round removes."""
        if kind in self.unpruned:
            return 0.0
        return {"conv": self.rate_conv, "fc": self.rate_fc, "output": self.rate_output}.get(kind, 0.0)

    def validate(self):
        """Raise ValueError naming the first impossible value."""
        checks = [
            (self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}"),
            (self.batch_size > 0, f"batch size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.warmup >= 0, f"warmup must be >= 0 iterations, got {self.warmup}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.eval_every > 0, f"eval interval must be positive, got {self.eval_every}"),
            (self.optimizer in ("adam", "sgd", "momentum"),
             f"unknown optimizer {self.optimizer!r}; choose adam, sgd or momentum"),
            (self.pruning in ("layerwise", "global"),
             f"unknown pruning {self.pruning!r}; choose layerwise or global"),
        ]
        unknown = [kind for kind in self.unpruned if kind not in KINDS]
        checks.append((not unknown, f"unknown kind of layer {unknown[0]!r} in unpruned; choose from "
                                    f"{', '.join(KINDS)}" if unknown else ""))
        for rate_name in ("rate_conv", "rate_fc", "rate_output"):
            rate = getattr(self, rate_name)
            checks.append((0 <= rate < 1, f"{rate_name.replace('_', ' ')} must be in [0, 1), got {rate}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


CONV_NET = dict(dataset="cifar10", batch_size=60, optimizer="adam", rate_fc=0.2, rate_output=0.1)
RESIDUAL = dict(dataset="cifar10", optimizer="momentum", momentum=0.9, weight_decay=1e-4, gamma=0.1,
                augment=True, pruning="global", rate_conv=0.2, rate_fc=0.0, rate_output=0.0)

DEFAULTS = {
    "lenet": Hyperparameters(),
    "conv2": Hyperparameters(net="conv2", iterations=20_000, lr=2e-4, rate_conv=0.1, **CONV_NET),
    "conv4": Hyperparameters(net="conv4", iterations=25_000, lr=3e-4, rate_conv=0.1, **CONV_NET),
    "conv6": Hyperparameters(net="conv6", iterations=30_000, lr=3e-4, rate_conv=0.15, **CONV_NET),
    "resnet18": Hyperparameters(net="resnet18", iterations=30_000, batch_size=128, lr=0.03, warmup=20_000,
                                milestones=(20_000, 25_000), unpruned=("shortcut", "output"), **RESIDUAL),
    "vgg19": Hyperparameters(net="vgg19", iterations=112_000, batch_size=64, lr=0.1, warmup=10_000,
                             milestones=(56_250, 84_375), unpruned=("output",), **RESIDUAL),
}

# Section 3's dropout variant of Conv-2/4/6: p = 0.5, other learning rates, 3x the iterations.
DROPOUT_LR = {"conv2": 3e-4, "conv4": 2e-4, "conv6": 2e-4}


def defaults(net):
    """The paper's hyperparameters for ``net``."""
    if net not in DEFAULTS:
        raise ValueError(f"unknown network {net!r}; choose one of {', '.join(DEFAULTS)}")
    return replace(DEFAULTS[net])


def dropout_variant(net):
    """Section 3: Conv-2/4/6 trained with dropout p = 0.5."""
    base = defaults(net)
    if net not in DROPOUT_LR:
        raise ValueError(f"the paper's dropout variant exists for {', '.join(DROPOUT_LR)}, not {net}")
    return replace(base, dropout=0.5, lr=DROPOUT_LR[net], iterations=3 * base.iterations)
