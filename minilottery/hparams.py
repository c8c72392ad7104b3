"""Hyperparameters: one dataclass, with the paper's values per network (its Figure 2 table).

Every default lives here and only here; the command line mirrors these fields
(cli.py builds its options from them). Sources, all in the paper:

* Lenet: Adam 1.2e-3, batch 60, 50K iterations; fc 20%, output 10% per round (connections
  to the outputs at half the fc rate, ``Hyperparameters.rate``).
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
RATED = ("conv", "fc", "output")  # the kinds with a pruning rate of their own


def label_output(kinds):
    """Mark a network's last fc layer as "output": the layer whose connections to the
    outputs the paper prunes at half the fc rate (``Hyperparameters.rate``)."""
    fc = [name for name, kind in kinds.items() if kind == "fc"]
    return {name: "output" if fc and name == fc[-1] else kind for name, kind in kinds.items()}


def option(default, help, **more):
    """A field that is also a command-line flag (cli.py makes --name-with-dashes of it)."""
    return field(default=default, metadata={"help": help, **more})


@dataclass
class Hyperparameters:
    """One training run's hyperparameters; each field is a flag of ``train`` and ``imp``."""
    net: str = option("lenet", "network of the paper's Figure 2", flag=False)
    dataset: str = option("mnist", "dataset: mnist, fashion-mnist or cifar10 [network's default]")
    # training (Appendix C)
    iterations: int = option(50_000, "training iterations per run [paper: lenet 50000]")
    batch_size: int = option(60, "minibatch size [paper: 60 for lenet and conv-n]")
    optimizer: str = option("adam", "adam, sgd or momentum")
    lr: float = option(1.2e-3, "learning rate [paper: lenet 1.2e-3]")
    momentum: float = option(0.9, "momentum coefficient for --optimizer momentum")
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(0.0, "L2 weight decay")
    warmup: int = option(0, "linear learning-rate warmup over this many iterations")
    milestones: tuple = option((), "comma-separated iterations at which lr is multiplied by --gamma")
    gamma: float = option(0.1, "learning-rate drop factor at each milestone")
    dropout: float = option(0.0, "dropout probability after hidden fc layers (0 = none)")
    augment: bool = option(False, "random flip + 4-pixel pad/crop augmentation")
    eval_every: int = option(100, "evaluate validation and test sets every N iterations [paper: 100]")
    # pruning (Section 1, "Identifying winning tickets"). A rate of None: no rate of its
    # own (a network without conv layers, a kind left to global pruning); the output
    # layer's None is the paper's rule, half the fc rate.
    pruning: str = option("layerwise", "layerwise (Lenet, Conv-n) or global (Resnet-18, VGG-19)", pruning=True)
    rate_conv: float = option(None, "fraction of remaining conv weights pruned per round", pruning=True)
    rate_fc: float = option(0.2, "fraction of remaining fc weights pruned per round [paper: 0.2]", pruning=True)
    rate_output: float = option(None, "fraction of remaining output-layer weights pruned per round "
                                      "[paper: half the fc rate]", pruning=True)
    unpruned: tuple = option((), "comma-separated kinds left unpruned: conv, fc, output, shortcut", pruning=True)

    def to_dict(self):
        """The fields as config.json holds them, with the rates in effect (0 for none)."""
        values = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        values.update({f"rate_{kind}": self.rate(kind, unpruned=()) for kind in RATED})
        return values

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in fields(cls)}
        values = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in values.items() if key in names}
        for kind in RATED:  # a rate of 0 in a file says: no rate of its own
            if values.get(f"rate_{kind}") == 0:
                values[f"rate_{kind}"] = None
        return cls(**values)

    def rate(self, kind, unpruned=None):
        """The fraction p of a layer's remaining weights that each round removes.

        The paper prunes connections to the outputs at half the rate of the other fc
        layers ("output" is the kind of a network's last fc layer, see ``label_output``),
        unless ``rate_output`` is given. Kinds in ``unpruned`` keep everything.
        """
        if kind in (self.unpruned if unpruned is None else unpruned):
            return 0.0
        if kind == "output" and self.rate_output is None:
            return self.rate_fc / 2 if self.rate_fc else 0.0
        return {"conv": self.rate_conv, "fc": self.rate_fc, "output": self.rate_output}.get(kind) or 0.0

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
        for kind in RATED:  # every pruning rate is checked here, and only here
            rate = getattr(self, f"rate_{kind}")
            checks.append((rate is None or 0 < rate < 1,
                           f"--rate-{kind} must be between 0 and 1 (exclusive), got {rate}; to leave a kind "
                           "of layer dense use --unpruned"))
        checks.append((self.pruning == "global" or any(self.rate(kind) for kind in RATED),
                       "every pruning rate is 0: nothing would be pruned; set --rate-fc above 0"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


CONV_NET = dict(dataset="cifar10", batch_size=60, optimizer="adam", rate_fc=0.2)
RESIDUAL = dict(dataset="cifar10", optimizer="momentum", momentum=0.9, weight_decay=1e-4, gamma=0.1,
                augment=True, pruning="global", rate_conv=0.2, rate_fc=None)

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


def from_options(net, given):
    """The paper's hyperparameters for ``net`` with the fields a user gave (None: not given);
    a list field may come as comma-separated text, as it does from the command line."""
    hp = defaults(net)
    chosen = {}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(getattr(hp, name), tuple) and isinstance(value, str):
            try:
                value = tuple(int(v) if name == "milestones" else v.strip() for v in value.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"--{name} takes comma-separated iterations such as 20000,25000, "
                                 f"got {value!r}") from None
        chosen[name] = value
    return replace(hp, **chosen).validate()


def dropout_variant(net):
    """Section 3: Conv-2/4/6 trained with dropout p = 0.5."""
    base = defaults(net)
    if net not in DROPOUT_LR:
        raise ValueError(f"the paper's dropout variant exists for {', '.join(DROPOUT_LR)}, not {net}")
    return replace(base, dropout=0.5, lr=DROPOUT_LR[net], iterations=3 * base.iterations)
