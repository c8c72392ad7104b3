"""Where the lottery's jobs run: in this process, on local worker processes, or on Dask.

Each executor has the ``submit`` of ``concurrent.futures`` (Dask's client provides its own
executor), a ``capacity`` (how many jobs run at once), ``restart`` after a worker died,
and ``shutdown``. ``schedule.Driver`` serves all three through that one interface.
"""
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from . import threads
from .hparams import option
from .schedule import worker_setup


@dataclass
class Running:
    """How ``imp`` runs its jobs; each field is a flag."""
    workers: int = option(None, "jobs (branches) trained side by side in local worker processes, each with its "
                                "share of the cores; with --scheduler local, the LocalCluster's worker processes "
                                "[as many as the run has jobs to run at once, up to the cores]")
    scheduler: str = option(None, "run the jobs on the Dask cluster at this address (tcp://host:8786), or "
                                  "'local' for a Dask LocalCluster here; the run folder must be on storage every "
                                  "worker sees [pip install 'minilottery[dask]']")
    job_threads: int = option(None, "OpenBLAS and Numba threads per job [cores / --workers; 1 on Dask]; with 1, "
                                    "runs write bit-identical files however their jobs are spread")
    plan: bool = option(False, "train nothing: print the jobs, the critical path and the expected wall time on "
                               "1, 2, 8, 32 and 128 workers, from a short timing here")


class Inline:
    """Runs each job in this process when it is submitted (``--workers 1``)."""
    capacity, in_process, description = 1, True, "this process"

    def submit(self, function, *args, **kwargs):
        future = Future()
        try:
            future.set_result(function(*args, **kwargs))
        except Exception as error:  # KeyboardInterrupt (a second Ctrl-C) goes straight up
            future.set_exception(error)
        return future

    def restart(self):
        pass

    def shutdown(self, force=False):
        pass


class Processes:
    """N worker processes of the standard library (spawned, so no thread pool is forked)."""
    in_process = False

    def __init__(self, workers, job_threads):
        self.capacity, self.job_threads = workers, job_threads
        self.description = f"{workers} worker processes, {job_threads} thread(s) each"
        self.pool = self._new_pool()

    def _new_pool(self):
        return ProcessPoolExecutor(self.capacity, mp_context=get_context("spawn"), initializer=worker_setup,
                                   initargs=(self.job_threads, os.getpid()))

    def submit(self, function, *args, **kwargs):
        return self.pool.submit(function, *args, **kwargs)

    def restart(self):
        """After a worker died (the pool is broken): a fresh pool."""
        self.shutdown(force=True)
        self.pool = self._new_pool()

    def shutdown(self, force=False):
        if force:  # no worker may go on writing a branch folder once the driver lets go of it
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Jobs on a Dask distributed cluster through the executor its client provides."""
    in_process = False

    def __init__(self, address, workers, job_threads):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("--scheduler needs Dask distributed: pip install 'minilottery[dask]'") from None
        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None)
            address = self.cluster
        try:
            self.client = Client(address)  # waits distributed.comm.timeouts.connect (Dask's config)
        except OSError as error:
            if self.cluster is not None:
                self.cluster.close()
            raise ValueError(f"cannot reach the Dask scheduler at {address} ({error}); start one with "
                             "'dask scheduler' or use --scheduler local") from None
        self.executor = self.client.get_executor(pure=False)
        self.job_threads = job_threads
        self.description = f"Dask at {self.client.scheduler.address}, {self.capacity} worker thread(s) now"

    @property
    def capacity(self):
        """Worker threads now: workers that join later (dask-jobqueue, a late ``dask worker``) count."""
        return max(1, sum(self.client.nthreads().values()))

    def check_folder(self, root):
        """Every worker must see the run folder: say which one does not, and what to do."""
        found = self.client.run(_sees_folder, str(root))
        blind = [worker for worker, ok in found.items() if not ok]
        if blind:
            raise ValueError(f"Dask worker {blind[0]} cannot see the run folder {root}; put it on storage "
                             "every worker mounts (a shared file system) and pass that path as --out")

    def submit(self, function, *args, **kwargs):
        return self.executor.submit(function, *args, **kwargs)

    def restart(self):
        pass  # Dask's nannies restart dead workers and reschedule their tasks themselves

    def shutdown(self, force=False):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _sees_folder(root):
    return (Path(root) / "config.json").exists()


def default_workers(experiment, cores=None, job_threads=None):
    """The fastest way to use this machine's cores, measured on Lenet (docs/scaling.md):
    one worker per core (per ``job_threads`` cores, if given), each job on one thread, as
    long as the job graph has that many jobs to run at once (a round's branches in every
    trial); otherwise every core for the one job. Two threads that wait for each other
    lose to two jobs side by side."""
    cores = (cores or threads.WORKERS) // (job_threads or 1)
    if experiment.transfer_from:  # transferred rounds need nothing of each other
        at_once = len(experiment.jobs())
    else:
        at_once = experiment.trials * max(len(experiment.branches(r)) for r in range(experiment.rounds + 1))
    return max(1, min(cores, at_once))


def make_executor(workers=1, scheduler=None, job_threads=None):
    """The executor for ``--workers`` and ``--scheduler``, and the threads each job gets."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if job_threads is not None and job_threads < 1:
        raise ValueError(f"--job-threads must be at least 1, got {job_threads}")
    if scheduler:
        return DaskExecutor(scheduler, workers, job_threads or 1)
    if workers == 1:
        return Inline()
    return Processes(workers, job_threads or max(1, threads.WORKERS // workers))
