"""The LightningModule: the GPT backbone plus a head, with losses, metrics and optimization."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from gptlab.data.tokenizers import Tokenizer
from gptlab.models.generation import sample
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead
from gptlab.models.optim import weight_decay_groups

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class Perplexity(MeanMetric):
    """exp of the (token-weighted) mean cross-entropy it is updated with."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class GPTModule(L.LightningModule):
    """Causal language modelling with a tied LM head.

    Hyperparameters saved in checkpoints are primitives only (backbone config as a dict, vocab size);
    the tokenizer travels as JSON in ``checkpoint["tokenizer"]``; optimizer and scheduler factories are
    not saved (the resolved run config records them), so checkpoints load with ``weights_only=True``.
    """

    def __init__(
        self,
        vocab_size: int,
        backbone: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, **dict(backbone))
        self.save_hyperparameters({"vocab_size": vocab_size, "backbone": self._backbone_hparams()})
        self.backbone = GPT(self.config)
        self.lm_head = LMHead(self.backbone.wte)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.tokenizer = tokenizer
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.val_ppl = Perplexity(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")

    def _backbone_hparams(self) -> dict[str, Any]:
        hparams = self.config.to_dict()
        del hparams["vocab_size"]
        return hparams

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab)."""
        return self.lm_head(self.backbone(idx))

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = self(inputs)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.train_loss.update(loss.detach())
        # Logging forces a host sync and costs ~0.3 ms a call: report the mean of the last
        # `log_every_n_steps` steps, on exactly the steps the Trainer writes to its loggers.
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0 or self.trainer.fast_dev_run:
            self.log("train/loss", self.train_loss.compute(), prog_bar=True)
            self.train_loss.reset()
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        weight = batch[1].numel()
        self.val_loss.update(loss, weight)
        self.val_ppl.update(loss, weight)
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/ppl", self.val_ppl)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.test_loss.update(loss, batch[1].numel())
        self.log("test/loss", self.test_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("GPTModule was built without an optimizer; set model.optimizer in the config")
        optimizer = self.optimizer_factory(weight_decay_groups(self))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer" in checkpoint:
            self.tokenizer = Tokenizer.from_json(checkpoint["tokenizer"])

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """Return the text the model writes after ``prompt`` (the prompt itself excluded)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer attached; load it from a gptlab checkpoint")
        ids = self.tokenizer.encode(prompt) or [self.tokenizer.eot_id]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        was_training = self.training
        self.eval()
        try:
            out = sample(self, idx, max_new_tokens, self.config.block_size, temperature, top_k, generator)
        finally:
            self.train(was_training)
        return self.tokenizer.decode(out[0, len(ids) :].tolist())

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str = "cpu") -> GPTModule:
        """Rebuild a model and its tokenizer from a checkpoint alone (loaded with ``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint '{path}' does not exist; pass ckpt_path=<path to a .ckpt file> "
                "(runs keep them in logs/train/runs/<time>/checkpoints/)"
            )
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
        return model
