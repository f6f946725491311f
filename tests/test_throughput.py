"""Throughput: the CPU peak behind MFU, and training time that excludes what follows validation."""

from __future__ import annotations

import time

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer.states import RunningStage

from gptlab.callbacks.throughput import GPTThroughputMonitor, cpu_peak_flops


def test_cpu_peak_is_threads_times_clock_times_vector_width():
    cpuinfo = "processor : 0\nflags : fpu sse2 avx2 fma\ncpu MHz : 2500.000\n"
    assert cpu_peak_flops(cpuinfo, threads=4) == (4 * 2.5e9 * 32, "4 threads x 2.50 GHz x 32 FLOP/cycle")
    assert cpu_peak_flops(cpuinfo.replace("avx2", "avx2 avx512f"), threads=1)[0] == 2.5e9 * 64
    assert cpu_peak_flops(cpuinfo.replace("avx2 fma", ""), threads=1)[0] == 2.5e9 * 8
    assert cpu_peak_flops("processor : 0\n") is None  # no clock listed: MFU stays off, the console says so


class SlowAfterValidation(Callback):
    """Stands in for what follows a validation round: sampling text, writing checkpoints."""

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            time.sleep(0.5)


def test_time_after_validation_is_not_counted_as_training(tmp_path):
    monitor = GPTThroughputMonitor(peak_flops=1e12, window_size=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path, callbacks=[monitor, SlowAfterValidation()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_steps=12,
        val_check_interval=4, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(BoringModel())
    wall = time.perf_counter() - start
    training_time = monitor._throughputs[RunningStage.TRAINING]._time[-1]  # Lightning's private record
    assert wall > 1.5  # three validation rounds, each followed by 0.5 s
    assert training_time < 0.5 < wall - training_time  # Lightning's own monitor counts the sleeps (~1 s)
    assert monitor.available_flops == pytest.approx(1e12)
