"""The run folder of ``imp``: one place per trial, round and branch; resumable.

Layout (JSON, CSV and NPZ only)::

    RUN/config.json                    every hyperparameter, seed, package versions
    RUN/summary.csv                    one row per trial × round × branch
    RUN/trial0/theta0.npz              θ₀ (and theta_k.npz when rewinding)
    RUN/trial0/round03/ticket/         mask.npz, checkpoint.npz, final.npz, metrics.json
    RUN/trial0/round03/reinit/ ...     (also random/ and oneshot/)

A branch is finished when its metrics.json exists (it is written last), so a
resumed run skips it; an unfinished branch continues from checkpoint.npz. A lock
file keeps a second process out, and config.json must match on resume.
"""
import fcntl
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from . import files
from .hparams import defaults

SUMMARY_COLUMNS = ["trial", "round", "branch", "pm", "early_stop_iteration", "test_accuracy_at_early_stop",
                   "final_test_accuracy", "final_train_accuracy", "distance_kept", "distance_pruned",
                   "wall_time_s"]
# Settings that may change between invocations of the same run: more rounds or
# trials extend it; more controls add branches; checkpoint interval is bookkeeping.
HELD_LOCKS = {}  # run folder -> the open, flock()ed lock file of this process
EXTENDABLE = ("rounds", "trials", "controls", "oneshot", "checkpoint_every", "data_dir", "sparse")


def default_folder(config):
    """runs/<net> for the paper's settings, runs/<net>-<hash> when anything differs."""
    hp = config["hyperparameters"]
    paper = defaults(hp["net"]).to_dict()
    changed = {k: v for k, v in hp.items() if paper.get(k) != v}
    changed.update({k: config[k] for k in ("seed", "rewind_iteration") if config[k]})
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

    def start(self, config):
        """Write config.json, or check that an existing one agrees with ``config``."""
        path = self.root / "config.json"
        if path.exists():
            old = files.read_json(path)
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
        return files.read_json(self.root / "config.json")

    def trial(self, trial):
        return self.root / f"trial{trial}"

    def branch(self, trial, round_index, branch):
        return self.trial(trial) / f"round{round_index:02d}" / branch

    def finished(self, trial, round_index, branch):
        return (self.branch(trial, round_index, branch) / "metrics.json").exists()

    def metrics(self, trial, round_index, branch):
        return files.read_json(self.branch(trial, round_index, branch) / "metrics.json")

    def rows(self):
        """Summary rows of every finished branch, in trial, round, branch order."""
        rows = []
        for path in sorted(self.root.glob("trial*/round*/*/metrics.json")):
            metrics = files.read_json(path)
            rows.append({key: metrics.get(key, "") for key in SUMMARY_COLUMNS})
        order = {"ticket": 0, "reinit": 1, "random": 2, "oneshot": 3}
        return sorted(rows, key=lambda r: (int(r["trial"]), int(r["round"]), order.get(r["branch"], 9)))

    def write_summary(self):
        files.write_csv(self.root / "summary.csv", self.rows(), SUMMARY_COLUMNS)


def _differences(old, new, key):
    if isinstance(old, dict) and isinstance(new, dict):
        return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now"
                         for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return f"{key}: {old!r} then, {new!r} now"


def save_weights(path, flat_params):
    files.write_npz(path, {"flat_params": flat_params})


def load_weights(path):
    return files.read_npz(path)["flat_params"]


def save_checkpoint(path, arrays, info):
    """One atomic file: the arrays plus the JSON-able info as a byte array."""
    payload = dict(arrays)
    payload["info_json"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    files.write_npz(path, payload)


def load_checkpoint(path):
    arrays = files.read_npz(path)
    info = json.loads(arrays.pop("info_json").tobytes().decode())
    return arrays, info
