"""Run ``cli.py imp`` with one fault injected at a named point (tests/test_faults.py).

    python tests/faults.py ACTION POINT COUNT -- imp ARGUMENTS...

The fault strikes at the COUNT-th time (1-based) the process reaches POINT:

    train          a training step (train.Trainer.step)
    evaluate       an evaluation of the validation or test set (train.evaluate)
    write:NAME     a write of a run-folder file named NAME (files.atomic_write_bytes)
    job            the start of a job, before it reads anything (between branches)
    round          the start of the first job of round 1 (between rounds; COUNT is ignored)

ACTION is ``kill`` (SIGKILL to itself: at a write, after half the bytes reached the
temporary file), ``term`` or ``int`` (SIGTERM or SIGINT to itself, then carry on), or
``full`` (at a write: the disk is full). Nothing here is part of minilottery: the points
are reached by wrapping its functions. The tests also ``install`` faults in their own
process, through pytest's monkeypatch.
"""
import errno
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minilottery import files, lottery, train  # noqa: E402

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


def strike(action):
    if action == "full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.kill(os.getpid(), SIGNALS[action])


def install(action, point, count, patch=setattr):
    """Wrap the function behind ``point``; ``patch(owner, name, value)`` puts the wrapper in place."""
    reached = {"n": 0}

    def due():
        reached["n"] += 1
        return reached["n"] == count

    if point == "train":
        step = train.Trainer.step

        def faulty_step(self):
            if due():
                strike(action)
            return step(self)
        patch(train.Trainer, "step", faulty_step)
    elif point == "evaluate":
        evaluate = train.evaluate

        def faulty_evaluate(*args, **kwargs):
            if due():
                strike(action)
            return evaluate(*args, **kwargs)
        patch(train, "evaluate", faulty_evaluate)
    elif point.startswith("write:") and action == "full":
        # the disk fills while the file's bytes go to its temporary (at the fsync that
        # would have made them durable), inside minilottery's own write
        name, fsync = point.split(":", 1)[1], os.fsync

        def full_fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(f".{name}.") and due():
                strike(action)
            return fsync(fd)
        patch(os, "fsync", full_fsync)
    elif point.startswith("write:"):
        name, write = point.split(":", 1)[1], files.atomic_write_bytes

        def faulty_write(path, payload):
            if Path(path).name == name and due():
                if action == "kill":  # die with half the file in its temporary
                    temporary = Path(path).parent / f".{Path(path).name}.killed.tmp"
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    temporary.write_bytes(payload[:len(payload) // 2])
                strike(action)
            return write(path, payload)
        patch(files, "atomic_write_bytes", faulty_write)
    elif point in ("job", "round"):
        run_job = lottery.run_job

        def faulty_run_job(experiment, folder, job, *args, **kwargs):
            if (due() if point == "job" else job.round == 1 and not reached["n"]):
                reached["n"] += 1
                strike(action)
            return run_job(experiment, folder, job, *args, **kwargs)
        patch(lottery, "run_job", faulty_run_job)
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    action, point, count, separator, *arguments = sys.argv[1:]
    assert separator == "--", __doc__
    install(action, point, int(count))
    import cli
    cli.main(arguments)
