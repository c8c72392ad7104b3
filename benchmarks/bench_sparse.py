"""Lenet samples/s against the fraction of weights remaining Pm: sparse, dense, PyTorch.

Frankle & Carbin (2019, "Limitations") note that a ticket trained as a dense tensor
times a mask costs as much at Pm = 5% as the dense network. This script measures
minilottery's sparse path (``--sparse auto``, sparse.py) and its dense masked path
(``--sparse off``) with ``cli.py bench --compare``, and PyTorch's masked Lenet with
/work/shared/bench/torch_lenet.py (fused Adam, denormals flushed), one after the
other in one session, and draws training and evaluation samples/s against Pm.

    PYTHONPATH=. python benchmarks/bench_sparse.py [--iters 2000] [--reps 5]
        [--densities 1,0.513,0.211,0.07,0.036,0.014] [--torch /tmp/torchvenv/bin/python]
        [--blas-threads N] [--out docs/performance-sparse.png]

Figures are medians over --reps timings. Writes the figure and, beside it, the raw
numbers as JSON.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_SCRIPT = "/work/shared/bench/torch_lenet.py"


def environment(blas_threads):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if blas_threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(blas_threads)
    return env


def minilottery(densities, iters, reps, blas_threads):
    """cli.py bench --compare --json: {"auto": [...], "off": [...]}, one result dict per density.

    --compare times --sparse auto and off back to back at each density, so that a
    change in the machine's load during the run falls on both alike."""
    command = [sys.executable, str(ROOT / "cli.py"), "bench", "--net", "lenet", "--densities", densities,
               "--iterations", str(iters), "--repeats", str(reps), "--sparse", "auto", "--compare", "--json"]
    output = subprocess.run(command, env=environment(blas_threads), check=True, capture_output=True,
                            text=True).stdout
    results = json.loads(output)
    return {"auto": results[0::2], "off": results[1::2]}


def torch(python, densities, iters, reps, blas_threads):
    """torch_lenet.py's train samples/s per density and eval samples/s at batch 1000."""
    command = [python, TORCH_SCRIPT, "--adam", "fused", "--flush-denormal", "--densities", densities,
               "--iters", str(iters), "--reps", str(reps)]
    if blas_threads:
        command += ["--threads", str(blas_threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    train = {float(d): float(rate) for d, rate in
             re.findall(r"train density=(\S+)\s+kept=\S+\s+samples/s median=\s*(\d+)", output)}
    evaluation = re.search(r"eval 10k samples batch=1000 .*samples/s=\s*(\d+)", output)
    return {"train": train, "eval_batch_1000": float(evaluation.group(1)), "output": output}


def draw(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, title in ((axes[0], "train_samples_per_s", "training (batch 60, Adam)"),
                             (axes[1], "eval_samples_per_s", "evaluation (batch 1000)")):
        for mode, style in (("auto", "o-"), ("off", "s--")):
            rows = results["minilottery"][mode]
            axis.plot([100 * r["density"] for r in rows], [r[key] / 1000 for r in rows], style,
                      label=f"minilottery --sparse {mode}")
        torch_results = results["torch"]
        pm = sorted(torch_results["train"])
        if key == "train_samples_per_s":
            axis.plot([100 * d for d in pm], [torch_results["train"][d] / 1000 for d in pm], "^:",
                      label="PyTorch (masked dense)")
        else:
            axis.plot([100 * d for d in pm], [torch_results["eval_batch_1000"] / 1000] * len(pm), "^:",
                      label="PyTorch (masked dense)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xticks([100, 51.3, 21.1, 7, 3.6, 1.4])
        axis.invert_xaxis()
        axis.set_xlabel("Pm: percent of weights remaining")
        axis.set_ylabel("thousand samples / s")
        axis.set_title(f"Lenet-300-100 {title}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(f"Sparse training (Frankle & Carbin 2019, 'Limitations'); {results['note']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", default="1,0.513,0.211,0.07,0.036,0.014")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch", default="/tmp/torchvenv/bin/python", help="a Python with PyTorch")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="threads for OpenBLAS and PyTorch (0: their defaults)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance-sparse.png"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = {"densities": args.densities, "iters": args.iters, "reps": args.reps,
               "blas_threads": args.blas_threads or "default"}
    results["minilottery"] = minilottery(args.densities, args.iters, args.reps, args.blas_threads)
    print("minilottery: done", flush=True)
    results["torch"] = torch(args.torch, args.densities, args.iters, args.reps, args.blas_threads)
    results["load_average"] = [load, os.getloadavg()[0]]
    results["note"] = (f"{os.cpu_count()} cores, load average {load:.1f} at start; BLAS threads "
                       f"{results['blas_threads']}; medians of {args.reps} x {args.iters} steps")
    for row_auto, row_off in zip(results["minilottery"]["auto"], results["minilottery"]["off"]):
        pm = row_auto["density"]
        torch_train = min(results["torch"]["train"].items(), key=lambda item: abs(item[0] - pm))[1]
        print(f"Pm {100 * pm:6.2f}%  train: auto {row_auto['train_samples_per_s']:9,.0f}  "
              f"off {row_off['train_samples_per_s']:9,.0f}  torch {torch_train:9,.0f}  | eval: auto "
              f"{row_auto['eval_samples_per_s']:9,.0f}  off {row_off['eval_samples_per_s']:9,.0f}  "
              f"torch {results['torch']['eval_batch_1000']:9,.0f}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(results, path)
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"wrote {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
