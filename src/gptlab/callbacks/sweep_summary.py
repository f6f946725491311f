"""A Hydra callback that tabulates a multirun: every job's overrides, metric and status (completed, failed,
or pruned by an Optuna sweep), and the best."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from gptlab.run.hydra import is_pruned

RESULT_FILE = "job_result.json"
SUMMARY_FILE = "sweep_summary.json"


class SweepSummary(Callback):
    """Each job writes ``job_result.json`` in its directory (so jobs that ran elsewhere, e.g. on SLURM,
    count too); when the multirun ends, they are gathered into ``sweep_summary.json`` and a table."""

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
            "error": repr(value) if status == "failed" and not completed else None,
            "dir": config.hydra.runtime.output_dir,
        }
        Path(config.hydra.runtime.output_dir, RESULT_FILE).write_text(json.dumps(result, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(
            (json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{RESULT_FILE}")), key=lambda j: j["job"]
        )
        mode = OmegaConf.select(config, "optimized_metric_mode", default="min")
        done = [j for j in jobs if j["status"] == "completed"]
        best = (max if mode == "max" else min)(done, key=lambda j: j["metric"]) if done else None
        summary = {
            "metric": config.get("optimized_metric"),
            "mode": mode,
            "best": best,
            "jobs": jobs,
        }
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        self._print(summary, sweep_dir)

    @staticmethod
    def _print(summary: dict, sweep_dir: Path) -> None:
        table = Table(title=f"sweep {sweep_dir}  ({summary['metric']}, {summary['mode']})")
        for column in ("job", "overrides", "metric", "status"):
            table.add_column(column)
        best_job = summary["best"]["job"] if summary["best"] else None
        for job in summary["jobs"]:
            metric = "-" if job["metric"] is None else f"{job['metric']:.4f}"
            style = {"failed": "red", "pruned": "yellow"}.get(job["status"], "")
            style = "bold green" if job["job"] == best_job else style
            table.add_row(str(job["job"]), " ".join(job["overrides"]), metric, job["status"], style=style)
        console = Console()
        console.print(table)
        if best_job is not None:
            console.print(f"best: job {best_job}: {' '.join(summary['best']['overrides'])}")
