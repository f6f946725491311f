"""Every logged scalar numbered by the optimizer steps done, like the checkpoints and text samples."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class StepsDone(Callback):
    """Number every logged scalar by the optimizer steps done (``trainer.global_step``), like checkpoints
    and text samples.

    While fitting, Lightning logs a step's scalars (and those of the validation that follows it) before it
    counts the step, so they would land one step before that step's checkpoint and sample (249 vs 250), in
    every logger alike; each logger's ``log_metrics`` gets the count instead while the fit runs.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            own = type(logger).log_metrics.__get__(logger)
            logger.log_metrics = functools.partial(_log_steps_done, own, trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            vars(logger).pop("log_metrics", None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)


def _log_steps_done(
    log_metrics: Callable, trainer: L.Trainer, metrics: Mapping[str, Any], step: int | None = None
) -> None:
    log_metrics(metrics, None if step is None else trainer.global_step)
