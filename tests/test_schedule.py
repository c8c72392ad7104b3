"""The job graph and its driver: workers, Dask, a worker killed mid-job, stops, plans (issue 10)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minilottery import executors, files, hparams, lottery, plan, rundir, schedule, threads

COMPARED = [c for c in rundir.SUMMARY_COLUMNS if c != "wall_time_s"]
# Dask's own setting for how long to try reaching a scheduler (the test of an unreachable one)
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.getcwd(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}


@pytest.fixture(scope="module")
def tiny(small_mnist):
    return ["--rounds", "2", "--trials", "2", "--controls", "both", "--iterations", "60", "--eval-every", "20",
            "--data-dir", small_mnist, "--quiet"]


@pytest.fixture(scope="module")
def longer(small_mnist):
    return ["--rounds", "1", "--controls", "reinit", "--iterations", "600", "--eval-every", "50",
            "--checkpoint-every", "100", "--data-dir", small_mnist, "--quiet"]


def imp(*arguments, timeout=300):
    return subprocess.run([sys.executable, "cli.py", "imp", *map(str, arguments)], capture_output=True, text=True,
                          env=ENVIRONMENT, timeout=timeout)


def start_imp(*arguments):
    return subprocess.Popen([sys.executable, "cli.py", "imp", *map(str, arguments)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)


def summary(root):
    return [{k: row[k] for k in COMPARED} for row in files.read_csv(Path(root) / "summary.csv")]


def assert_same_run(a, b):
    """The same summary (every column but wall time) and bit-identical final weights."""
    assert summary(a) == summary(b)
    finals = sorted(Path(a).glob("trial*/round*/*/final.npz"))
    assert len(finals) == len(summary(a))
    for path in finals:
        mine, theirs = rundir.read_weights(path), rundir.read_weights(Path(b) / path.relative_to(a))
        assert mine.keys() == theirs.keys()
        for name in mine:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=f"{path}: {name}")


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("serial") / "run"
    result = imp(*tiny, "--workers", "1", "--job-threads", "1", "--out", root)
    assert result.returncode == 0, result.stderr
    assert len(summary(root)) == 2 * (2 + 3 + 3)  # per trial: round 0 ticket+reinit, then 3 branches a round
    return root


def test_two_worker_processes_write_the_same_files(one_at_a_time, tiny, tmp_path):
    result = imp(*tiny, "--workers", "2", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "2 worker processes, 1 thread(s) each" in result.stdout
    assert_same_run(one_at_a_time, tmp_path / "run")


def test_a_dask_local_cluster_writes_the_same_files(one_at_a_time, tiny, tmp_path):
    pytest.importorskip("distributed")
    result = imp(*tiny, "--scheduler", "local", "--workers", "2", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "on Dask at tcp://127.0.0.1:" in result.stdout
    assert_same_run(one_at_a_time, tmp_path / "run")


@pytest.fixture(scope="module")
def longer_one_at_a_time(tmp_path_factory, longer):
    root = tmp_path_factory.mktemp("longer") / "run"
    result = imp(*longer, "--workers", "1", "--job-threads", "1", "--out", root)
    assert result.returncode == 0, result.stderr
    return root


def worker_processes(driver_pid):
    """The spawned pool workers among a process's children (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{driver_pid}/task/{driver_pid}/children").read_text().split()
    workers = []
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:
            workers.append(int(pid))
    return workers


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(condition, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_worker_killed_mid_job_costs_only_a_retry(longer_one_at_a_time, longer, tmp_path):
    driver = start_imp(*longer, "--workers", "2", "--out", tmp_path / "run")
    checkpoints = lambda: list((tmp_path / "run").glob("trial0/round00/*/checkpoint.npz"))  # noqa: E731
    assert wait_for(lambda: checkpoints() or driver.poll() is not None), "no job reached a checkpoint"
    victims = worker_processes(driver.pid)
    assert victims, "the driver has no worker processes"
    os.kill(victims[0], signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert "a worker process died;" in err and "run again from their checkpoints" in err
    assert not any((tmp_path / "run").glob("trial*/round*/*/checkpoint.npz"))
    assert_same_run(longer_one_at_a_time, tmp_path / "run")


def test_ctrl_c_with_workers_checkpoints_every_running_job_and_the_rerun_finishes(longer_one_at_a_time, longer,
                                                                                   tmp_path):
    driver = start_imp(*longer, "--workers", "2", "--out", tmp_path / "run")
    assert wait_for(lambda: len(list((tmp_path / "run").glob("trial0/round00/*/curve.json"))) == 0
                    and len(list((tmp_path / "run").glob("trial0/round00/*/mask.npz"))) == 2)
    # soon after both started: a job of 600 iterations may finish within a second now
    time.sleep(0.2)
    driver.send_signal(signal.SIGINT)  # the driver alone: the workers hear of it through RUN/.stop
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 1 and "Traceback" not in err
    assert "resume with: python cli.py imp --resume" in err
    assert not (tmp_path / "run" / ".stop").exists()
    assert len(list((tmp_path / "run").glob("trial0/round00/*/checkpoint.npz"))) == 2
    rerun = imp(*longer, "--workers", "2", "--out", tmp_path / "run")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_run(longer_one_at_a_time, tmp_path / "run")


def test_a_second_driver_on_a_running_folder_gets_one_line(longer, tmp_path):
    driver = start_imp(*longer, "--iterations", "50000", "--workers", "2", "--out", tmp_path / "run")
    try:
        assert wait_for(lambda: len(list((tmp_path / "run").glob("trial0/round00/*/mask.npz"))) == 2)
        workers = worker_processes(driver.pid)
        assert len(workers) == 2
        second = imp(*longer, "--workers", "2", "--out", tmp_path / "run")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert "in use by another minilottery process" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        driver.kill()  # SIGKILL: its workers must not outlive it
        driver.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in workers), 30), "workers outlived their driver"


def test_a_job_that_fails_on_a_worker_is_one_line(small_mnist, tmp_path):
    result = imp("--rounds", "0", "--iterations", "50", "--lr", "1e6", "--optimizer", "sgd", "--workers", "2",
                 "--data-dir", small_mnist, "--quiet", "--out", tmp_path / "run")
    assert result.returncode == 1 and "diverged" in result.stderr and "Traceback" not in result.stderr


def test_a_worker_that_cannot_see_the_run_folder_says_so(tmp_path):
    with pytest.raises(files.RunFileError, match="cannot see the run folder .* storage every worker mounts"):
        schedule.work(str(tmp_path / "elsewhere"), lottery.Job(0, 0, "ticket"))


@pytest.mark.parametrize("arguments, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--job-threads", "0"], "--job-threads must be at least 1"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
])
def test_bad_executor_options_are_one_line(tmp_path, arguments, message):
    result = imp("--rounds", "0", "--iterations", "20", "--quiet", "--out", tmp_path / "run", *arguments)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def experiment(**changes):
    return lottery.Experiment(hparams.Hyperparameters(), **changes)


def test_the_graph_needs_only_the_last_rounds_ticket():
    jobs = experiment(rounds=2, trials=2, controls=("reinit", "random"), oneshot=True).jobs()
    assert len(jobs) == 2 * (2 + 4 + 4)
    for job in jobs:
        assert job.needs() == ([] if job.round == 0 else [lottery.Job(job.trial, job.round - 1, "ticket")])
    assert jobs[:4] == [lottery.Job(0, 0, "ticket"), lottery.Job(1, 0, "ticket"),
                        lottery.Job(0, 0, "reinit"), lottery.Job(1, 0, "reinit")]


@pytest.mark.parametrize("workers, expected", [(1, 6), (2, 3), (64, 3)])
def test_makespan_of_one_trial_with_its_control(workers, expected):
    jobs = experiment(rounds=2, controls=("reinit",)).jobs()  # ticket and reinit at rounds 0, 1, 2
    assert plan.makespan(jobs, workers, lambda job: 1.0) == expected


def test_makespan_is_floored_by_the_critical_path_and_counts_running_jobs():
    e = experiment(rounds=15, trials=5, controls=("reinit",))
    jobs = e.jobs()
    assert plan.makespan(jobs, 1000, lambda job: 2.0) == 2.0 * plan.critical_path(e)
    assert plan.makespan(jobs, 1, lambda job: 2.0) == 2.0 * len(jobs)
    first = lottery.Job(0, 0, "ticket")
    rest = [job for job in jobs if job != first]
    assert plan.makespan(rest, 1, lambda job: 2.0, running={first: 0.5}) == 0.5 + 2.0 * len(rest)


def test_plan_trains_nothing_and_prints_the_wall_time_per_worker_count(tmp_path):
    result = imp("--rounds", "3", "--trials", "2", "--iterations", "1000", "--plan", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "jobs: 16 (16 not finished); critical path: 4 trainings" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "8", "32", "128"]
    assert not (tmp_path / "run").exists()


def test_a_plan_times_lenet_on_mnist_itself_and_other_datasets_on_random_images(monkeypatch, tmp_path):
    """Lenet's first layer skips MNIST's zeros: timed on random images, the main job's plan said
    17 min 39 s where the run took 13 min 05 s. CIFAR-10 is neither loaded nor downloaded."""
    from click.testing import CliRunner
    import cli
    from minilottery import bench
    timed = []

    def branch_seconds(hp, input_shape, budget=2.0, sparse="auto", data=None, **options):
        timed.append((hp.net, input_shape, None if data is None else (data.name, data.x_train.shape)))
        return 60.0, {}

    def side_by_side(experiment, input_shape, budget, own_data, cores, rounds):
        timed.append((experiment.hp.net, input_shape, ("side by side", own_data, cores)))
        return [([70.0] * len(rounds), 1)] * cores

    monkeypatch.setattr(bench, "branch_seconds", branch_seconds)
    monkeypatch.setattr(plan, "one_core_side_by_side", side_by_side)
    monkeypatch.setattr(threads, "WORKERS", 2)
    for net in ("lenet", "conv2"):
        result = CliRunner().invoke(cli.main, ["imp", "--net", net, "--rounds", "2", "--plan", "--out", tmp_path / net])
        assert result.exit_code == 0, result.output
        assert "1 min 10 s on one core with a job on every core" in result.output
    assert timed == [("lenet", (1, 28, 28), ("mnist", (55_000, 1, 28, 28))), ("lenet", (1, 28, 28), ("side by side", True, 2)),
                     ("conv2", (3, 32, 32), None), ("conv2", (3, 32, 32), ("side by side", False, 2))]


def test_a_plan_times_one_core_with_a_job_on_every_core(monkeypatch):
    """Two worker processes time a branch each, at the same moment (one core beside an idle one
    timed the main job's branches 1.1-1.3x short)."""
    monkeypatch.setattr(plan, "START_AFTER", 3.0)
    experiment = lottery.Experiment(hparams.from_options("lenet", {"iterations": 100}), rounds=1)
    dense, sparse = {name: 1.0 for name in ("fc1.weight", "fc2.weight", "fc3.weight")}, {"fc1.weight": 0.05,
                                                                                       "fc2.weight": 0.05, "fc3.weight": 0.2}
    timed = plan.one_core_side_by_side(experiment, (1, 28, 28), 0.2, True, 2, [dense, sparse])
    assert len(timed) == 2 and len({pid for _, pid in timed}) == 2 and os.getpid() not in {pid for _, pid in timed}
    assert all(len(seconds) == 2 and all(0 < s < 60 for s in seconds) for seconds, _ in timed)


def lenet_rounds(thresholds, rounds=10):
    experiment = lottery.Experiment(hparams.defaults("lenet"), rounds=rounds, sparse_thresholds=thresholds)
    return plan.rounds_to_time(experiment, (1, 28, 28))


def test_a_plan_times_the_first_round_of_each_engine_and_the_last_sparse_one():
    """The main job's rounds 8-10 trained as a sparse stack in 49-67 s a branch, rounds 0-7 dense in
    87-130 s: given every round a dense branch's time, its plan came out 17% long."""
    rounds = lenet_rounds((0.15, 0.06, 0.20))  # fc1 keeps 0.8^r: 0.21 at round 7, 0.17 at round 8
    assert rounds.timed == [0, 8, 10]
    assert rounds.engines[:8] == [((), False)] * 8
    assert all(stack and [name for name, _ in layers] == ["fc1", "fc2", "fc3"] for layers, stack in rounds.engines[8:])
    assert lenet_rounds((0.12, 0.06, 0.12)).timed == [0, 10]  # 0.8^9 = 0.134, 0.8^10 = 0.107
    # evaluation moves from BLAS to the sparse kernels below 0.15 (fc1 and fc2 at round 9): timed apart
    assert lenet_rounds((0.15, 0.15, 0.20)).timed == [0, 8, 9, 10]
    assert lenet_rounds((0.0, 0.0, 0.0)).timed == [0]  # nothing sparse: one timing serves every round
    # layers sparse one by one before they stack: fc1 and fc2 below 0.3 from round 6, fc3 (0.9^r) not yet
    apart = lenet_rounds((0.3, 0.3, 0.11))
    assert apart.timed == [0, 6, 9, 10] and apart.engines[6][1] is False and apart.engines[10][1] is True


def test_a_plans_rounds_keep_what_layer_wise_pruning_keeps():
    rounds = lenet_rounds((0.12, 0.06, 0.12), rounds=3)
    sizes = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    for r, densities in enumerate(rounds.densities):
        assert densities["fc1.weight"] == pytest.approx(0.8 ** r, abs=1e-5)
        assert densities["fc3.weight"] == pytest.approx(0.9 ** r, abs=1e-3)
        assert rounds.kept[r] == pytest.approx(sum(densities[n] * sizes[n] for n in sizes) / sum(sizes.values()))
    # global pruning: one rate over the layers, fc's 20%
    experiment = lottery.Experiment(hparams.from_options("lenet", {"pruning": "global"}), rounds=2)
    densities = plan.rounds_to_time(experiment, (1, 28, 28)).densities
    assert all(d == pytest.approx(0.64, abs=1e-5) for d in densities[2].values())


def test_every_round_takes_its_engines_time_on_a_line_between_timed_sparse_rounds():
    dense, stack = ((), False), ((("fc1", False),), True)
    rounds = plan.Rounds(densities=[{}] * 5, kept=[1.0, 0.8, 0.4, 0.3, 0.2], engines=[dense, dense, stack, stack, stack],
                         timed=[0, 2, 4])
    times = plan.every_round(rounds, {0: 100.0, 2: 60.0, 4: 40.0})
    assert times == pytest.approx([100.0, 100.0, 60.0, 50.0, 40.0])


def test_a_plan_gives_each_round_the_time_of_its_engine(monkeypatch, tmp_path):
    """A stub timing that makes a sparse stack's branch take its kept share of 100 s: the plan's
    wall time is the makespan of those times, not of the dense round's for every job."""
    from minilottery import bench
    started = []

    def branch_seconds(hp, input_shape, budget=2.0, sparse="auto", data=None, start_at=None, densities=None,
                       thresholds=None):
        started.append((densities["fc1.weight"], thresholds))
        return (100.0 if densities["fc1.weight"] > 0.2 else 300 * densities["fc1.weight"]), {}

    monkeypatch.setattr(bench, "branch_seconds", branch_seconds)
    monkeypatch.setattr(threads, "WORKERS", 1)
    monkeypatch.setenv("MINILOTTERY_SPARSE_THRESHOLDS", "0.15,0.06,0.2")
    experiment = lottery.Experiment(hparams.defaults("lenet"), rounds=10)
    expected = plan.plan(experiment, rundir.RunFolder(tmp_path / "run"), (1, 28, 28), workers=(1, 2), budget=0.1)
    assert [round(d, 3) for d, _ in started] == [1.0, 0.168, 0.107] and {t for _, t in started} == {(0.15, 0.06, 0.2)}
    fc1, kept = [0.8 ** r for r in range(11)], lenet_rounds((0.15, 0.06, 0.2)).kept
    between = 300 * fc1[8] + 300 * (fc1[10] - fc1[8]) * (kept[9] - kept[8]) / (kept[10] - kept[8])  # on the line in Pm
    assert expected.seconds_one_core == pytest.approx([100.0] * 8 + [300 * fc1[8], between, 300 * fc1[10]], rel=1e-4)
    assert expected.wall[1] == pytest.approx(2 * sum(expected.seconds_one_core))
    assert expected.wall[2] == pytest.approx(sum(expected.seconds_one_core))
    assert expected.wall[1] < 0.85 * 22 * 100  # every branch at the dense time: 2,200 s


def test_a_timing_trains_until_it_starts():
    """A fresh process's first few hundred steps are slow: with 3 of them before the timing, the
    main job's plans came out 10-38% long. Until start_at it trains, and it times no earlier."""
    from minilottery import bench
    hp = hparams.from_options("lenet", {"iterations": 100})
    began = time.time()
    _, timings = bench.branch_seconds(hp, (1, 28, 28), 0.2, start_at=began + 1.0)
    assert time.time() - began >= 1.0
    assert timings["warm_up_steps"] > 30  # ~1 ms a step: hundreds in a second
    _, alone = bench.branch_seconds(hp, (1, 28, 28), 0.2)  # no start: it warms up for half its budget
    assert alone["warm_up_steps"] > 3


@pytest.mark.auto_workers
def test_default_workers_are_as_many_as_the_run_can_use():
    """One worker per core while the graph has that many jobs to run at once, else one."""
    def auto(cores, **settings):
        return executors.default_workers(experiment(**settings), cores=cores)
    assert auto(2, rounds=10, controls=("reinit",)) == 2  # the main job: ticket and reinit side by side
    assert auto(2, rounds=10, controls=()) == 1  # one chain: every core for each job
    assert auto(8, rounds=5, trials=2, controls=()) == 2
    assert auto(8, rounds=5, trials=5, controls=("reinit", "random"), oneshot=True) == 8
    assert auto(2, rounds=0, controls=()) == 1



def test_imp_without_workers_uses_the_default(tmp_path, small_mnist):
    result = imp("--rounds", "1", "--iterations", "20", "--eval-every", "10", "--controls", "reinit", "--quiet",
                 "--data-dir", small_mnist, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    cores = len(os.sched_getaffinity(0))
    expected = "this process" if cores == 1 else "2 worker processes, 1 thread(s) each"
    assert expected in result.stdout, result.stdout
