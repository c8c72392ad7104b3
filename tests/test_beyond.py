"""After the paper: instability analysis, runs compared side by side, and ticket transfer."""
import numpy as np
from click.testing import CliRunner

import cli
from minilottery import datasets, files, lottery, nets, rundir, stability, train


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def imp(folder, data, *more):
    result = invoke("imp", "--quiet", "--rounds", 1, "--controls", "none", "--iterations", 60, "--eval-every", 20,
                    "--data-dir", data, "--out", folder, *more)
    assert result.exit_code == 0, result.output
    return rundir.RunFolder(folder)


def test_stability_trains_two_copies_and_measures_the_path(tmp_path, small_mnist):
    run = imp(tmp_path / "run", small_mnist)
    result = invoke("stability", run.root, "--round", 1, "--k", "0,20")
    assert result.exit_code == 0, result.output
    assert "k = 20: instability" in result.output
    found = stability.results(run.root, 0, 1)
    assert list(found) == [0, 20]
    data = datasets.load("mnist", str(small_mnist))
    mask = run.branch_at(0, 1, "ticket").mask()
    for k, path in found.items():
        errors = path["test_error"]
        assert len(errors) == 11 and path["alpha"][0] == 0 and path["alpha"][-1] == 1
        assert path["instability"] == max(errors) - (errors[0] + errors[-1]) / 2
        place = stability.folder_of(run.root, 0, 1, k)
        copy1, copy2 = (files.read_npz(place / f"copy{c}" / "state.npz")["flat_params"] for c in (1, 2))
        assert not np.array_equal(copy1, copy2)  # each its own data order
        # the ends of the path are the copies themselves
        net = nets.build("lenet", seed=0)
        net.load_state(files.read_npz(place / "copy1" / "state.npz"))
        assert errors[0] == 1 - train.evaluate(net, data.x_test, data.y_test)[1]
    # W_0 is the ticket's start, m ⊙ θ₀; W_20 its weights after 20 iterations on its own order
    start = nets.build("lenet", seed=0)
    start.load_state({k[4:]: v for k, v in files.read_npz(stability.folder_of(run.root, 0, 1, 0) / "start.npz").items()
                      if k.startswith("net.")})
    for name in mask:
        np.testing.assert_array_equal(start.params[name], run.theta_0(0)[name] * mask[name])
    # W_20 is the ticket itself after 20 iterations: its validation accuracy there
    start.load_state({k[4:]: v for k, v in files.read_npz(stability.folder_of(run.root, 0, 1, 20) / "start.npz").items()
                      if k.startswith("net.")})
    curve = files.read_json(run.branch_at(0, 1, "ticket").path / "curve.json")
    assert train.evaluate(start, data.x_val, data.y_val)[1] == curve["val_accuracy"][curve["iteration"].index(20)]
    assert (run.root / "figures" / "stability_trial0_round01.png").stat().st_size > 10_000
    assert "## Instability analysis" in (run.root / "report.md").read_text()
    again = invoke("stability", run.root, "--round", 1, "--k", "0,20")  # finished copies are read back
    assert again.exit_code == 0 and again.output == result.output


def test_stability_refuses_what_the_run_cannot_answer(tmp_path, small_mnist):
    run = imp(tmp_path / "run", small_mnist)
    for args, message in ((["--round", 2], "ticket of trial 0 round 2 has not finished"),
                          (["--round", 1, "--k", "60"], "k = 60 must be between 0"),
                          (["--round", 1, "--k", "a,b"], "--k takes comma-separated iterations")):
        result = invoke("stability", run.root, *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_transfer_trains_the_source_tickets(tmp_path, small_mnist):
    source = imp(tmp_path / "source", small_mnist)
    target = imp(tmp_path / "target", small_mnist, "--transfer-from", source.root, "--controls", "random",
                 "--seed", 5)
    np.testing.assert_array_equal(target.theta_0(0)["fc1.weight"], source.theta_0(0)["fc1.weight"])
    for r in (0, 1):
        ticket, mask = target.branch_at(0, r, "ticket"), source.branch_at(0, r, "ticket").mask()
        assert all(np.array_equal(ticket.mask()[n], mask[n]) for n in mask)
    random = target.branch_at(0, 1, "random").mask()
    assert random.kept() == mask.kept() and not np.array_equal(random["fc1.weight"], mask["fc1.weight"])
    experiment = lottery.Experiment.from_config(target.config())
    assert all(job.needs() == [] for job in experiment.jobs())  # every round at once
    with_oneshot = lottery.Experiment(experiment.hp, rounds=2, oneshot=True, transfer_from=str(source.root))
    assert {job: job.needs() for job in with_oneshot.jobs() if job.needs()} == {
        lottery.Job(0, r, "oneshot"): [lottery.Job(0, 0, "ticket")] for r in (1, 2)}  # the dense net it prunes
    result = invoke("compare", target.root, source.root, "--labels", "transferred,own", "--branches",
                    "ticket,random", "--out", tmp_path / "both.png")
    assert result.exit_code == 0 and (tmp_path / "both.png").stat().st_size > 10_000, result.output
    assert "transferred: Lenet on MNIST" in result.output


def test_transfer_refuses_a_source_that_cannot_serve(tmp_path, small_mnist):
    source = imp(tmp_path / "source", small_mnist)
    for args, message in ((["--rounds", 2], "no finished ticket at trial 0 round 2"),
                          (["--net", "conv2"], "holds tickets of lenet, not conv2"),
                          (["--rewind-iteration", 20], "leave out --rewind-iteration")):
        result = invoke("imp", "--quiet", "--iterations", 60, "--data-dir", small_mnist, "--transfer-from",
                        source.root, "--out", tmp_path / "t", *args)
        assert result.exit_code == 1 and message in result.output, result.output
    result = invoke("compare", source.root, "--labels", "a,b", "--out", tmp_path / "x.png")
    assert result.exit_code == 1 and "--labels names 2 runs, but 1 were given" in result.output
