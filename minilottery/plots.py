"""The paper's figures, drawn from an imp run folder into RUN/figures/ (PNG).

* ``accuracy_at_early_stop.png``: test accuracy at the early-stopping iteration
  against Pm, as in Figure 1 (right) and Figure 4, with the dense network's
  accuracy as a reference line;
* ``early_stop_iteration.png``: the early-stopping iteration against Pm, as in
  Figure 1 (left) and Figure 4: winning tickets learn faster, down to a point;
* ``training_curves.png``: test accuracy during training for the rounds closest to
  the Pm values of Figure 3 (100, 51.3, 21.1, 7.0, 3.6%); random reinitialisations dashed;
* ``generalization.png``: training and test accuracy at the end of training and
  their difference, as in Figure 4's end-of-training panels (pruned networks
  generalise better: a smaller train–test gap);
* ``weight_distance.png``: the mean distance |θ_T − θ₀| travelled by the weights
  that the next round keeps against those it prunes (the Discussion: winning
  tickets' weights move further).

Pm axes are logarithmic with 100% at the left, as in the paper, and each point is
the mean over trials with the minimum and maximum as error bars (Appendix C).
Figures are matplotlib ``Figure`` objects rendered by the Agg canvas, not pyplot,
so drawing needs no display and leaves no global state; each PNG is written
atomically (files.py), so a reader never sees half an image.
"""
import io
import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from . import files
from .report import BRANCH_LABELS, load_run

COLOURS = {"ticket": "tab:blue", "reinit": "tab:orange", "random": "tab:green", "oneshot": "tab:red",
           "snip": "tab:purple", "synflow": "tab:brown"}
MARKERS = {"ticket": "o", "reinit": "s", "random": "^", "oneshot": "D", "snip": "v", "synflow": "P"}
FIGURE_3_PM = (100.0, 51.3, 21.1, 7.0, 3.6)  # the Pm values (%) of the paper's Figure 3
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9}
WIDTH, HEIGHT, DPI = 7.5, 4.6, 150  # about 1100 × 700 pixels: sharp at a README's width
MAX_PM_TICKS = 12


# ----------------------------------------------------------------------------- helpers
def new_figure(columns=1):
    figure = Figure(figsize=(WIDTH * (1 + 0.6 * (columns - 1)), HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def save(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    files.atomic_write_bytes(path, buffer.getvalue())
    return path


def pm_axis(axes, pms):
    """A log Pm axis from 100% at the left to the smallest ticket at the right, ticked at the rounds' Pm."""
    pms = sorted(set(round(p, 1) for p in pms), reverse=True)
    axes.set_xscale("log")
    axes.set_xlim(max(pms) * 1.12, min(pms) / 1.12)  # reversed limits: the axis runs 100 → small
    step = math.ceil(len(pms) / MAX_PM_TICKS)
    axes.xaxis.set_major_locator(FixedLocator(pms[::step]))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}" if value >= 10 else f"{value:.1f}"))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("percent of weights remaining, Pm (%)")


def series(results, branch, key, scale=1.0):
    """x = Pm (%), mean, and the distances down to the minimum and up to the maximum, per round."""
    xs, means, below, above = [], [], [], []
    for round_index in results.rounds:
        spread = results.spread(branch, round_index, key)
        if spread is None:
            continue
        xs.append(100 * results.spread(branch, round_index, "pm").mean)
        means.append(scale * spread.mean)
        # max(0, ...): the mean of equal values can differ from them in the last bit
        below.append(max(0.0, scale * (spread.mean - spread.low)))
        above.append(max(0.0, scale * (spread.high - spread.mean)))
    return xs, means, [below, above]


def error_bars(axes, results, branch, key, scale=1.0, label=None, **style):
    xs, means, bars = series(results, branch, key, scale)
    if not xs:
        return []
    options = dict(color=COLOURS[branch], marker=MARKERS[branch], markersize=5, capsize=3, linewidth=1.6,
                   label=label or BRANCH_LABELS[branch])
    options.update(style)
    axes.errorbar(xs, means, yerr=bars, **options)
    return xs


def dense_line(axes, results, key, scale, label):
    dense = results.spread("ticket", 0, key)
    if dense is not None:
        axes.axhline(scale * dense.mean, color="0.35", linestyle=":", linewidth=1.3, label=label)


def all_pms(results):
    return [100 * results.spread("ticket", r, "pm").mean for r in results.rounds]


def subtitle(results):
    return f"{results.title()} (mean, error bars min–max)"


# ----------------------------------------------------------------------------- the figures
def accuracy_at_early_stop(results, path):
    """Figure 1 (right) and Figure 4: test accuracy at early stopping against Pm."""
    figure, (axes,) = new_figure()
    for branch in results.branches:
        error_bars(axes, results, branch, "test_accuracy_at_early_stop", 100)
    dense_line(axes, results, "test_accuracy_at_early_stop", 100, "dense network (round 0)")
    pm_axis(axes, all_pms(results))
    axes.set_ylabel("test accuracy at early stopping (%)")
    axes.set_title(f"Test accuracy at the early-stopping iteration\n{subtitle(results)}")
    axes.legend(loc="lower left")
    return save(figure, path)


def early_stop_iteration(results, path):
    """Figure 1 (left) and Figure 4: the iteration of minimum validation loss against Pm."""
    figure, (axes,) = new_figure()
    for branch in results.branches:
        error_bars(axes, results, branch, "early_stop_iteration")
    dense_line(axes, results, "early_stop_iteration", 1, "dense network (round 0)")
    pm_axis(axes, all_pms(results))
    # headroom above the highest error bar keeps the legend clear of the data
    highest = max(max(results.values(b, r, "early_stop_iteration")) for b in results.branches
                  for r in results.rounds if results.values(b, r, "early_stop_iteration"))
    axes.set_ylim(0, 1.3 * max(highest, 1))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_ylabel("early-stopping iteration (training iterations)")
    axes.set_title(f"Early-stopping iteration (minimum validation loss)\n{subtitle(results)}")
    axes.legend(loc="upper center", ncol=3)
    return save(figure, path)


def figure_3_rounds(results, targets=FIGURE_3_PM):
    """The rounds whose ticket Pm is closest (on a log scale) to each of the paper's Figure 3 values."""
    pm = {r: 100 * results.spread("ticket", r, "pm").mean for r in results.rounds}
    chosen = {min(pm, key=lambda r: abs(math.log(pm[r] / target))) for target in targets}
    return sorted(chosen)


def mean_curve(curves, key):
    """Iterations and the mean, minimum and maximum of ``key`` over trials, on the iterations all share."""
    length = min(len(c["iteration"]) for c in curves)
    columns = list(zip(*(c[key][:length] for c in curves)))
    return (curves[0]["iteration"][:length], [100 * sum(v) / len(v) for v in columns],
            [100 * min(v) for v in columns], [100 * max(v) for v in columns])


def training_curves(results, path):
    """Figure 3: test accuracy as training proceeds, for winning tickets of several sizes."""
    figure, (axes,) = new_figure()
    plotted = []
    for index, round_index in enumerate(figure_3_rounds(results)):
        colour = matplotlib.colormaps["viridis"](index / max(1, len(figure_3_rounds(results)) - 1) * 0.85)
        pm = 100 * results.spread("ticket", round_index, "pm").mean
        for branch, line in (("ticket", "-"), ("reinit", "--")):
            curves = results.curves(branch, round_index)
            if not curves:
                continue
            iterations, mean, low, high = mean_curve(curves, "test_accuracy")
            label = f"Pm {pm:.1f}%" + (" (reinit)" if branch == "reinit" else "")
            axes.plot(iterations, mean, line, color=colour, linewidth=1.6, label=label)
            if len(curves) > 1:
                axes.fill_between(iterations, low, high, color=colour, alpha=0.12, linewidth=0)
            plotted.append((iterations, mean))
    if not plotted:
        return None
    # Zoom past the first evaluations (~10% at iteration 0), where the paper's Figure 3 zooms too.
    budget = max(iterations[-1] for iterations, _ in plotted)
    late = [v for iterations, mean in plotted for i, v in zip(iterations, mean) if i >= 0.2 * budget] or \
        [v for _, mean in plotted for v in mean]
    margin = max(0.5, 0.08 * (max(late) - min(late)))
    axes.set_ylim(min(late) - margin, min(100.0, max(late) + margin))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_xlabel("training iteration")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"Test accuracy during training (solid: winning ticket, dashed: random reinit)\n"
                   f"{results.title()} (mean, band min–max)")
    axes.legend(loc="lower right", ncol=2)
    return save(figure, path)


def generalization(results, path):
    """Figure 4's end-of-training panels: training vs test accuracy, and the gap between them."""
    figure, (left, right) = new_figure(columns=2)
    for branch in results.branches:
        # one legend entry per branch: the title says which line style is which accuracy
        error_bars(left, results, branch, "final_test_accuracy", 100)
        error_bars(left, results, branch, "final_train_accuracy", 100, label="_train", linestyle="--",
                   markerfacecolor="white")
        xs, gaps = [], []
        for round_index in results.rounds:
            train = results.values(branch, round_index, "final_train_accuracy")
            test = results.values(branch, round_index, "final_test_accuracy")
            if train:
                xs.append(100 * results.spread(branch, round_index, "pm").mean)
                gaps.append(100 * sum(a - b for a, b in zip(train, test)) / len(train))
        right.plot(xs, gaps, color=COLOURS[branch], marker=MARKERS[branch], markersize=5, linewidth=1.6,
                   label=BRANCH_LABELS[branch])
    for axes in (left, right):
        pm_axis(axes, all_pms(results))
    right.axhline(0, color="0.35", linewidth=0.8)
    left.set_ylabel("accuracy at the end of training (%)")
    left.set_title("Training (dashed) and test (solid) accuracy")
    left.legend(loc="best")
    right.set_ylabel("train − test accuracy (percentage points)")
    right.set_title("Generalisation gap (mean over trials)")
    right.legend(loc="best")
    figure.suptitle(f"End of training ({results.hp['iterations']:,} iterations): {subtitle(results)}")
    return save(figure, path)


def weight_distance(results, path):
    """The Discussion: mean |θ_T − θ₀| of weights the next round keeps vs. those it prunes."""
    if not any(v is not None for r in results.rounds for v in results.values("ticket", r, "distance_kept")):
        return None
    figure, (axes,) = new_figure()
    xs = error_bars(axes, results, "ticket", "distance_kept", label="kept by the next round", color="tab:blue")
    error_bars(axes, results, "ticket", "distance_pruned", label="pruned by the next round", color="tab:gray",
               marker="v", linestyle="--")
    pm_axis(axes, xs)
    axes.set_ylim(bottom=0)
    axes.set_ylabel(r"mean $|\theta_T - \theta_0|$ over the weights (weight units)")
    axes.set_title(f"How far the winning ticket's weights moved in training\n{subtitle(results)}")
    axes.legend(loc="best")
    return save(figure, path)


FIGURES = {
    "accuracy_at_early_stop.png": accuracy_at_early_stop,
    "early_stop_iteration.png": early_stop_iteration,
    "training_curves.png": training_curves,
    "generalization.png": generalization,
    "weight_distance.png": weight_distance,
}


def write_figures(root):
    """Draw every figure the run's data allows into RUN/figures/; return the paths written."""
    results = load_run(root)
    folder = results.root / "figures"
    folder.mkdir(exist_ok=True)
    written = []
    with matplotlib.rc_context(STYLE):
        for name, draw in FIGURES.items():
            path = draw(results, folder / name)
            if path is not None:
                written.append(path)
    return written
