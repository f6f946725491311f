"""The gradient norm before clipping, and memory, beside the loss in TensorBoard."""

from __future__ import annotations

import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class TrainingScalars(Callback):
    """Log ``train/grad_norm`` (the global L2 norm of the gradients before clipping: how hard clipping
    works) and ``train/memory_gb`` (peak accelerator memory allocated, or the process's peak resident
    memory on a CPU) on the steps the Trainer writes out, so no step pays for a host sync."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # called with the accumulated (and unscaled) gradients, before Lightning clips them
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) != 0:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            pl_module.log("train/grad_norm", norm)
        pl_module.log("train/memory_gb", peak_memory_gb(pl_module.device))


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        import resource  # not on Windows
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return peak / (1e9 if sys.platform == "darwin" else 1e6)
