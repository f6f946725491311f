"""Validate (and so checkpoint) at the run's last step, wherever it falls between validation rounds."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


def at_last_step(trainer: L.Trainer) -> bool:
    """Whether the run has done its ``trainer.max_steps`` (never, when it has no step limit)."""
    return 0 < trainer.max_steps <= trainer.global_step


class ValidateLastStep(Callback):
    """Ask Lightning to stop at ``max_steps`` one batch early, which makes it validate first.

    Lightning validates only every ``val_check_interval`` steps, so a run of 30 steps with the default 250
    never validated (no metric, no checkpoint) and one of 30 with 20 saved step 20 as its last. A stop
    requested through ``trainer.should_stop`` runs a validation round (and the checkpoint callbacks that
    follow it) before the loop ends; when the last step is a validation step anyway, it runs once.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if at_last_step(trainer):
            trainer.should_stop = True
