"""Tokens/s and MFU in the loggers, through Lightning's ``ThroughputMonitor``."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from gptlab.run.lightning_private import last_training_time, set_peak_flops, shift_training_start

log = logging.getLogger(__name__)


def batch_size(batch: Any) -> int:
    """Samples in a gptlab batch: ``(inputs, targets)`` windows or a classification mapping."""
    return (batch["input_ids"] if isinstance(batch, Mapping) else batch[0]).size(0)


def batch_tokens(batch: Any) -> int:
    """Real tokens in a gptlab batch: every window's, or a padded batch's unmasked ones (the monitor
    synchronizes the device before asking, so counting them costs no extra wait)."""
    if isinstance(batch, Mapping):
        return int(batch["attention_mask"].sum())
    return batch[0].numel()


def cpu_peak_flops(cpuinfo: str | None = None, threads: int | None = None) -> tuple[float, str] | None:
    """An fp32 peak for the CPU threads torch uses: threads x clock x FLOPs per cycle (two FMA units of
    the widest vector the flags list: 64 with AVX-512, 32 with AVX2+FMA, 8 otherwise), read from
    /proc/cpuinfo; None where that file is missing (macOS, Windows). Returns the peak and how it was
    reached."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return None
        cpuinfo = path.read_text()
    flags = (
        set(re.search(r"^flags\s*:(.*)$", cpuinfo, re.M).group(1).split()) if "flags" in cpuinfo else set()
    )
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)
    if mhz is None:
        return None
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    threads = threads or torch.get_num_threads()
    ghz = float(mhz.group(1)) / 1000
    return threads * ghz * 1e9 * per_cycle, f"{threads} threads x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


class GPTThroughputMonitor(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` for gptlab's batches.

    FLOPs come from the module's ``flops_per_batch`` (the model shape: 6N + 12·L·H·Q·T per token, for
    the batch's real tokens).
    Lightning knows the peak FLOPs of common GPUs; ``peak_flops`` sets it for anything else (a new chip),
    and on a CPU without it the peak is estimated from /proc/cpuinfo, so MFU is logged there too. The
    console says which peak MFU is relative to.

    Training time stops from the last training batch before a validation round to the first one after
    it: Lightning's monitor stops it only until the last validation batch, so sampling text and writing
    checkpoints after validation counted as training (tokens/s dipped for a window after every round).
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 50, separator: str = "/") -> None:
        super().__init__(batch_size, batch_tokens, window_size=window_size, separator=separator)
        self.peak_flops = peak_flops
        self._paused_at: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        source = None
        if self.peak_flops:
            self.available_flops, source = int(self.peak_flops), "callbacks.throughput.peak_flops"
        elif self.available_flops is None and trainer.strategy.root_device.type == "cpu":
            estimate = cpu_peak_flops()
            if estimate is not None:
                self.available_flops = int(estimate[0])
                source = f"estimated: {estimate[1]}; set callbacks.throughput.peak_flops to override"
        elif self.available_flops is not None:
            source = f"Lightning's figure for {trainer.strategy.root_device}"
        if self.available_flops:
            set_peak_flops(self, self.available_flops)
        if stage == "fit" and trainer.is_global_zero:
            if self.available_flops:
                log.info(f"MFU relative to a peak of {self.available_flops / 1e12:.3g} TFLOP/s ({source})")
            else:
                log.info("MFU not logged: peak FLOP/s unknown; set callbacks.throughput.peak_flops")

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_validation_start(trainer, *args)
        last = last_training_time(self) if trainer.training or trainer.validating else None
        if not trainer.sanity_checking and trainer.state.fn == "fit" and last is not None:
            self._paused_at = last

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        pass  # the pause is accounted for at the next training batch

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._paused_at is not None:
            shift_training_start(self, time.perf_counter() - self._paused_at)
            self._paused_at = None
