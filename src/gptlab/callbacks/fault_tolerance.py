"""Surviving faults: a resumable checkpoint on SIGTERM / Ctrl-C, and a stop at the first non-finite loss."""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class NonFiniteLossError(RuntimeError):
    """The training loss (or a weight about to be saved) is NaN or infinite."""


class InterruptCheckpoint(L.Callback):
    """A resumable checkpoint on interruptions: SIGTERM (SLURM pre-emption, ``kill``) and Ctrl-C write
    ``<dirpath>/<filename>.ckpt``, which ``ckpt_path=last`` resumes from when it is the newest. Lightning
    stops at the end of the current batch on SIGTERM, so that checkpoint resumes exactly. Errors save
    nothing (a failed step's state is not worth resuming), and neither does Ctrl-C under several
    processes: the ranks would wait for each other at different points. A later fit that ends normally
    deletes the file.

    Lightning's ``OnExceptionCheckpoint`` does the same, but its presence makes every ``fit`` without a
    ``ckpt_path`` resume from the newest last checkpoint on disk (with two warnings that a model is
    missing): a new run reusing a ``run_name`` would silently continue the old one. Here only
    ``ckpt_path=last`` resumes.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        sigterm = isinstance(exception, SIGTERMException)
        ctrl_c = isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1
        if not (sigterm or ctrl_c) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.ckpt_path)
        rank_zero_info(
            f"{'SIGTERM' if sigterm else 'Ctrl-C'} at step {trainer.global_step}: saved {self.ckpt_path}; "
            "resume with ckpt_path=last (same run directory) or ckpt_path=<that file>"
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # reached only when the stage ended normally: the interruption's checkpoint is spent
        trainer.strategy.remove_checkpoint(self.ckpt_path)


class FiniteLossGuard(L.Callback):
    """Stop at the first NaN/Inf training loss, before its backward pass can reach the weights, and
    refuse to write a checkpoint whose weights are not finite, so the last good checkpoint survives.

    Checks every ``every_n_steps`` steps (each check reads the loss on the host: free on a CPU, one
    synchronisation per check on a GPU).
    """

    HINTS = (
        "lower model.optimizer.lr or lengthen model.scheduler.warmup_steps; keep trainer.gradient_clip_val "
        "set; prefer trainer.precision=bf16-mixed to 16-mixed; look for empty or corrupt documents in the "
        "data; then resume from the last good checkpoint with ckpt_path=<file> or start over"
    )

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps
        self.last_finite: tuple[int, float] | None = None

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        value = loss.detach().float().item()
        if math.isfinite(value):
            self.last_finite = (step, value)
            return
        last = (
            "none yet"
            if self.last_finite is None
            else f"{self.last_finite[1]:.4f} at step {self.last_finite[0]}"
        )
        raise NonFiniteLossError(
            f"the training loss is {value} at step {step} (last finite loss: {last}); the run stops and no "
            f"checkpoint is written from this state. To fix: {self.HINTS}"
        )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for name, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise NonFiniteLossError(
                    f"weight '{name}' is not finite at step {trainer.global_step}; refusing to save a "
                    f"checkpoint over the last good one. To fix: {self.HINTS}"
                )
