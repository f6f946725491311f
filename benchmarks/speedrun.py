"""Whole-process wall time to val loss 1.90: ``gptlab-train experiment=shakespeare_speedrun`` against the
faithful nanoGPT reference's whole recipe (benchmarks/nanogpt_reference.py, 2000 iterations), seed by
seed, the two interleaved (which one goes first alternates), so drift on the machine hits both alike.

Each gptlab run is its own process (``python -m gptlab.train``), timed from start to exit: it stops at the
target (callbacks.stop_at_target), so its whole time is its time to the target; ``run_summary.json`` in its
run directory gives the step and the in-fit seconds where it got there. The reference's process is timed the
same way (its own ``wall_s`` is kept too).

    python benchmarks/speedrun.py --seeds 3                 # the speedrun against the reference
    python benchmarks/speedrun.py --ablation --seeds 3      # the recipe with each idea removed in turn
    python benchmarks/speedrun.py --ablation --only full no_muon --seeds 2 --no-reference

Results: a table, and JSON in benchmarks/results/ (speedrun.json, speedrun_ablation.json). Take the
exclusive CPU lock around it on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gptlab.run import sweep_stats  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
REFERENCE = ROOT / "benchmarks" / "nanogpt_reference.py"
EXPERIMENT = "experiment=shakespeare_speedrun"
TARGET = 1.90
# The recipe with each of its ideas removed in turn (configs/experiment/shakespeare_speedrun.yaml), and the
# ideas an ablation dropped from it added back: name -> the overrides. "full" is the recipe itself, the
# baseline the others are compared to.
ABLATIONS = {
    "full": [],
    "no_rope": ["model.backbone.pos_embedding=learned"],
    "no_swiglu": ["model.backbone.mlp=gelu"],
    "with_bias": ["model.backbone.bias=true"],
    "with_rmsnorm": ["model.backbone.norm=rmsnorm"],
    "with_gqa": ["model.backbone.n_kv_head=2"],
}


def cpu_flags() -> str:
    """The CPU's bf16 support, printed beside every figure (it decides what bf16 autocast costs)."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.split()
    except OSError:
        return "unknown (no lscpu)"
    found = [f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f in flags]
    return " ".join(found) or "none"


def gptlab_command(work: Path, name: str, seed: int, overrides: list[str], extra: list[str]) -> list[str]:
    """One speedrun run, in its own run directory (``run_name``) under ``work``."""
    return [
        sys.executable, "-m", "gptlab.train", EXPERIMENT, f"seed={seed}", f"run_name={name}-seed{seed}",
        f"paths.log_dir={work / 'logs'}", "callbacks.rich_progress_bar=null", *overrides, *extra,
    ]  # fmt: skip


def reference_command(out: Path, seed: int, extra: list[str]) -> list[str]:
    return [sys.executable, str(REFERENCE), "--out-json", str(out), "--seed", str(seed), *extra]


def timed(command: list[str]) -> float:
    """Run a command to its end; its whole wall time in seconds (an error if it failed)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def read_run(run_dir: Path, fixed_step: int) -> dict[str, float]:
    """What a gptlab run recorded: from ``run_summary.json`` its last val/loss and where it reached the
    target (``target/step``, ``target/seconds``: absent when it did not), and from its TensorBoard events
    the val/loss at ``fixed_step`` (absent when it stopped before)."""
    summary = json.loads((run_dir / "run_summary.json").read_text())
    metrics = {"val/loss": summary["metrics"]["val/loss"]}
    reached = (summary.get("target") or {}).get("reached")
    if reached:
        metrics |= {"target/step": reached["step"], "target/seconds": reached["seconds"]}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    at_step = [e.value for e in events.Scalars("val/loss") if e.step == fixed_step]
    if at_step:
        metrics[f"val/loss@{fixed_step}"] = at_step[-1]
    return metrics


def plan(names: list[str], seeds: list[int], reference: bool) -> list[tuple[str, int]]:
    """The runs in order: seed by seed, each recipe once; the reference first on even seeds and last on
    odd ones, so neither side always runs on a machine the other has just warmed."""
    runs = []
    for i, seed in enumerate(seeds):
        order = [*names]
        if reference:
            order = ["nanogpt", *order] if i % 2 == 0 else [*order, "nanogpt"]
        runs += [(name, seed) for name in order]
    return runs


def summarize(jobs: list[dict], baseline: str | None) -> dict:
    """The statistics of gptlab/run/sweep_stats.py over the seeds of each recipe (job overrides are
    ``recipe=<name>`` and ``seed=<seed>``), with the reference's mean whole time as the × column."""
    grouped = sweep_stats.group(jobs, ["seed"], baseline=f"recipe={baseline}" if baseline else None)
    reference = next((c for c in grouped["configurations"] if c["overrides"] == ["recipe=nanogpt"]), None)
    ref_time = reference["metrics"]["job/seconds"]["mean"] if reference else None
    for config in grouped["configurations"]:
        mine = config["metrics"].get("job/seconds")
        config["vs_nanogpt"] = mine["mean"] / ref_time if mine and ref_time else None
    return grouped


def table(grouped: dict) -> str:
    """A Markdown table: recipe, runs, whole time (mean ± std, 95% interval), × nanoGPT, target step, val
    loss, and the time's difference to the baseline."""
    lines = [
        "| recipe | runs | whole time to 1.90 (s) | 95% CI | × nanoGPT | step at target | final val loss "
        "| Δ time vs baseline [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in grouped["configurations"]:
        m = config["metrics"]
        time_s, step, loss = m.get("job/seconds"), m.get("target/step"), m.get("val/loss")
        diff = (time_s or {}).get("diff")
        name = config["overrides"][0].split("=", 1)[1] + (" (baseline)" if config["baseline"] else "")
        ratio = "-" if config["vs_nanogpt"] is None else f"{config['vs_nanogpt']:.2f}×"
        lines.append(
            f"| {name} | {len(config['jobs'])} | {sweep_stats.cell(time_s) if time_s else '-'} | "
            f"{sweep_stats.interval(time_s['ci95']) if time_s else '-'} | "
            f"{ratio} | "
            f"{sweep_stats.cell(step) if step else '-'} | {sweep_stats.cell(loss) if loss else '-'} | "
            f"{'-' if not diff else sweep_stats.signed(diff)} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N for each recipe")
    parser.add_argument("--ablation", action="store_true", help="the recipe with each idea removed in turn")
    parser.add_argument("--only", nargs="+", choices=list(ABLATIONS), help="these ablations (--ablation)")
    parser.add_argument("--no-reference", action="store_true", help="skip the nanoGPT reference runs")
    parser.add_argument("--fixed-step", type=int, default=200, help="val loss at this step, for every run")
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON file (default in benchmarks/results)"
    )
    parser.add_argument("--gptlab-args", nargs="*", default=[], help="more overrides for every gptlab run")
    parser.add_argument("--reference-args", nargs="*", default=[], help="more arguments for the reference")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give at least 1")
    if args.only and not args.ablation:
        parser.error("--only names ablations: add --ablation")
    args.recipes = (args.only or list(ABLATIONS)) if args.ablation else ["full"]
    args.out = args.out or RESULTS / ("speedrun_ablation.json" if args.ablation else "speedrun.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    flags = cpu_flags()
    print(f"CPU flags: {flags}")
    seeds = list(range(1, args.seeds + 1))
    jobs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="speedrun-") as tmp:
        work = Path(tmp)
        for number, (name, seed) in enumerate(plan(args.recipes, seeds, not args.no_reference)):
            job = {"job": number, "overrides": [f"recipe={name}", f"seed={seed}"], "status": "completed"}
            if name == "nanogpt":
                out = work / f"nanogpt-seed{seed}.json"
                command = reference_command(out, seed, args.reference_args)
            else:
                command = gptlab_command(work, name, seed, ABLATIONS[name], args.gptlab_args)
            print(" ".join(command), flush=True)
            if args.dry_run:
                continue
            seconds = timed(command)
            if name == "nanogpt":
                ref = json.loads(out.read_text())
                job["metrics"] = {"job/seconds": seconds, "val/loss": ref["val_loss"]}
                job["reference"] = ref  # its own wall_s, first_step_s, median_step_ms, eval_s, val_losses
            else:
                run_dir = work / "logs" / "train" / "runs" / f"{name}-seed{seed}"
                job["metrics"] = {"job/seconds": seconds, **read_run(run_dir, args.fixed_step)}
            print(f"  {seconds:.1f} s  {job['metrics']}", flush=True)
            jobs.append(job)
    if args.dry_run:
        return {}
    grouped = summarize(jobs, "full")
    result = {"cpu_flags": flags, "target": TARGET, "seeds": seeds, "jobs": jobs, **grouped}
    result["table"] = table(grouped)
    print(result["table"])
    print(f"CPU flags: {flags}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
