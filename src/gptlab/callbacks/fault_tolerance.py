"""Surviving faults: a resumable checkpoint on SIGTERM / Ctrl-C, a stop at the first non-finite loss, and
the random generator states that make a resumed run draw what an uninterrupted one would."""

from __future__ import annotations

import math
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
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
        # weights_only=False: the whole training state. (Left unset, Lightning logs "`weights_only` was not
        # set, defaulting to False", which reads like an unsafe torch.load; every load here is weights-only.)
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
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
        self._check_weights(trainer, checkpoint["state_dict"].items(), "refusing to save a checkpoint")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before the text sampler (listed after this guard) samples from the weights and fails less clearly
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module.named_parameters(), "the run stops")

    def _check_weights(self, trainer: L.Trainer, weights, consequence: str) -> None:
        for name, tensor in weights:
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise NonFiniteLossError(
                    f"weight '{name}' is not finite at step {trainer.global_step}; {consequence}, and the "
                    f"last good checkpoint is kept. To fix: {self.HINTS}"
                )


class RandomStateCheckpoint(L.Callback):
    """Every rank's random generators (Python, NumPy, torch on the CPU and on each GPU) saved in each
    checkpoint and put back at the first step of a resumed run, so dropout draws the masks an
    uninterrupted run would have drawn (Lightning saves the weights, optimizer and loop, not these)."""

    def __init__(self) -> None:
        self.resumed: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = [random_states()]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, random_states())
        checkpoint["random_states"] = states

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("random_states")
        if states is None or len(states) != trainer.world_size:
            rank_zero_warn(
                "the checkpoint holds no random generator states for "
                f"{trainer.world_size} process(es) (written by an older gptlab, or with another number of "
                "processes): the resumed run continues, but dropout draws other masks than an "
                "uninterrupted run would have"
            )
            return
        self.resumed = states[trainer.global_rank]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # set here, not at load: building the data iterators in between draws from torch's generator
        if self.resumed is not None:
            set_random_states(self.resumed)
            self.resumed = None


def random_states() -> dict[str, Any]:
    """This process's generator states, as tensors and tuples (checkpoints load with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, cached = states["numpy"]
    random.setstate(states["python"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
