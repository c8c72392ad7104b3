"""An imp run's settings and its graph of jobs: the part of the paper's protocol that
says *what* to train (Appendix C's trials, rounds and controls), not how.

``Experiment`` holds everything that defines an imp run besides the training
hyperparameters (hparams.py): rounds, trials, controls, seed, rewinding, data order,
retraining and transfer. Each field with help is a flag of ``imp`` (options.py), and
config.json holds them all (``config`` / ``from_config``). ``Job`` is one branch of
one round of one trial, the unit a worker trains (lottery.run_job); ``Job.needs``
draws the graph: round r needs round r − 1's trained ticket, nothing else.
"""
from dataclasses import dataclass, field, fields

from . import hparams, nets, rundir
from .files import RunFileError
from .hparams import option
from .rundir import BRANCHES, CONTROLS  # the branch names live with the run folder


DATA_ORDERS = ("trial", "branch")
# What a run did before a setting existed, where that differs from its default now: a
# config.json without data_order was trained with one minibatch sequence per trial, and
# one without sparse_thresholds with sparse.py's constants of the time.
BEFORE = {"data_order": "trial", "sparse_thresholds": [0.12, 0.06]}
RETRAIN = ("weight-rewind", "lr-rewind", "finetune")
CONTROL_CHOICES = {"none": (), **{control: (control,) for control in CONTROLS}, "both": CONTROLS[:2]}


@dataclass
class Experiment:
    """Everything that defines an imp run besides the training hyperparameters; each field
    with help is a flag of ``imp`` (and seed, data_dir and sparse of ``train`` too)."""
    hp: hparams.Hyperparameters
    rounds: int = option(10, "pruning rounds after the dense round 0")
    trials: int = option(1, "independent trials (seeds seed, seed+1, ...)")
    controls: tuple = option(("reinit",), "controls trained at every round beside the winning ticket",
                             choices=CONTROL_CHOICES, several=True)
    oneshot: bool = option(False, "also train one-shot pruned networks at every round's Pm")
    seed: int = option(0, "seed of trial 0's θ₀, data order and dropout")
    rewind_iteration: int = option(0, "reset to θ_k, the dense weights after k iterations, instead of θ₀")
    checkpoint_every: int = option(5000, "iterations between checkpoints")
    data_dir: str = option(None, "read the dataset's files from this folder", path=True)
    sparse: str = option("auto", "sparse kernels for layers below the density threshold",
                         choices=("auto", "on", "off"))
    data_order: str = option("branch", "minibatch order: 'branch', each branch its own, or 'trial', one sequence "
                                       "for every round and branch of a trial (docs/reproduction.md measures both)",
                             choices=DATA_ORDERS)
    retrain: str = option("weight-rewind", "how a pruned network is trained again: 'weight-rewind' (the paper: "
                          "reset to θ₀, or θ_k), 'lr-rewind' (keep the trained weights, replay the learning-rate "
                          "schedule from iteration k) or 'finetune' (keep them, train at the final rate)",
                          choices=RETRAIN)
    transfer_from: str = option(None, "ticket transfer: train the masks and θ₀ that the imp run in this folder "
                                      "found, round by round, on this run's --dataset", path=True)
    # Under --sparse auto, the densities (train, evaluation) below which layers go sparse:
    # measured once when the run starts (settle_sparse_thresholds) and kept in config.json,
    # so that every job and every resume, on any machine, takes the same path.
    sparse_thresholds: tuple = None

    def validate(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if not 0 <= self.rewind_iteration <= self.hp.iterations:
            raise ValueError(f"rewind iteration {self.rewind_iteration} must be between 0 and the "
                             f"training budget of {self.hp.iterations} iterations")
        unknown = set(self.controls) - set(CONTROLS)
        if unknown:
            raise ValueError(f"unknown control {sorted(unknown)[0]!r}; choose from {', '.join(CONTROLS)}, "
                             "both or none (several with commas)")
        if self.data_order not in DATA_ORDERS:
            raise ValueError(f"unknown data order {self.data_order!r}; choose trial or branch")
        if self.retrain not in RETRAIN:
            raise ValueError(f"unknown retraining {self.retrain!r}; choose {', '.join(RETRAIN)}")
        if self.transfer_from and (self.rewind_iteration or self.retrain != "weight-rewind"):
            raise ValueError("--transfer-from trains the source's tickets from θ₀; leave out --rewind-iteration "
                             "and --retrain")
        if self.checkpoint_every <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {self.checkpoint_every}")
        self.hp.validate()
        return self

    def config(self):
        """The experiment as config.json holds it (``from_config`` reads it back)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hp"}
        if self.sparse_thresholds is not None:
            values["sparse_thresholds"] = list(self.sparse_thresholds)
        return {"hyperparameters": self.hp.to_dict(), **values, "controls": list(self.controls),
                "versions": rundir.versions()}

    @classmethod
    def from_config(cls, config, path="config.json"):
        """The experiment a config.json describes; RunFileError naming ``path`` if it cannot."""
        names = {f.name for f in fields(cls)} - {"hp"}
        try:
            values = {name: config[name] for name in names if name in config}
            values["controls"] = tuple(values.get("controls", ()))
            if values.get("sparse_thresholds") is not None:
                values["sparse_thresholds"] = tuple(float(v) for v in values["sparse_thresholds"])
            experiment = cls(hparams.Hyperparameters.from_dict(config["hyperparameters"]), **values)
            return experiment.validate()
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise RunFileError(f"{path}: damaged ({type(error).__name__}: {error}); restore it, or start "
                               "the run again in another folder") from None

    @classmethod
    def complete_config(cls, config):
        """An older config.json with every setting added since, at the behaviour the run had
        before the setting existed: its default then (``BEFORE``), else its default now."""
        defaults = {f.name: f.default for f in fields(cls) if f.name != "hp"}
        defaults["controls"] = list(defaults["controls"])
        return {**defaults, **BEFORE, **config}

    def branches(self, round_index):
        """The branches trained at a round, in order."""
        names = ["ticket", *self.controls] + (["oneshot"] if self.oneshot else [])
        if round_index == 0:  # a random mask or one-shot pruning of the dense net is the dense net
            names = [b for b in names if b in ("ticket", "reinit")]
        return names

    def jobs(self):
        """Every job of the run, earliest round first (the order a single worker takes them)."""
        every = [Job(trial, r, branch, chained=not self.transfer_from) for trial in range(self.trials)
                 for r in range(self.rounds + 1) for branch in self.branches(r)]
        return sorted(every, key=Job.priority)

    def settle_sparse_thresholds(self, started=None, cores=None):
        """Fix the run's sparse thresholds: those of the config.json it ``started`` with (sparse.py's
        old constants for a run from before they were measured), else measured now for jobs on
        ``cores`` cores each (calibration.py; cached per machine)."""
        from . import calibration
        kept = self.complete_config(started)["sparse_thresholds"] if started is not None else None
        if self.sparse != "auto":
            self.sparse_thresholds = None
        elif kept is not None:
            self.sparse_thresholds = tuple(float(value) for value in kept)
        else:
            self.sparse_thresholds = tuple(calibration.thresholds_on(cores)[:3])
        return self

    def build(self, seed, input_shape):
        """The network with θ ~ D_θ drawn from ``seed``, for images of ``input_shape`` (C, H, W)."""
        return nets.build(self.hp.net, seed=seed, input_shape=input_shape, dropout=self.hp.dropout,
                          sparse=self.sparse, sparse_thresholds=self.sparse_thresholds)

    def trial_seed(self, trial):
        """The seed of a trial's θ₀ and of its data order and dropout."""
        return self.seed + trial

    def initial_weights(self, trial, input_shape):
        """Step 1, θ₀ ~ D_θ: drawn from the trial's seed, or the source run's when transferring."""
        net = self.build(self.trial_seed(trial), input_shape)
        if self.transfer_from:
            return rundir.RunFolder(self.transfer_from).theta_0(trial, net)
        return net.snapshot()

    def check_transfer(self):
        """The source of --transfer-from must hold every round and trial of this run, for the same network."""
        if not self.transfer_from:
            return
        source = rundir.RunFolder(self.transfer_from)
        if not (source.root / "config.json").exists():
            raise ValueError(f"--transfer-from {source.root}: not an imp run folder (no config.json)")
        config = source.config()
        if config.get("rewind_iteration") or config.get("retrain", "weight-rewind") != "weight-rewind":
            raise ValueError(f"{source.root} did not reset its tickets to θ₀ (--rewind-iteration or --retrain); "
                             "transfer takes the masks and θ₀ of a run that did")
        if config["hyperparameters"].get("net") != self.hp.net:
            raise ValueError(f"{source.root} holds tickets of {config['hyperparameters'].get('net')}, not "
                             f"{self.hp.net}; choose a run of the same --net")
        for trial in range(self.trials):
            for r in range(self.rounds + 1):
                if not source.branch_at(trial, r, "ticket").finished():
                    raise ValueError(f"{source.root} has no finished ticket at trial {trial} round {r}; "
                                     "choose fewer --rounds or --trials, or run the source further")


@dataclass(frozen=True)
class Job:
    """One branch of one round of one trial: the unit of work that runs on a worker."""
    trial: int
    round: int
    branch: str
    chained: bool = field(default=True, compare=False)  # False: its masks come from another run

    def needs(self):
        """The jobs whose files this one reads: round r prunes round r − 1's trained ticket
        (whose own chain reaches back to round 0, which one-shot pruning reads too). A
        transferred ticket reads only the source run's files; one-shot, this run's dense net."""
        if self.round == 0:
            return []
        if not self.chained:
            return [Job(self.trial, 0, "ticket", chained=False)] if self.branch == "oneshot" else []
        return [Job(self.trial, self.round - 1, "ticket")]

    def priority(self):
        """Earlier rounds first, the ticket (the critical path) before its controls."""
        return self.round, self.branch != "ticket", self.trial, BRANCHES.index(self.branch)

    def __str__(self):
        return f"trial {self.trial} round {self.round} {self.branch}"
