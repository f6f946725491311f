"""What every gptlab task shares: the GPT backbone with its tied LM head, the optimizer and its schedule,
gradient clipping, FLOP counting, and the checkpoint's contents (class name, tokenizer)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch

from gptlab.checkpoints.hf import load_hf_gpt2
from gptlab.checkpoints.read import CLASS_KEY
from gptlab.models.generation import KVCache
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead
from gptlab.models.optim import MuonAdamW, apply_lr_scales, weight_decay_groups
from gptlab.tokenization import Tokenizer

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class GPTTask(L.LightningModule):
    """The backbone and tied LM head of a task; a task (:mod:`gptlab.tasks.lm`, :mod:`gptlab.tasks.
    classification`) adds its heads, losses and metrics, and its hyperparameters through ``hparams``.

    Hyperparameters saved in checkpoints are primitives only (the backbone config as a dict, the vocab
    size, the task's ``hparams``); the tokenizer travels as JSON in ``checkpoint["tokenizer"]`` and the class
    name beside it (for :func:`gptlab.tasks.registry.load_module`); optimizer and scheduler factories are not
    saved (the resolved run config records them), so checkpoints load with ``weights_only=True``.
    ``pretrained_hf``: a local Hugging Face GPT-2 directory whose shapes and weights the backbone takes.
    ``data_hparams`` names the hyperparameters that say how the data was read: a checkpoint whose values
    differ does not fit this run's data (:func:`gptlab.checkpoints.fit.check_fits`).
    """

    data_hparams: tuple[str, ...] = ()

    def __init__(
        self,
        vocab_size: int,
        backbone: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        tokenizer: Tokenizer | None = None,
        pretrained_hf: str | os.PathLike | None = None,
        compile: bool = False,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(compile, bool):
            raise ValueError(
                f"compile={compile!r}: True or False (model.compile=auto is resolved by gptlab-train; "
                "call gptlab.run.speed.resolve_auto_speed(cfg) before instantiating cfg.model yourself)"
            )
        hf_weights = None
        if pretrained_hf is not None:
            # The Hugging Face directory decides the shapes; the hparams then hold the full config, so
            # the checkpoint never needs the directory again.
            backbone, hf_weights = load_hf_gpt2(pretrained_hf, vocab_size, backbone)
            del backbone["vocab_size"]
        self.config = GPTConfig(vocab_size=vocab_size, **dict(backbone))
        backbone_hparams = self.config.to_dict()
        del backbone_hparams["vocab_size"]
        # logger=False: the entry point logs the whole resolved run config once instead.
        self.save_hyperparameters(
            {"vocab_size": vocab_size, "backbone": backbone_hparams, **(hparams or {})}, logger=False
        )
        self.backbone = GPT(self.config)
        self.lm_head = LMHead(
            self.backbone.wte, vocab_size, self.config.tie_embeddings, self.config.logit_softcap
        )
        if hf_weights is not None:
            self.backbone.load_state_dict(hf_weights)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.tokenizer = tokenizer
        # Not a saved hyperparameter: a checkpoint loads into an uncompiled model, and nn.Module.compile
        # compiles in place, so state_dict keys never get an `_orig_mod.` prefix.
        self.compile_backbone = compile
        # The shape never changes: FLOPs per token (6 per weight) and per token and position of context
        # (attention) are counted once, not on every step the throughput monitor asks.
        self._flops_per_token = self.backbone.flops_per_token(seq_len=0)
        self._flops_per_position = self.backbone.flops_per_token(seq_len=1) - self._flops_per_token
        self._last_batch: Any = None

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab), from the LM head every task keeps; ``cache``:
        see :meth:`GPT.forward`."""
        return self.lm_head(self.backbone(idx, cache))

    def configure_model(self) -> None:
        if self.compile_backbone:
            self.backbone.compile()

    # The batch is kept, and counted only if the throughput monitor asks (flops_per_batch). These hooks, not
    # on_after_batch_transfer, which Lightning warns about in every run that has a datamodule.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._last_batch = batch

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._last_batch = batch

    def sequence_lengths(self, batch: Any) -> torch.Tensor:
        """The real tokens of each sequence of a batch (a task whose batches are padded says otherwise)."""
        inputs = batch[0]
        return torch.full((inputs.size(0),), inputs.size(1))

    @property
    def flops_per_batch(self) -> int | None:
        """Training FLOPs of the last batch's real tokens, padding excluded, for the throughput monitor's
        MFU: each sequence of length T costs T times :meth:`GPT.flops_per_token` at context T."""
        if self._last_batch is None:
            return None
        lengths = self.sequence_lengths(self._last_batch).to("cpu", torch.int64)
        return int(
            self._flops_per_token * lengths.sum() + self._flops_per_position * (lengths * lengths).sum()
        )

    def logs_this_step(self, batch_idx: int) -> bool:
        """Logging forces a host sync on every call, so training metrics report the mean of the
        last ``log_every_n_steps`` steps, on the last micro-batch of the steps the Trainer writes out."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return True
        last_micro_batch = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        return last_micro_batch and (self.global_step + 1) % max(1, trainer.log_every_n_steps) == 0

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError(
                f"{type(self).__name__} was built without an optimizer; set model.optimizer in the config"
            )
        optimizer = self.optimizer_factory(self.parameter_groups())
        apply_lr_scales(optimizer)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Clip under every precision, the fused AdamW included (Lightning's mixed-precision plugins refuse
        to clip for an optimizer that unscales inside its step, even under bf16, which has no scale)."""
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            # fp16: Lightning leaves a fused optimizer's gradients scaled; unscaled here, they are clipped
            # as they are, and GradScaler.step then tells the fused kernel not to unscale them again.
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif hasattr(self.trainer.model, "clip_grad_norm_"):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)  # FSDP: the norm over every rank's shard
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def parameter_groups(self) -> list[dict]:
        """Parameter groups for the optimizer; a task may scale learning rates per group. For
        :class:`MuonAdamW`, the blocks' matrices get a ``"hidden"`` group of their own."""
        return weight_decay_groups(self, self.hidden_matrices() if self._optimizer_is_muon() else ())

    def hidden_matrices(self) -> list[torch.nn.Parameter]:
        """The 2-D weights inside the transformer blocks (not the embeddings, head or gains)."""
        return [p for p in self.backbone.blocks.parameters() if p.dim() == 2 and p.requires_grad]

    def _optimizer_is_muon(self) -> bool:
        factory = getattr(self.optimizer_factory, "func", self.optimizer_factory)
        return isinstance(factory, type) and issubclass(factory, MuonAdamW)

    def data_kwargs(self) -> dict[str, Any]:
        """What a datamodule must share with this model to feed it (evaluation builds one from this)."""
        return {"tokenizer": self.tokenizer, **{key: self.hparams[key] for key in self.data_hparams}}

    def for_export(self) -> GPTTask:
        """The model as the export formats write it (a task with adapters merges them first)."""
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = type(self).__name__  # what gptlab.tasks.registry.load_module rebuilds
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Whether the checkpoint fits was checked once, where the run chose it (checkpoints.fit); here the
        # model only takes its tokenizer.
        if "tokenizer" in checkpoint:
            self.tokenizer = Tokenizer.from_json(checkpoint["tokenizer"])
