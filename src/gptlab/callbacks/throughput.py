"""Tokens/s, samples/s and MFU in the loggers, through Lightning's ``ThroughputMonitor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor

from gptlab.run.lightning_private import set_peak_flops


def batch_size(batch: Any) -> int:
    """Samples in a gptlab batch: ``(inputs, targets)`` windows or a classification mapping."""
    return (batch["input_ids"] if isinstance(batch, Mapping) else batch[0]).size(0)


def batch_tokens(batch: Any) -> int:
    """Real tokens in a gptlab batch: every window's, or a padded batch's unmasked ones (the monitor
    synchronizes the device before asking, so counting them costs no extra wait)."""
    if isinstance(batch, Mapping):
        return int(batch["attention_mask"].sum())
    return batch[0].numel()


class GPTThroughputMonitor(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` for gptlab's batches.

    FLOPs come from the module's ``flops_per_batch`` (the model shape: 6N + 12·L·H·Q·T per token, for
    the batch's real tokens).
    Lightning knows the peak FLOPs of common GPUs; ``peak_flops`` sets it for anything else (a CPU, a new
    chip) so MFU is logged there too.
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 50, separator: str = "/") -> None:
        super().__init__(batch_size, batch_tokens, window_size=window_size, separator=separator)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops:
            set_peak_flops(self, int(self.peak_flops))
