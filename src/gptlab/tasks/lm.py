"""Causal language modelling: the GPT backbone and its tied LM head, trained on next-token loss, with
loss, perplexity and bits per byte on the validation and test splits and on named evaluation corpora."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from gptlab.models.generation import sample
from gptlab.tasks.base import GPTTask, OptimizerFactory, SchedulerFactory
from gptlab.tasks.metrics import BitsPerByte, Perplexity, WeightedMean
from gptlab.tokenization import Tokenizer


class GPTModule(GPTTask):
    """The language-model task (:class:`~gptlab.tasks.base.GPTTask` for what every task shares).

    ``eval_sets``: the names of the data's evaluation corpora, validated after the main split and logged as
    ``val/<name>/loss`` and ``val/<name>/bpb``.
    """

    def __init__(
        self,
        vocab_size: int,
        backbone: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        tokenizer: Tokenizer | None = None,
        pretrained_hf: str | os.PathLike | None = None,
        compile: bool = False,
        eval_sets: Sequence[str] = (),
    ) -> None:
        super().__init__(vocab_size, backbone, optimizer, scheduler, tokenizer, pretrained_hf, compile)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = WeightedMean()
        self.val_ppl = Perplexity()
        self.test_loss = WeightedMean()
        self.val_bpb = BitsPerByte()
        self.test_bpb = BitsPerByte()
        self.eval_sets = list(eval_sets)
        self._token_bytes: torch.Tensor | None = None

    @property
    def eval_sets(self) -> list[str]:
        """Names of the evaluation corpora validated after the main split, in loader order."""
        return list(self.set_metrics["val"]) if hasattr(self, "set_metrics") else []

    @eval_sets.setter
    def eval_sets(self, names: Sequence[str]) -> None:
        def metrics() -> torch.nn.ModuleDict:
            return torch.nn.ModuleDict({"loss": WeightedMean(), "bpb": BitsPerByte()})

        self.set_metrics = torch.nn.ModuleDict(
            {stage: torch.nn.ModuleDict({name: metrics() for name in names}) for stage in ("val", "test")}
        )

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self._token_losses(batch).mean()

    def _token_losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The cross-entropy of each target token, flattened."""
        inputs, targets = batch
        logits = self(inputs)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")

    def token_bytes(self, targets: torch.Tensor) -> torch.Tensor:
        """The UTF-8 bytes each target token stands for (:meth:`Tokenizer.token_bytes`)."""
        if self._token_bytes is None or self._token_bytes.device != targets.device:
            self._token_bytes = torch.tensor(self.tokenizer.token_bytes(), device=targets.device)
        return self._token_bytes[targets]

    def _evaluate(
        self, stage: str, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int = 0
    ) -> None:
        """Update and log ``stage``'s metrics: the main split's on loader 0, an eval set's after it."""
        losses = self._token_losses(batch)
        loss, weight = losses.mean(), losses.numel()
        has_bytes = self.tokenizer is not None
        if dataloader_idx == 0:
            prefix, metrics = stage, {"loss": getattr(self, f"{stage}_loss")}
            if stage == "val":
                self.val_ppl.update(loss, weight)
                self.log("val/ppl", self.val_ppl, add_dataloader_idx=False)
            if has_bytes:
                metrics["bpb"] = getattr(self, f"{stage}_bpb")
        else:
            name = self.eval_sets[dataloader_idx - 1]
            prefix, metrics = f"{stage}/{name}", dict(self.set_metrics[stage][name].items())
            if not has_bytes:
                del metrics["bpb"]
        metrics["loss"].update(loss, weight)
        if "bpb" in metrics:
            metrics["bpb"].update(losses, self.token_bytes(batch[1].reshape(-1)))
        for key, metric in metrics.items():
            shown = stage == "val" and dataloader_idx == 0  # val/loss and val/bpb on the progress bar
            self.log(f"{prefix}/{key}", metric, prog_bar=shown, add_dataloader_idx=False)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.train_loss.update(loss.detach())
        if self.logs_this_step(batch_idx):
            self.log("train/loss", self.train_loss.compute(), prog_bar=True)
            self.train_loss.reset()
        return loss

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate("val", batch, dataloader_idx)

    def test_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate("test", batch, dataloader_idx)

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
    ) -> str:
        """Return the text the model writes after ``prompt`` (the prompt itself excluded), cut before
        the first of the ``stop`` strings it writes; ``use_cache`` decodes incrementally with a KV
        cache (same text, faster); the other options are :func:`gptlab.models.generation.sample`'s."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer attached; load it from a gptlab checkpoint")
        ids = self.tokenizer.encode(prompt) or [self.tokenizer.eot_id]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)

        def written(out: torch.Tensor) -> str:
            return self.tokenizer.decode(out[0, len(ids) :].tolist())

        def stopped(out: torch.Tensor) -> bool:
            return any(s in written(out) for s in stop)

        was_training = self.training
        self.eval()
        try:
            out = sample(
                self, idx, max_new_tokens, self.config.block_size, temperature, top_k, generator, use_cache,
                top_p, repetition_penalty, stopped if stop else None,
            )  # fmt: skip
        finally:
            self.train(was_training)
        text = written(out)
        return text[: min((text.find(s) for s in stop if s in text), default=len(text))]
