"""Iterative magnitude pruning: the paper's "Identifying winning tickets" and its controls.

    1. Randomly initialize a network f(x; θ₀)            (θ₀ ~ D_θ)
    2. Train it for j iterations, arriving at θ_j.
    3. Prune p% of the weights in θ_j, creating a mask m.
    4. Reset the remaining weights to θ₀: the ticket is f(x; m ⊙ θ₀).

Round 0 trains the dense network; round r + 1 prunes round r's trained ticket and
resets (``Lottery.run_trial`` reads as those four steps). Each round also trains
the controls of Section 2, branching off that round's mask rather than forming
chains of their own:

* ``reinit``: the same mask m, fresh weights θ'₀ ~ D_θ from another seed;
* ``random``: a random mask with m's per-layer counts, reset to θ₀;
* ``oneshot``: the dense network of round 0 pruned once, straight to this round's Pm.

With ``rewind_iteration`` k > 0, resets go to θ_k, the dense run's weights after k
iterations, and training resumes from iteration k (Frankle et al. 2020).
"""
import time
from dataclasses import dataclass, field

import numpy as np

from . import files, nets, pruning, rundir
from .masks import Mask
from .train import Trainer

CONTROLS = ("reinit", "random")


class Interrupted(Exception):
    """Ctrl-C: the current branch was checkpointed and the run can be resumed."""


@dataclass
class Experiment:
    """Everything that defines an imp run besides the training hyperparameters."""
    hp: object
    rounds: int = 10
    trials: int = 1
    controls: tuple = ("reinit",)
    oneshot: bool = False
    seed: int = 0
    rewind_iteration: int = 0
    checkpoint_every: int = 5000
    data_dir: str = None
    sparse: str = "auto"

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
            raise ValueError(f"unknown control {sorted(unknown)[0]!r}; choose reinit, random, both or none")
        for kind in ("conv", "fc", "output"):
            rate = self.hp.rate(kind)
            if self.hp.pruning == "layerwise" and not 0 <= rate < 1:
                raise ValueError(f"pruning rate for {kind} layers must be in [0, 1), got {rate}")
        if self.hp.pruning == "layerwise" and not any(0 < self.hp.rate(k) for k in ("conv", "fc", "output")):
            raise ValueError("every pruning rate is 0: nothing would be pruned; set --rate-fc above 0")
        if self.checkpoint_every <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {self.checkpoint_every}")
        self.hp.validate()
        return self

    def config(self):
        return {"hyperparameters": self.hp.to_dict(), "rounds": self.rounds, "trials": self.trials,
                "controls": list(self.controls), "oneshot": self.oneshot, "seed": self.seed,
                "rewind_iteration": self.rewind_iteration, "checkpoint_every": self.checkpoint_every,
                "data_dir": self.data_dir, "sparse": self.sparse, "versions": rundir.versions()}

    def branches(self, round_index):
        """The branches trained at a round, in order."""
        names = ["ticket", *self.controls] + (["oneshot"] if self.oneshot else [])
        if round_index == 0:  # a random mask or one-shot pruning of the dense net is the dense net
            names = [b for b in names if b in ("ticket", "reinit")]
        return names


@dataclass
class Progress:
    """Counters that the command line turns into a progress line and a table."""
    total_iterations: int
    done_iterations: int = 0
    round_results: dict = field(default_factory=dict)


class Lottery:
    """Runs an Experiment into a RunFolder, skipping whatever is already finished."""

    def __init__(self, experiment, folder, data, on_eval=None, on_round=None, stop_requested=None):
        self.experiment, self.folder, self.data = experiment, folder, data
        self.hp = experiment.hp
        self.on_eval = on_eval or (lambda *args: None)
        self.on_round = on_round or (lambda *args: None)
        self.stop_requested = stop_requested or (lambda: False)
        branch_count = sum(len(experiment.branches(r)) for r in range(experiment.rounds + 1))
        self.progress = Progress(experiment.trials * branch_count * self.hp.iterations)

    def build(self, seed):
        return nets.build(self.hp.net, seed=seed, input_shape=self.data.input_shape, dropout=self.hp.dropout,
                          sparse=self.experiment.sparse)

    def run(self):
        for trial in range(self.experiment.trials):
            self.run_trial(trial)

    def run_trial(self, trial):
        seed = self.experiment.seed + trial
        theta_0 = self.initial_weights(trial, seed)                 # 1. θ₀ ~ D_θ
        mask = Mask.ones_like(self.build(seed))
        dense_weights = None
        for round_index in range(self.experiment.rounds + 1):
            reset, start = self.reset_point(trial, round_index, theta_0)
            results = {}
            # 2. train f(x; m ⊙ θ₀) and  3. prune p% of the smallest |θ_j| into the next mask
            results["ticket"], trained = self.train_branch(trial, round_index, "ticket", mask, reset, start, seed)
            next_mask = self.prune(mask, trained)
            self.record_distances(trial, round_index, results["ticket"], mask, next_mask, trained, reset)
            if round_index == 0:
                dense_weights = trained
            for branch in self.experiment.branches(round_index)[1:]:
                branch_mask, branch_reset = self.control(branch, trial, round_index, mask, reset, dense_weights)
                results[branch], _ = self.train_branch(trial, round_index, branch, branch_mask, branch_reset,
                                                       start, seed)
            self.folder.write_summary()
            self.on_round(trial, round_index, results)
            mask = next_mask                                        # 4. reset to θ₀ at the next round

    # ------------------------------------------------------------------ the four steps
    def initial_weights(self, trial, seed):
        path = self.folder.trial(trial) / "theta0.npz"
        if path.exists():
            return rundir.load_weights(path)
        theta_0 = self.build(seed).flat_params.copy()
        rundir.save_weights(path, theta_0)
        return theta_0

    def reset_point(self, trial, round_index, theta_0):
        """θ₀ (the paper) or θ_k (rewinding) for rounds after the dense one; and where training starts."""
        k = self.experiment.rewind_iteration
        if round_index == 0 or k == 0:
            return theta_0, 0
        return rundir.load_weights(self.folder.trial(trial) / "theta_k.npz"), k

    def prune(self, mask, trained):
        hp = self.hp
        weights = {name: trained[name] for name in mask}
        if hp.pruning == "global":
            # one rate for the whole network: the largest of its kinds' rates
            # (conv 20% for Resnet-18 and VGG-19; fc 20% for a globally pruned Lenet)
            rate = max(hp.rate(kind) for kind in set(self.kinds.values()))
            unpruned = [name for name, kind in self.kinds.items() if kind in hp.unpruned]
            return pruning.prune_global(mask, weights, rate, unpruned)
        return pruning.prune_layerwise(mask, weights, {name: hp.rate(kind) for name, kind in self.kinds.items()})

    def control(self, branch, trial, round_index, mask, reset, dense_weights):
        """The mask and initial weights of a control branch at this round."""
        rng = np.random.default_rng([self.experiment.seed + trial, round_index, CONTROLS.index(branch)
                                     if branch in CONTROLS else 9])
        if branch == "reinit":  # same mask, θ'₀ ~ D_θ with another seed
            fresh = self.build(seed=self.reinit_seed(trial, round_index))
            return mask, fresh.flat_params.copy()
        if branch == "random":  # same per-layer counts, random positions, θ₀
            return pruning.random_like(mask, rng), reset
        # one-shot: the trained dense network pruned once to this round's counts
        if self.hp.pruning == "global":
            unpruned = [name for name, kind in self.kinds.items() if kind in self.hp.unpruned]
            total = sum(mask.kept(n) for n in mask if n not in unpruned)
            return pruning.keep_largest_global({n: dense_weights[n] for n in mask}, total, unpruned), reset
        return pruning.keep_largest(dense_weights, {name: mask.kept(name) for name in mask}), reset

    def reinit_seed(self, trial, round_index):
        """A seed for θ'₀ that no trial's θ₀ uses (those are seed + trial)."""
        return 1_000_003 * (round_index + 1) + self.experiment.seed + trial

    # ------------------------------------------------------------------ one training run
    def train_branch(self, trial, round_index, branch, mask, reset, start, seed):
        """Train one branch (or read it back if finished); return its metrics and trained weights."""
        folder = self.folder.branch(trial, round_index, branch)
        net = self.build(seed)
        self.kinds = net.kinds
        if self.folder.finished(trial, round_index, branch):
            self.progress.done_iterations += self.hp.iterations
            net.flat_params[...] = rundir.load_weights(folder / "final.npz")
            return self.folder.metrics(trial, round_index, branch), dict(net.params)
        mask_path = folder / "mask.npz"
        if mask_path.exists():
            mask = Mask.load(mask_path, like=net)
        else:
            mask.save(mask_path)
        net.flat_params[...] = reset
        net.set_mask(mask)                                          # m ⊙ θ₀
        trainer = Trainer(net, self.data, self.hp, seed)
        trainer.iteration = start
        elapsed = 0.0
        checkpoint = folder / "checkpoint.npz"
        if checkpoint.exists():
            arrays, info = rundir.load_checkpoint(checkpoint)
            trainer.load_state(arrays, info)
            elapsed = info["elapsed"]
        began, done_before = time.perf_counter(), self.progress.done_iterations

        def save(t):
            arrays, info = t.state()
            info["elapsed"] = elapsed + time.perf_counter() - began
            rundir.save_checkpoint(checkpoint, arrays, info)

        def on_eval(t):
            self.progress.done_iterations = done_before + t.iteration
            self.on_eval(self.progress, trial, round_index, branch, t)
            if self.stop_requested():
                save(t)
                raise Interrupted(f"stopped at trial {trial}, round {round_index}, {branch}, "
                                  f"iteration {t.iteration:,}")

        rewinding = round_index == 0 and branch == "ticket" and self.experiment.rewind_iteration
        trainer.run(on_eval=on_eval, on_checkpoint=save, checkpoint_every=self.experiment.checkpoint_every,
                    snapshots={self.experiment.rewind_iteration} if rewinding else ())
        if rewinding:
            rundir.save_weights(self.folder.trial(trial) / "theta_k.npz",
                                trainer.snapshots[self.experiment.rewind_iteration])
        metrics = trainer.finish()
        metrics.update(trial=trial, round=round_index, branch=branch, pm=mask.density(),
                       pm_per_layer=mask.per_layer_density(),
                       wall_time_s=round(elapsed + time.perf_counter() - began, 1))
        rundir.save_weights(folder / "final.npz", net.flat_params)
        files.write_json(folder / "curve.json", trainer.curve.to_dict())
        files.write_json(folder / "metrics.json", metrics)        # written last: marks the branch done
        if checkpoint.exists():
            checkpoint.unlink()
        self.progress.done_iterations = done_before + self.hp.iterations
        return metrics, dict(net.params)

    def record_distances(self, trial, round_index, metrics, mask, next_mask, trained, reset):
        """The Discussion's measure: mean |θ_T − θ₀| of weights kept next round vs. those pruned."""
        if "distance_kept" in metrics:
            return
        net = self.build(0)
        net.flat_params[...] = reset
        kept, pruned = [], []
        for name in mask:
            moved = np.abs(trained[name] - net.params[name])
            kept.append(moved[next_mask[name] == 1])
            pruned.append(moved[(mask[name] == 1) & (next_mask[name] == 0)])
        kept, pruned = np.concatenate(kept), np.concatenate(pruned)
        metrics["distance_kept"] = float(kept.mean()) if kept.size else None
        metrics["distance_pruned"] = float(pruned.mean()) if pruned.size else None
        files.write_json(self.folder.branch(trial, round_index, "ticket") / "metrics.json", metrics)
