"""Running the lottery's jobs: in this process, on local worker processes, or on a Dask cluster.

The paper's protocol is far more than one training: five trials, 16 to 20+ rounds,
every round training the ticket beside its controls. lottery.py cuts it into jobs
(one branch of one round of one trial) that depend only on files; this module runs
them. One ``Driver`` serves every way of running, through a concurrent.futures-style
executor (executors.py):

* ``Inline``: one job at a time in this process, with a progress line per evaluation
  (``imp --workers 1``, the default);
* ``Processes``: N worker processes of the standard library, each with its share of
  the cores for OpenBLAS and Numba (``imp --workers N``);
* ``DaskExecutor``: any Dask distributed cluster, through the executor its client
  provides (``imp --scheduler ADDRESS``, or ``local`` for a LocalCluster).

``work`` is the job as a worker runs it, and ``worker_setup`` prepares a local worker.

The driver holds the run folder's lock, submits every job whose needs are finished
(earliest round first, the ticket before its controls), and is the only writer of
summary.csv. A worker that dies loses only its job's progress since the last
checkpoint: the job is submitted again and resumes from it. A stop (Ctrl-C, or
SIGTERM from a batch scheduler) writes RUN/.stop, every running job checkpoints at
its next evaluation, and the same command resumes.

A job's result does not depend on where or in which order it runs: with one thread per
job every way of running writes bit-identical files, and so does Lenet with any fixed
``--job-threads`` (Winograd hands its chunks to whichever thread is free, so a conv net on
more than one thread per job sums its filter gradients in a varying order).
"""
import ctypes
import os
import signal
import socket
import time
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from . import datasets, lottery, plan, rundir, threads
from .files import RunFileError
from .kernels import keep_freed_memory
from .train import TrainingDiverged, check_batch_size

class RunError(RuntimeError):
    """A job failed in a way no input explains (a worker keeps dying, an error in a worker)."""


# The failures whose own one-line message says what to do; any other is wrapped in RunError
EXPECTED = (ValueError, OSError, TrainingDiverged)

# A pool whose workers die this many times in a row with no job finished in between
# is not a passing accident (out of memory, a crash in a kernel): the driver gives up.
MAX_POOL_BREAKS = 3

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_stop_signalled = False  # a worker process was sent SIGTERM or SIGINT
_driver_pid = None  # of a local worker process: its driver's
_busy = False  # a job is running in this process
_datasets = {}  # (dataset, data_dir) -> Dataset, loaded once per process


# ---------------------------------------------------------------------------- the job on a worker

def work(root, job, job_threads=None, on_eval=None, data=None):
    """Run one job wherever this is called; return ("finished", metrics) or ("interrupted", None).

    A worker process loads the dataset once and keeps it for its later jobs; a job in
    the driver's own process is handed the driver's ``data``.
    """
    folder = rundir.RunFolder(root)
    if not (folder.root / "config.json").exists():
        raise RunFileError(f"{socket.gethostname()} cannot see the run folder {folder.root} (no config.json "
                           "there); put the run folder on storage every worker mounts and pass it as --out")
    experiment = lottery.Experiment.from_config(folder.config(), folder.root / "config.json")
    if job_threads:
        threads.use_cores(job_threads)
    keep_freed_memory()  # again: Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536
    data = data or dataset(experiment.hp.dataset, experiment.data_dir)
    report = (lambda trainer: on_eval(job, trainer)) if on_eval else None
    global _busy
    _busy = True
    try:
        metrics = lottery.run_job(experiment, folder, job, data, on_eval=report,
                                  stop_requested=lambda: _stop_signalled or folder.stop_requested())
    except rundir.Interrupted:
        if _orphaned():
            os._exit(1)  # checkpointed, and nobody is left to tell
        return "interrupted", None
    finally:
        _busy = False
    return "finished", metrics


def signal_stop():
    """Ask the job running in this process to checkpoint and stop at its next evaluation."""
    global _stop_signalled
    _stop_signalled = True


def stop_signalled():
    """A local worker process was sent SIGINT or SIGTERM: its job should checkpoint and stop."""
    return _stop_signalled


def _orphaned():
    return _driver_pid is not None and os.getppid() != _driver_pid


def dataset(name, data_dir):
    key = (name, data_dir)
    if key not in _datasets:
        _datasets[key] = datasets.load(name, data_dir)
    return _datasets[key]


def worker_setup(job_threads, driver):
    """A local worker process: its share of the cores; Ctrl-C and SIGTERM ask for a checkpoint.

    Ctrl-C at a terminal reaches every process of the group; the driver turns it into
    RUN/.stop, which the worker sees at its next evaluation, so the worker itself only
    has to not die of it. SIGTERM stops its job the same way, and on Linux the kernel
    sends it when the driver dies (even of SIGKILL): no worker outlives the driver's lock.
    """
    global _driver_pid
    _driver_pid = driver

    def stop(signum, frame):
        global _stop_signalled
        _stop_signalled = True
        if not _busy and _orphaned():
            os._exit(1)  # an idle worker of a dead driver: nothing to checkpoint

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a worker may outlive a killed driver
        pass
    if _orphaned():  # the driver died before the line above took effect
        os._exit(1)
    threads.use_cores(job_threads)


# ---------------------------------------------------------------------------- the driver

@dataclass
class Status:
    """What the progress line shows."""
    total: int
    done: int = 0
    running: list = field(default_factory=list)  # jobs
    waiting: int = 0
    seconds_left: float = None
    job_seconds: list = field(default_factory=list)  # wall time of each job finished by this driver


class Driver:
    """Runs every unfinished job of an Experiment into a RunFolder through an executor."""

    def __init__(self, experiment, folder, executor, data, job_threads=None, on_status=None,
                 on_round=None, on_eval=None, on_notice=None):
        """``data``: the dataset, loaded (and checked) by the driver; jobs in this process use it."""
        self.experiment, self.folder, self.executor, self.data = experiment, folder, executor, data
        self.job_threads = job_threads
        self.on_status = on_status or (lambda status: None)
        self.on_round = on_round or (lambda trial, round_index, results: None)
        self.on_eval = on_eval
        self.on_notice = on_notice or (lambda message: None)
        self.stopping = False
        self.jobs = experiment.jobs()
        self.results = {}  # Job -> metrics
        self.status = Status(len(self.jobs))
        self.estimated = (-1, -1, 0.0, 0.0)  # (jobs done, running, when, seconds left then)
        self.tables = [(r, t) for r in range(experiment.rounds + 1) for t in range(experiment.trials)]

    def stop(self):
        """Ask every running job to checkpoint and stop (Ctrl-C, SIGTERM); submit nothing more."""
        self.stopping = True
        self.folder.request_stop()

    def run(self):
        check_batch_size(self.experiment.hp, self.data)  # here, before any worker starts
        self.folder.clear_stop()
        for trial in range(self.experiment.trials):                    # 1. θ₀ ~ D_θ, once per trial
            self.folder.save_theta_0(trial, self.experiment.initial_weights(trial, self.data.input_shape))
        for job in self.jobs:
            if self.folder.branch(job).finished():
                self.results[job] = self.folder.branch(job).metrics()
        waiting = [job for job in self.jobs if job not in self.results]
        running = {}  # future -> (job, time submitted)
        failure, breaks = None, 0
        self._print_rounds()
        while running or (waiting and not self.stopping):
            if not self.stopping:
                for job in [j for j in waiting if all(n in self.results for n in j.needs())]:
                    if len(running) >= self.executor.capacity:
                        break
                    waiting.remove(job)
                    self._report(waiting, running, starting=job)  # an in-process job runs inside submit
                    submitted = time.perf_counter()
                    running[self._submit(job)] = (job, submitted)
            finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                if future not in running:
                    continue  # requeued below when its pool broke
                job, submitted = running.pop(future)
                try:
                    outcome, metrics = future.result()
                except BrokenProcessPool:
                    # a worker died (SIGKILL, out of memory): every job of the pool goes again
                    # and resumes from its last checkpoint
                    breaks += 1
                    if breaks >= MAX_POOL_BREAKS:
                        raise RunError(f"worker processes died {breaks} times in a row (last while running "
                                       f"{job}); see the system log for why (out of memory?)") from None
                    again = [job] + [j for j, _ in running.values()]
                    self.on_notice(f"a worker process died; {len(again)} job(s) run again from their checkpoints")
                    waiting = sorted(waiting + again, key=lottery.Job.priority)
                    running.clear()
                    self.executor.restart()
                    break
                except Exception as error:  # the job failed: let the others checkpoint, then report it
                    failure = failure or (error if isinstance(error, EXPECTED) else
                                          RunError(f"{job} failed: {type(error).__name__}: {error}"))
                    self.stop()
                    continue
                if outcome == "interrupted":  # checkpointed; a worker told to stop means the run stops
                    waiting = sorted(waiting + [job], key=lottery.Job.priority)
                    if not self.stopping:
                        self.stop()
                else:
                    breaks = 0
                    self.results[job] = metrics
                    self.status.job_seconds.append(time.perf_counter() - submitted)
                    self.folder.write_summary()
                    self._print_rounds()
            self._report(waiting, running)
        self.folder.clear_stop()
        if failure is not None:
            raise failure
        if self.stopping:
            raise rundir.Interrupted(f"stopped with {len(self.results)} of {len(self.jobs)} jobs finished; "
                                     "every finished branch and checkpoint is kept")
        self.folder.write_summary()

    def _submit(self, job):
        if self.executor.in_process:
            return self.executor.submit(work, str(self.folder.root), job, self.job_threads, on_eval=self.on_eval,
                                        data=self.data)
        return self.executor.submit(work, str(self.folder.root.resolve()), job, self.job_threads)

    def _print_rounds(self):
        """Table rows for every round finished in all its branches, in (round, trial) order."""
        while self.tables:
            round_index, trial = self.tables[0]
            branches = [lottery.Job(trial, round_index, b) for b in self.experiment.branches(round_index)]
            if not all(job in self.results for job in branches):
                return
            self.tables.pop(0)
            self.on_round(trial, round_index, {job.branch: self.results[job] for job in branches})

    def _report(self, waiting, running, starting=None):
        status = self.status
        status.done, status.waiting = len(self.results), len(waiting)
        status.running = [job for job, _ in running.values()] + ([starting] if starting else [])
        now = time.perf_counter()
        if status.job_seconds and (len(self.results), len(status.running)) != self.estimated[:2]:
            # a job started or finished: schedule what is left again (between events, count down)
            typical = sorted(status.job_seconds)[len(status.job_seconds) // 2]
            left = {job: max(typical - (now - submitted), 0.0) for job, submitted in running.values()}
            if starting:
                left[starting] = typical
            self.estimated = (len(self.results), len(status.running), now,
                              plan.makespan(waiting, self.executor.capacity, lambda job: typical,
                                            done=set(self.results), running=left))
        if status.job_seconds:
            status.seconds_left = max(self.estimated[3] - (now - self.estimated[2]), 0.0)
        self.on_status(status)


def install_stop_handlers(driver):
    """Ctrl-C and SIGTERM (what Slurm, Kubernetes and Dask's nanny send first) ask the
    driver to stop at a checkpoint; a second Ctrl-C stops at once. Returns the old handlers."""
    def handler(signum, frame):
        if driver.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        driver.stop()

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore_handlers(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)

