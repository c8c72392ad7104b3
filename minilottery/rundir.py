"""The run folder of ``imp``: one place per trial, round and branch; resumable.

Layout (JSON, CSV and NPZ only)::

    RUN/config.json                    every hyperparameter, seed, package versions
    RUN/summary.csv                    one row per trial × round × branch
    RUN/trial0/theta0.npz              θ₀, by parameter name
    RUN/trial0/round03/ticket/         mask.npz, checkpoint.npz, final.npz, curve.json,
                                       metrics.json (round00/ticket also theta_k.npz when rewinding)
    RUN/trial0/round03/reinit/ ...     (also random/ and oneshot/)

One driver process holds the folder's lock, draws θ₀ and is the only writer of
config.json and summary.csv; each job (lottery.run_job), wherever it runs, writes
only its own branch folder. A branch is finished when its metrics.json exists (it
is written last), so a resumed run skips it; an unfinished branch continues from
checkpoint.npz. A file ``RUN/.stop``, written by the driver, asks every running
job to checkpoint and stop at its next evaluation, on this machine or any other
that sees the folder.
"""
import fcntl
import hashlib
import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from . import files
from .hparams import defaults
from .masks import Mask

SUMMARY_COLUMNS = ["trial", "round", "branch", "pm", "early_stop_iteration", "test_accuracy_at_early_stop",
                   "final_test_accuracy", "final_train_accuracy", "distance_kept", "distance_pruned",
                   "wall_time_s"]
# Settings that may change between invocations of the same run: more rounds or
# trials extend it; more controls add branches; checkpoint interval is bookkeeping.
HELD_LOCKS = {}  # run folder -> the open, flock()ed lock file of this process
EXTENDABLE = ("rounds", "trials", "controls", "oneshot", "checkpoint_every", "data_dir", "sparse")
# Every kind of branch, in the order of every table (a branch's index seeds its random streams)
BRANCHES = ("ticket", "reinit", "random", "oneshot", "snip", "synflow")
# The controls that branch off a round's mask: Section 2's, and pruning at initialisation
CONTROLS = ("reinit", "random", "snip", "synflow")
# The layout of a branch's folder, and how to read its trial, round and branch back
BRANCH_FOLDER = "trial{trial}/round{round:02d}/{branch}"
BRANCH_PATTERN = re.compile(r"trial(\d+)/round(\d+)/(\w+)$")
METRICS_KEYS = ["trial", "round", "branch", "pm", "early_stop_iteration", "test_accuracy_at_early_stop"]


class Interrupted(Exception):
    """A stop was asked for: the running branch was checkpointed and the run can be resumed."""


def default_folder(config):
    """runs/<net> for the paper's settings, runs/<net>-<hash> when anything differs."""
    hp = config["hyperparameters"]
    paper = defaults(hp["net"]).to_dict()
    changed = {k: v for k, v in hp.items() if paper.get(k) != v}
    changed.update({k: config[k] for k in ("seed", "rewind_iteration") if config[k]})
    for key, usual in (("data_order", "branch"), ("retrain", "weight-rewind"), ("transfer_from", None)):
        if config.get(key, usual) != usual:
            changed[key] = config[key]
    if not changed:
        return Path("runs") / hp["net"]
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"{hp['net']}-{digest}"


def versions():
    found = {"python": platform.python_version()}
    for package in ("minilottery", "numpy", "numba"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


class RunFolder:
    """Paths and bookkeeping of one imp run."""

    def __init__(self, root):
        self.root = Path(root)
        self.lock_handle = None

    def lock(self):
        """Exclusive use of the folder by this process, released when it exits.

        flock() locks belong to an open file, so a process that locks the same
        folder twice (a notebook, the tests) reuses its first lock.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.root)
        if key in HELD_LOCKS:
            self.lock_handle = HELD_LOCKS[key]
            return
        self.lock_handle = open(self.root / ".lock", "w")
        try:
            fcntl.flock(self.lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{self.root} is in use by another minilottery process; wait for it "
                             "to finish or choose another --out") from None
        self.lock_handle.write(str(os.getpid()))
        self.lock_handle.flush()
        HELD_LOCKS[key] = self.lock_handle

    def start(self, config, complete=None):
        """Write config.json, or check that an existing one agrees with ``config``.

        ``complete(old)`` gives an older config.json every setting it lacks, at the
        value the run had (its default then): lottery.Experiment.complete_config.
        """
        path = self.root / "config.json"
        if path.exists():
            old = complete(self.config()) if complete else self.config()
            for key in sorted(set(old) | set(config)):
                if key in EXTENDABLE or key == "versions":
                    continue
                if old.get(key) != config.get(key):
                    differences = _differences(old.get(key), config.get(key), key)
                    raise ValueError(f"{self.root} was started with different settings ({differences}); "
                                     "rerun with the same options or choose another --out")
            config = {**old, **{k: config[k] for k in EXTENDABLE if k in config}}
        files.write_json(path, config)
        return config

    def config(self):
        path = self.root / "config.json"
        config = files.read_json(path)
        if not isinstance(config, dict) or not isinstance(config.get("hyperparameters"), dict):
            raise files.RunFileError(f"{path}: damaged (KeyError: no hyperparameters); restore it, or start "
                                     "the run again in another folder")
        return config

    def trial(self, trial):
        return self.root / f"trial{trial}"

    def branch(self, job):
        """The folder of one job (anything with trial, round and branch)."""
        return self.branch_at(job.trial, job.round, job.branch)

    def branch_at(self, trial, round_index, branch):
        return BranchFolder(self.root / BRANCH_FOLDER.format(trial=trial, round=round_index, branch=branch))

    def finished_branches(self):
        """((trial, round, branch), BranchFolder) of every finished branch, in table order."""
        found = []
        for path in self.root.glob("trial*/round*/*/metrics.json"):
            match = BRANCH_PATTERN.fullmatch(path.parent.relative_to(self.root).as_posix())
            if match and match.group(3) in BRANCHES:
                key = int(match.group(1)), int(match.group(2)), match.group(3)
                found.append((key, BranchFolder(path.parent)))
        return sorted(found, key=lambda item: (item[0][0], item[0][1], BRANCHES.index(item[0][2])))

    def theta_0(self, trial, like=None):
        return read_weights(self.trial(trial) / "theta0.npz", like)

    def save_theta_0(self, trial, weights):
        """Step 1 of a trial, written once: a rerun keeps the θ₀ it already has."""
        path = self.trial(trial) / "theta0.npz"
        if not path.exists():
            write_weights(path, weights)

    def rows(self):
        """Summary rows of every finished branch, in trial, round, branch order."""
        return [{key: branch.metrics().get(key, "") for key in SUMMARY_COLUMNS}
                for _, branch in self.finished_branches()]

    def write_summary(self):
        files.write_csv(self.root / "summary.csv", self.rows(), SUMMARY_COLUMNS)

    # a stop asked of every job, wherever it runs
    @property
    def stop_file(self):
        return self.root / ".stop"

    def request_stop(self):
        files.atomic_write_bytes(self.stop_file, b"stop\n")

    def stop_requested(self):
        return self.stop_file.exists()

    def clear_stop(self):
        self.stop_file.unlink(missing_ok=True)


class BranchFolder:
    """The files of one branch: its mask, checkpoint, weights, curve and metrics."""

    def __init__(self, path):
        self.path = Path(path)

    def finished(self):
        return (self.path / "metrics.json").exists()

    def metrics(self):
        path = self.path / "metrics.json"
        metrics = files.read_json(path)
        missing = [key for key in METRICS_KEYS if key not in metrics] if isinstance(metrics, dict) else ["all"]
        if missing:
            raise files.RunFileError(f"{path}: damaged (no {missing[0]}); delete it to train the branch again")
        return metrics

    def mask(self, like=None):
        return Mask.load(self.path / "mask.npz", like=like)

    def keep_mask(self, mask, like=None):
        """Save the branch's mask on its first start; a resumed branch reads the saved one."""
        if (self.path / "mask.npz").exists():
            return self.mask(like=like)
        mask.save(self.path / "mask.npz")
        return mask

    def weights(self, name, like=None):
        """final (θ_j after training) or theta_k, by parameter name."""
        return read_weights(self.path / f"{name}.npz", like)

    def save_weights(self, name, weights):
        write_weights(self.path / f"{name}.npz", weights)

    def train(self, trainer, checkpoint_every, snapshots=(), on_eval=None, stop_requested=None, name="branch"):
        """Run ``trainer`` to the end of its budget, resuming from and writing checkpoint.npz;
        return the branch's training time in seconds, summed over every resume.

        ``stop_requested()`` is asked after every evaluation; when it says so, the
        branch is checkpointed and ``Interrupted`` raised.
        """
        checkpoint = self.path / "checkpoint.npz"
        elapsed = 0.0
        if checkpoint.exists():
            arrays, info = load_checkpoint(checkpoint)
            try:
                trainer.load_state(arrays, info)
                elapsed = float(info["elapsed"])
            except (KeyError, ValueError, TypeError) as error:
                raise files.RunFileError(f"{checkpoint}: damaged ({type(error).__name__}: {error}); delete it "
                                         "to train this branch again from its start") from None
        began = time.perf_counter()

        def save(t):
            arrays, info = t.state()
            info["elapsed"] = elapsed + time.perf_counter() - began
            save_checkpoint(checkpoint, arrays, info)

        def after_evaluation(t):
            if on_eval:
                on_eval(t)
            if stop_requested and stop_requested():
                save(t)
                raise Interrupted(f"stopped at {name}, iteration {t.iteration:,}")

        trainer.run(on_eval=after_evaluation, on_checkpoint=save, checkpoint_every=checkpoint_every,
                    snapshots=snapshots)
        return elapsed + time.perf_counter() - began

    def finish(self, final_weights, curve, metrics):
        """The results of a trained branch; metrics.json goes last and marks it finished."""
        self.save_weights("final", final_weights)
        files.write_json(self.path / "curve.json", curve.to_dict())
        files.write_json(self.path / "metrics.json", metrics)
        (self.path / "checkpoint.npz").unlink(missing_ok=True)


def _differences(old, new, key):
    if isinstance(old, dict) and isinstance(new, dict):
        return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now"
                         for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return f"{key}: {old!r} then, {new!r} now"


def write_weights(path, weights):
    """Weights by parameter name, as ``net.snapshot()`` gives them."""
    files.write_npz(path, weights)


def read_weights(path, like=None):
    """Weights by parameter name; ``like`` (a network) checks their names and shapes."""
    weights = files.read_npz(path)
    if like is not None:
        expected = {name: value.shape for name, value in like.params.items()}
        if {name: value.shape for name, value in weights.items()} != expected:
            raise files.RunFileError(f"{path}: its weights and shapes do not match {like.name}; "
                                     "delete it to recompute")
    return weights


def save_checkpoint(path, arrays, info):
    """One atomic file: the arrays plus the JSON-able info as a byte array."""
    payload = dict(arrays)
    payload["info_json"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    files.write_npz(path, payload)


def load_checkpoint(path):
    arrays = files.read_npz(path)
    try:
        info = json.loads(arrays.pop("info_json").tobytes().decode())
    except (KeyError, ValueError) as error:
        raise files.RunFileError(f"{path}: damaged checkpoint ({type(error).__name__}: {error}); delete it "
                                 "to train this branch again from its start") from None
    return arrays, info
