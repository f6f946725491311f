"""Lightning's Rich progress bar over the whole run (``step 250/2000``), updated every few batches."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from gptlab.callbacks.last_step import at_last_step


class SteppedRichProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training bar counts optimizer steps to ``max_steps`` (so its time column
    is the run's ETA), shows tokens/s and the latest train and validation loss, and moves every
    ``update_every_n_batches`` batches and on the last batch of an epoch or of the run.

    Lightning's bar counts the batches of the current data epoch (``Epoch 0/-2``, an ETA for that chunk
    only) and reads the progress-bar metrics on every batch, though it redraws only ``refresh_rate`` times
    a second, which is a visible share of a small CPU step (benchmarks/MEASUREMENTS.md, section 4).
    """

    def __init__(self, update_every_n_batches: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if update_every_n_batches < 1:
            raise ValueError(f"update_every_n_batches must be >= 1, got {update_every_n_batches}")
        self.update_every_n_batches = update_every_n_batches
        # tokens/s over the steps since the last update; Rich's own speed estimate jumps at the end
        self._since: tuple[float, int] | None = None
        self._tokens_per_s: float | None = None

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:  # Lightning's "Epoch N/M"
        return "step" if self._by_steps() else super()._get_train_description(current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._by_steps() and self.train_progress_bar_id is not None:
            return  # one bar for the run, not one per data epoch
        super().on_train_epoch_start(trainer, pl_module)
        if self._by_steps() and self.progress is not None and self.train_progress_bar_id is not None:
            # a resumed run starts where it stopped (and its speed is measured from here)
            self.progress.reset(
                self.train_progress_bar_id, total=trainer.max_steps, completed=trainer.global_step
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = batch_idx + 1
        last = done >= trainer.num_training_batches or at_last_step(trainer)
        if not (last or done % self.update_every_n_batches == 0):
            return
        self._measure(trainer)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._by_steps() and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)
            self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: always "" in gptlab's run directories
        if self._tokens_per_s:
            metrics["tokens/s"] = f"{self._tokens_per_s:,.0f}"
        return metrics

    def _measure(self, trainer: L.Trainer) -> None:
        now, step = time.perf_counter(), trainer.global_step
        tokens_per_step = _tokens_per_step(trainer)
        if self._since is not None and step > self._since[1] and tokens_per_step:
            self._tokens_per_s = (step - self._since[1]) * tokens_per_step / (now - self._since[0])
        self._since = (now, step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._since = None  # validation time is not training time


def _tokens_per_step(trainer: L.Trainer) -> int | None:
    datamodule = getattr(trainer, "datamodule", None)
    plan, per_sample = getattr(datamodule, "batch_plan", None), getattr(datamodule, "tokens_per_sample", None)
    return plan.global_batch * per_sample if plan is not None and per_sample else None
