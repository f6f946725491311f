"""Lightning's Rich progress bar, updated every few training batches instead of every one."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class SteppedRichProgressBar(RichProgressBar):
    """``RichProgressBar`` that moves the training bar and reads the progress-bar metrics every
    ``update_every_n_batches`` batches, and on the last batch of an epoch or of the run.

    Lightning's bar does both on every batch, though it redraws only ``refresh_rate`` times a second,
    which is a visible share of a small CPU step (benchmarks/MEASUREMENTS.md, section 4).
    """

    def __init__(self, update_every_n_batches: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if update_every_n_batches < 1:
            raise ValueError(f"update_every_n_batches must be >= 1, got {update_every_n_batches}")
        self.update_every_n_batches = update_every_n_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = batch_idx + 1
        last = done >= trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step
        if last or done % self.update_every_n_batches == 0:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
