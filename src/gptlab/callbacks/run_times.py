"""Where a run's wall time goes: to the first step, to validation, and per training step."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from gptlab.run.board import in_multirun


def process_start() -> float:
    """When this process started (epoch seconds), from Linux's /proc; elsewhere, when gptlab was imported."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(stat[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return IMPORTED


IMPORTED = time.time()


class RunTimes(Callback):
    """Where a run's wall time goes: process start to the first optimizer step done, validation (sanity
    check included), and the median training step (batch end to batch end, no validation between),
    printed and written to ``run_summary.json`` (``times``) by :func:`gptlab.run.record.summarize_run`."""

    def __init__(self) -> None:
        # a sweep's jobs share one process: each job's times count from its own start
        self.in_sweep = in_multirun()
        self.started = time.time() if self.in_sweep else process_start()
        self.first_step_s: float | None = None
        self.validation_s = 0.0
        self.step_s: list[float] = []
        self._last_end: float | None = None
        self._val_start = 0.0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.started
        elif self._last_end is not None:
            self.step_s.append(now - self._last_end)
        self._last_end = now

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.validation_s += time.perf_counter() - self._val_start
        self._last_end = None  # the next step's interval would hold the validation

    def summary(self) -> dict[str, float | None]:
        median = 1000 * statistics.median(self.step_s) if self.step_s else None
        return {"wall_s": time.time() - self.started, "first_step_s": self.first_step_s,
                "validation_s": self.validation_s, "median_step_ms": median}  # fmt: skip

    def summary_entry(self) -> tuple[str, str | None, dict[str, float | None] | None]:
        """The run summary's ``times`` and its console line (nothing before the first step)."""
        if self.first_step_s is None:
            return "times", None, None
        times = self.summary()
        since = "job" if self.in_sweep else "process"
        median = f", median step {times['median_step_ms']:.1f} ms" if times["median_step_ms"] else ""
        line = (
            f"time: first step done {times['first_step_s']:.1f} s after the {since} started{median}, "
            f"validation {times['validation_s']:.1f} s, {times['wall_s']:.1f} s in all"
        )
        return "times", line, times
