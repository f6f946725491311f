"""A Hydra callback that tabulates a multirun: every job's overrides, metric and status (completed, failed,
or pruned by an Optuna sweep), and the best; jobs that differ only in a repeat axis (seeds, folds) grouped
into configurations with statistics (gptlab/run/sweep_stats.py), a table and a plot."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from gptlab.run import sweep_stats
from gptlab.run.hydra import is_pruned
from gptlab.run.record import SUMMARY_FILE as RUN_SUMMARY_FILE

RESULT_FILE = "job_result.json"
SUMMARY_FILE = "sweep_summary.json"
PLOT_FILE = "sweep_summary.png"
# What a run writes when it ends (gptlab/run/record.py): {"metrics": {name: value}, "target": {"reached":
# {"step", "seconds", "value"} or null, ...} or null}; a job's metrics for the statistics come from it.


class SweepSummary(Callback):
    """Each job writes ``job_result.json`` in its directory (so jobs that ran elsewhere, e.g. on SLURM,
    count too); when the multirun ends, they are gathered into ``sweep_summary.json`` and a table.

    ``repeat``: the override keys that repeat a configuration (``seed``, ``data.fold``): jobs differing
    only in them are one configuration, reported as mean ± standard deviation and a 95% interval of each
    metric. ``baseline``: the overrides (space-separated) of the configuration the others are compared to.
    """

    def __init__(self, repeat: Sequence[str] = ("seed", "data.fold"), baseline: str | None = None) -> None:
        self.repeat, self.baseline = list(repeat), baseline
        self._started: float | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        value = job_return._return_value  # read without re-raising a failed job's exception
        completed = job_return.status == JobStatus.COMPLETED
        metric = float(value) if completed and isinstance(value, int | float) else None
        failed = not completed or metric is None or not math.isfinite(metric)
        status = "pruned" if is_pruned(value) else "failed" if failed else "completed"
        result = {
            "job": int(config.hydra.job.num),
            "overrides": list(job_return.overrides or []),
            "metric_name": config.get("optimized_metric"),
            "metric": None if failed else metric,
            "status": status,
            # a job that failed inside the task returns a FailedJob carrying its message (run/hydra.py)
            "error": None if status != "failed" else getattr(value, "error", None) or repr(value),
            "dir": config.hydra.runtime.output_dir,
            "started": self._started,
            "ended": time.time(),
            "metrics": {},
        }
        if not failed:
            result["metrics"] = job_metrics(config, metric)
            if self._started is not None:
                result["metrics"]["job/seconds"] = result["ended"] - self._started
        Path(config.hydra.runtime.output_dir, RESULT_FILE).write_text(json.dumps(result, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(
            (json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{RESULT_FILE}")), key=lambda j: j["job"]
        )
        mode = OmegaConf.select(config, "optimized_metric_mode", default="min")
        done = [j for j in jobs if j["status"] == "completed"]
        best = (max if mode == "max" else min)(done, key=lambda j: j["metric"]) if done else None
        grouped = sweep_stats.group(jobs, self.repeat, self.baseline)
        summary = {
            "metric": config.get("optimized_metric"),
            "mode": mode,
            "best": best,
            "jobs": jobs,
            "repeat": self.repeat,
            **grouped,
        }
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        self._print(summary, sweep_dir)
        if any(len(c["jobs"]) > 1 for c in grouped["configurations"]) or self.baseline:
            print_configurations(summary)
            title = f"sweep {sweep_dir.name}"
            if sweep_stats.plot(grouped["configurations"], sweep_dir / PLOT_FILE, title):
                Console().print(f"plot: {sweep_dir / PLOT_FILE}")

    @staticmethod
    def _print(summary: dict, sweep_dir: Path) -> None:
        """The table shows each job's own overrides: those every job shares are said once, above it."""
        jobs = summary["jobs"]
        shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if len(jobs) > 1 else set()
        table = Table(title=f"sweep {sweep_dir}  ({summary['metric']}, {summary['mode']})")
        for column in ("job", "overrides", "metric", "status"):
            table.add_column(column)
        best_job = summary["best"]["job"] if summary["best"] else None

        def own(job: dict) -> str:
            return " ".join(o for o in job["overrides"] if o not in shared)

        for job in jobs:
            metric = "-" if job["metric"] is None else f"{job['metric']:.4f}"
            style = {"failed": "red", "pruned": "yellow"}.get(job["status"], "")
            style = "bold green" if job["job"] == best_job else style
            table.add_row(str(job["job"]), own(job), metric, job["status"], style=style)
        console = Console()
        if shared:
            console.print(f"every job: {' '.join(o for o in jobs[0]['overrides'] if o in shared)}")
        console.print(table)
        if best_job is not None:
            console.print(f"best: job {best_job}: {own(summary['best'])}")


def job_metrics(config: DictConfig, metric: float | None) -> dict[str, float]:
    """A completed job's metrics: its run summary's (with ``target/step`` and ``target/seconds`` where it
    reached its target), its optimized metric, and ``job/seconds``, its whole time."""
    metrics: dict[str, float] = {}
    path = Path(config.hydra.runtime.output_dir, RUN_SUMMARY_FILE)
    if path.is_file():
        record = json.loads(path.read_text())
        metrics.update(record.get("metrics") or {})
        reached = (record.get("target") or {}).get("reached")
        if reached:
            metrics |= {"target/step": reached["step"], "target/seconds": reached["seconds"]}
    if config.get("optimized_metric") and metric is not None:
        metrics[config.optimized_metric] = metric
    return metrics


def print_configurations(summary: dict) -> None:
    """One row per configuration and metric: n, mean ± standard deviation, the 95% interval, and the
    difference to the baseline with its interval."""
    table = Table(title=f"configurations (repeats: {', '.join(summary['repeat'])})")
    for column in ("configuration", "metric", "n", "mean ± std", "95% CI"):
        table.add_column(column)
    if summary["baseline"]:
        table.add_column("Δ baseline [95% CI]")
    for config in summary["configurations"]:
        name = config["name"] + (" (baseline)" if config["baseline"] else "")
        name += f" ({config['failed']} failed)" if config["failed"] else ""
        if not config["metrics"]:
            table.add_row(name, "-", "0", "-", "-", *(["-"] if summary["baseline"] else []))
        for i, (metric, stats) in enumerate(config["metrics"].items()):
            row = [name if i == 0 else "", metric, str(stats["n"]), sweep_stats.cell(stats)]
            row.append(sweep_stats.interval(stats["ci95"]))
            if summary["baseline"]:
                diff = stats.get("diff")
                row.append("-" if diff is None else sweep_stats.signed(diff))
            table.add_row(*row, end_section=i == len(config["metrics"]) - 1)
    console = Console()
    console.print(table)
    if summary["baseline_error"]:
        console.print(f"[yellow]warning: {summary['baseline_error']}")
