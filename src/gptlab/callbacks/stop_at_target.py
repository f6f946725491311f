"""End a run when a monitored metric reaches a target, and record when it got there (a speedrun's clock)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

MODES = ("min", "max")


class StopAtTarget(Callback):
    """After each validation round, stop the run once ``monitor`` is at or past ``threshold`` (at or below
    it for ``mode="min"``, at or above for ``"max"``), and keep where it got there in :attr:`reached`:
    the optimizer step, the value, and the seconds since the fit started. They are logged as
    ``target/step`` and ``target/seconds`` scalars, and the run's summary (console, ``run_summary.json``)
    reports them.

    Lightning's ``EarlyStopping(stopping_threshold=...)`` stops the same way but records neither the
    step nor the time, which is the number a speedrun is judged by.
    """

    def __init__(self, monitor: str = "val/loss", threshold: float | None = None, mode: str = "min") -> None:
        if mode not in MODES:
            raise ValueError(f"callbacks.stop_at_target.mode={mode!r} is not one of {MODES}")
        self.monitor, self.mode = monitor, mode
        self.threshold = None if threshold is None else float(threshold)  # None: the callback is off
        self.reached: dict[str, Any] | None = None
        self._start: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.threshold is None or trainer.sanity_checking or self.reached is not None:
            return
        if self.monitor not in trainer.callback_metrics:
            raise ValueError(
                f"callbacks.stop_at_target.monitor={self.monitor!r} was not logged by validation; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        if not (value <= self.threshold if self.mode == "min" else value >= self.threshold):
            return
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        self.reached = {
            "value": value,
            "step": trainer.global_step,
            "seconds": seconds,
        }
        scalars = {"target/step": trainer.global_step, "target/seconds": seconds}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        trainer.should_stop = True
        rank_zero_info(self.describe())

    def describe(self) -> str | None:
        """One line: where the target was reached, or that it was not (None when off)."""
        if self.threshold is None:
            return None
        if self.reached is None:
            return (
                f"target {self.monitor} {'<=' if self.mode == 'min' else '>='} {self.threshold} not reached"
            )
        r = self.reached
        return (
            f"target reached: {self.monitor} {r['value']:.4f} {'<=' if self.mode == 'min' else '>='} "
            f"{self.threshold} at step {r['step']}, {r['seconds']:.1f} s after the fit started"
        )

    def record(self) -> dict[str, Any]:
        """The target and where it was reached (``reached``: step, value, seconds; None if not)."""
        return {
            "monitor": self.monitor,
            "threshold": self.threshold,
            "mode": self.mode,
            "reached": self.reached,
        }

    def summary_entry(self) -> tuple[str, str | None, dict[str, Any] | None]:
        """The run summary's ``target`` and its console line (None for both when off)."""
        return "target", self.describe(), None if self.threshold is None else self.record()

    def state_dict(self) -> dict[str, Any]:
        return {"reached": self.reached}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reached = state_dict.get("reached")
