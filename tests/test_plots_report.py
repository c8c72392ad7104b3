"""The figures and the report of an imp run folder (plots.py, report.py, ``plot`` and ``report``).

One tiny real run is built per module: 2 pruning rounds x 20 iterations, 2 trials,
every control, on a slice of MNIST so that it takes seconds.
"""
import json
import math
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import colors, image

import cli
from minilottery import datasets, executors, hparams, idx, lottery, plots, pruning, rundir, schedule
from minilottery.plots import FIGURES, figure_3_rounds
from minilottery.report import RunResults

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BRANCHES = ("ticket", "reinit", "random", "oneshot")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, mnist):
    small = datasets.Dataset("mnist", mnist.x_train[:3000], mnist.y_train[:3000], mnist.x_val[:500],
                             mnist.y_val[:500], mnist.x_test[:500], mnist.y_test[:500])
    hp = hparams.Hyperparameters(iterations=20, eval_every=10, batch_size=20)
    experiment = lottery.Experiment(hp, rounds=2, trials=2, controls=("reinit", "random"), oneshot=True).validate()
    folder = rundir.RunFolder(tmp_path_factory.mktemp("imp") / "run")
    folder.start(experiment.config())
    schedule.Driver(experiment, folder, executors.Inline(), small).run()
    return folder.root


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def metrics_files(root):
    """Every branch's metrics.json read directly, keyed by (round, branch), lists over trials."""
    found = {}
    for path in sorted(root.glob("trial*/round*/*/metrics.json")):
        metrics = json.loads(path.read_text())
        found.setdefault((metrics["round"], metrics["branch"]), []).append(metrics)
    return found


# ----------------------------------------------------------------------------- figures
def test_plot_writes_every_figure_as_a_readable_non_blank_png(run_folder):
    result = invoke("plot", run_folder)
    assert result.exit_code == 0, result.output
    for name in FIGURES:
        path = run_folder / "figures" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] >= 500 and pixels.shape[1] >= 800, (name, pixels.shape)
        assert pixels[..., :3].var() > 0, f"{name} is one colour"
        rgb = np.round(255 * pixels[..., :3]).astype(np.uint32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # one integer per colour
        assert len(np.unique(packed)) > 50, f"{name} is nearly blank"
        assert f"wrote {path}" in result.output
    # The data are drawn, not just axes: every branch's colour appears in the accuracy figure.
    pixels = image.imread(run_folder / "figures" / "accuracy_at_early_stop.png")[..., :3]
    for colour in ("tab:blue", "tab:orange", "tab:green", "tab:red"):
        close = np.all(np.abs(pixels - np.array(colors.to_rgb(colour))) < 0.02, axis=-1)
        assert close.sum() > 200, f"no {colour} line in accuracy_at_early_stop.png"


def test_figure_3_uses_the_rounds_nearest_the_papers_pm():
    """For Lenet the paper's 100, 51.3, 21.1, 7.0, 3.6% are rounds 0, 3, 7, 12, 15."""
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    rates = {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    metrics = {(0, r, "ticket"): {"pm": pruning.paper_pm(sizes, rates, r)} for r in range(17)}
    results = RunResults(None, {"hyperparameters": {}}, metrics)
    assert figure_3_rounds(results) == [0, 3, 7, 12, 15]
    # A short run offers fewer rounds: each is chosen once.
    short = RunResults(None, {"hyperparameters": {}}, {k: v for k, v in metrics.items() if k[1] <= 2})
    assert figure_3_rounds(short) == [0, 2]


# ----------------------------------------------------------------------------- report
def parse_table(text):
    """The Markdown table's rows as dicts of header -> cell."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def parse_cell(text):
    """"mean [min, max]" -> three floats."""
    found = re.fullmatch(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", text)
    assert found, f"cell {text!r} is not 'mean [min, max]'"
    return [float(v) for v in found.groups()]


def test_report_prints_the_numbers_of_the_metrics_files(run_folder):
    result = invoke("report", run_folder)
    assert result.exit_code == 0, result.output
    rows = parse_table(result.output)
    expected = metrics_files(run_folder)
    assert [int(row["round"]) for row in rows] == [0, 1, 2]
    checked = 0
    for row in rows:
        round_index = int(row["round"])
        tickets = expected[round_index, "ticket"]
        assert len(tickets) == 2 and int(row["trials"]) == 2
        assert float(row["Pm %"]) == pytest.approx(100 * np.mean([m["pm"] for m in tickets]), abs=0.006)
        for branch in BRANCHES:
            if (round_index, branch) not in expected:
                assert row[f"{branch} early-stop it."] == "-"  # no random or one-shot control of the dense net
                continue
            runs = expected[round_index, branch]
            iterations = [m["early_stop_iteration"] for m in runs]
            accuracies = [100 * m["test_accuracy_at_early_stop"] for m in runs]
            mean, low, high = parse_cell(row[f"{branch} early-stop it."])
            assert (low, high) == (min(iterations), max(iterations))
            assert mean == pytest.approx(np.mean(iterations), abs=0.5)
            for shown, true in zip(parse_cell(row[f"{branch} test acc. %"]),
                                   (np.mean(accuracies), min(accuracies), max(accuracies))):
                assert shown == pytest.approx(true, abs=0.006)
            checked += 1
    assert checked == 2 + 4 + 4  # ticket and reinit at round 0; all four branches after
    written = (run_folder / "report.md").read_text()
    start = written.index("| round")
    assert parse_table(written[start:written.index("\n\n", start)]) == rows  # the file holds the same table
    assert f"wrote {run_folder / 'report.md'}" in result.output


def test_imp_ends_by_writing_figures_and_report(tmp_path, mnist, monkeypatch):
    """The imp command, on a 5,600-image MNIST folder with a budget of 0 iterations, takes seconds."""
    data = tmp_path / "data"
    data.mkdir()
    for stem, images, labels in (("train", mnist.x_train[:5600], mnist.y_train[:5600]),
                                 ("t10k", mnist.x_test[:500], mnist.y_test[:500])):
        idx.write_idx(data / f"{stem}-images-idx3-ubyte", np.round(255 * images[:, 0]).astype(np.uint8))
        idx.write_idx(data / f"{stem}-labels-idx1-ubyte", labels.astype(np.uint8))
    drawn = []  # the figures themselves are tested above; here, that imp asks for them
    monkeypatch.setattr(plots, "write_figures", lambda root: drawn.append(root) or [])
    out = tmp_path / "run"
    result = invoke("imp", "--rounds", 1, "--iterations", 0, "--controls", "none", "--data-dir", data,
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert drawn == [out]
    assert "| round" in (out / "report.md").read_text()
    assert result.output.splitlines()[-1] == f"figures: 0 PNG files in {out / 'figures'}; report: {out / 'report.md'}"


def test_a_plotting_failure_at_the_end_of_imp_loses_nothing(run_folder, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("*.npz", "figures", "report.md"))
    (copy / "trial1" / "round02" / "ticket" / "curve.json").write_text("{")
    before = sorted(p.relative_to(copy) for p in copy.rglob("*.json"))
    cli.write_figures_and_report(copy)  # must not raise: the run's results are already on disk
    assert "figures and report not written" in capsys.readouterr().err
    assert sorted(p.relative_to(copy) for p in copy.rglob("*.json")) == before


# ----------------------------------------------------------------------------- damaged folders
def damage_missing_config(root):
    (root / "config.json").unlink()


def damage_truncated_metrics(root):
    path = root / "trial0" / "round01" / "reinit" / "metrics.json"
    path.write_text(path.read_text()[:40])


def damage_metrics_without_accuracy(root):
    path = root / "trial1" / "round02" / "oneshot" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["test_accuracy_at_early_stop"]
    path.write_text(json.dumps(metrics))


def damage_no_finished_rounds(root):
    for path in root.glob("trial*"):
        shutil.rmtree(path)


def damage_not_a_folder(root):
    shutil.rmtree(root)


@pytest.mark.parametrize("damage, message", [
    (damage_missing_config, "not an imp run folder (no config.json)"),
    (damage_truncated_metrics, "round01/reinit/metrics.json: damaged JSON"),
    (damage_metrics_without_accuracy, "round02/oneshot/metrics.json: damaged (test_accuracy_at_early_stop"),
    (damage_no_finished_rounds, "no finished rounds yet"),
    (damage_not_a_folder, "no such run folder"),
])
@pytest.mark.parametrize("command", ["plot", "report"])
def test_a_damaged_folder_gives_one_clear_line(run_folder, tmp_path, damage, message, command):
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("*.npz", "figures", "report.md"))
    damage(copy)
    result = invoke(command, copy)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1 and result.output.startswith("Error: "), result.output
    assert message in result.output
    assert not (copy / "figures").exists() and not (copy / "report.md").exists()


def test_spread_is_the_papers_error_bar():
    from minilottery.report import Spread, cell
    spread = Spread.of([0.981, 0.975, 0.99])
    assert math.isclose(spread.mean, 0.982) and (spread.low, spread.high, spread.count) == (0.975, 0.99, 3)
    assert cell(spread, 100, 2) == "98.20 [97.50, 99.00]"
    assert cell(Spread.of([1200]), 1, 0) == "1200"  # one trial: no bracket
    assert cell(None) == "-"


def test_equal_trials_draw_zero_length_error_bars(tmp_path):
    """Three equal values: their float mean exceeds them by one bit, which must not be a negative error bar."""
    from minilottery.plots import accuracy_at_early_stop, series
    assert sum([0.1] * 3) / 3 > 0.1
    metrics = {(t, r, "ticket"): {"pm": 0.8 ** r, "early_stop_iteration": 100, "test_accuracy_at_early_stop": 0.1}
               for t in range(3) for r in range(2)}
    results = RunResults(tmp_path, {"hyperparameters": {"net": "lenet", "dataset": "mnist"}}, metrics)
    _, _, (below, above) = series(results, "ticket", "test_accuracy_at_early_stop")
    assert min(below + above) >= 0
    accuracy_at_early_stop(results, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == PNG_SIGNATURE
