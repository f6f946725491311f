"""Write a generated text sample to the loggers every few validation rounds."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from gptlab.callbacks.last_step import at_last_step
from gptlab.models.generation import check_sampling


class TextSampler(L.Callback):
    """After every ``every_n_validations``-th validation, and the validation of a run's last step
    (``trainer.max_steps``), sample from the model and log the text.

    The sample uses its own seeded generator, so successive samples differ only because the model
    learned: that is what makes them comparable in TensorBoard's TEXT tab. Off under FSDP (sample from a
    checkpoint with gptlab-generate instead).
    """

    def __init__(
        self,
        prompt: str = "\n",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        every_n_validations: int = 2,
        seed: int = 0,
        print_sample: bool = False,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
    ) -> None:
        check_sampling(temperature, top_p, repetition_penalty)
        if every_n_validations < 1:
            raise ValueError(
                f"callbacks.text_sampler.every_n_validations must be >= 1, got {every_n_validations}; "
                "callbacks.text_sampler=null turns the samples off"
            )
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.every_n_validations = every_n_validations
        self.seed = seed
        self.print_sample = print_sample
        self.sampling = {"top_p": top_p, "repetition_penalty": repetition_penalty, "stop": list(stop)}
        self._validations = 0

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "tokenizer", None) is None:
            return
        if isinstance(trainer.strategy, FSDPStrategy):  # rank 0 alone cannot run a sharded model
            return
        self._validations += 1
        if self._validations % self.every_n_validations and not at_last_step(trainer):
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        text = pl_module.generate(
            self.prompt, self.max_new_tokens, self.temperature, self.top_k, generator, **self.sampling
        )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # Markdown collapses whitespace; a code block keeps the line breaks of verse.
                block = "    " + (self.prompt + text).replace("\n", "\n    ")
                logger.experiment.add_text("samples/text", block, global_step=trainer.global_step)
        if self.print_sample:
            rank_zero_info(f"sample at step {trainer.global_step}:\n{self.prompt}{text}")
