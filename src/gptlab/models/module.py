"""The LightningModule: the GPT backbone plus a head, with losses, metrics and optimization."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy
from torchmetrics import MeanMetric, Metric

from gptlab.models.checkpoint import CLASS_KEY
from gptlab.models.generation import KVCache, sample
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead
from gptlab.models.hf import load_hf_gpt2
from gptlab.models.optim import MuonAdamW, apply_lr_scales, weight_decay_groups
from gptlab.tokenization import Tokenizer, check_same_tokenizer

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class WeightedMean(Metric):
    """Mean of batch values weighted by their sizes (tokens, or rows), without a host sync per update.

    (torchmetrics' ``MeanMetric(nan_strategy="disable")``, the sync-free setting, ignores the weights, so
    a last, smaller batch would count as much as a full one.)
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float | torch.Tensor) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class Perplexity(WeightedMean):
    """exp of the (token-weighted) mean cross-entropy it is updated with."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class BitsPerByte(Metric):
    """Summed loss over target tokens / ln 2 / the UTF-8 bytes those tokens stand for: a measure that
    compares models whatever their tokenizer. End-of-text targets (no bytes) count in neither sum."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("nats", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bytes", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, token_losses: torch.Tensor, token_bytes: torch.Tensor) -> None:
        self.nats += token_losses.detach().double().masked_fill(token_bytes == 0, 0.0).sum()
        self.bytes += token_bytes.sum()

    def compute(self) -> torch.Tensor:
        return self.nats / self.bytes / math.log(2)


class GPTModule(L.LightningModule):
    """Causal language modelling with a tied LM head; the base of :class:`~gptlab.models.classifier.
    GPTClassifier`, which adds a classification head to the same backbone.

    Hyperparameters saved in checkpoints are primitives only (backbone config as a dict, vocab size);
    the tokenizer travels as JSON in ``checkpoint["tokenizer"]`` and the class name beside it (for
    :func:`gptlab.models.io.load_module`); optimizer and scheduler factories are not saved (the resolved
    run config records them), so checkpoints load with ``weights_only=True``.
    ``pretrained_hf``: a local Hugging Face GPT-2 directory whose shapes and weights the backbone takes
    (:func:`gptlab.models.hf.load_hf_gpt2`). ``eval_sets``: the names of the data's evaluation corpora,
    validated after the main split and logged as ``val/<name>/loss`` and ``val/<name>/bpb``.
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
        # logger=False: the entry point logs the whole resolved run config once instead.
        self.save_hyperparameters(
            {"vocab_size": vocab_size, "backbone": self._backbone_hparams()}, logger=False
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

    def configure_model(self) -> None:
        if self.compile_backbone:
            self.backbone.compile()

    # The batch is kept, and counted only if the throughput monitor asks (flops_per_batch). These hooks, not
    # on_after_batch_transfer, which Lightning warns about in every run that has a datamodule.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._last_batch = batch

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._last_batch = batch

    def sequence_lengths(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The real tokens of each sequence of a batch: every window of a causal-LM batch is full."""
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

    def _backbone_hparams(self) -> dict[str, Any]:
        hparams = self.config.to_dict()
        del hparams["vocab_size"]
        return hparams

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab); ``cache``: see :meth:`GPT.forward`."""
        return self.lm_head(self.backbone(idx, cache))

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

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> None:
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

    def logs_this_step(self, batch_idx: int) -> bool:
        """Logging forces a host sync on every call, so training metrics report the mean of the
        last ``log_every_n_steps`` steps, on the last micro-batch of the steps the Trainer writes out."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return True
        last_micro_batch = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        return last_micro_batch and (self.global_step + 1) % max(1, trainer.log_every_n_steps) == 0

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate("val", batch, dataloader_idx)

    def test_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate("test", batch, dataloader_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("GPTModule was built without an optimizer; set model.optimizer in the config")
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
        """Parameter groups for the optimizer; subclasses may scale learning rates per group. For
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
        return {"tokenizer": self.tokenizer}

    def check_same_data(self, saved_hparams: Mapping[str, Any]) -> None:
        """Raise ValueError when weights saved with ``saved_hparams`` were trained on data this model reads
        otherwise (nothing to check for a language model: its tokenizer is checked on its own)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = type(self).__name__  # what gptlab.models.io.load_module rebuilds
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer" in checkpoint:
            saved = Tokenizer.from_json(checkpoint["tokenizer"])
            if self.tokenizer is not None:
                check_same_tokenizer(
                    self.tokenizer,
                    saved,
                    "the checkpoint being loaded",
                    "resume or test with the data and tokenizer the checkpoint was trained with, or start "
                    "a new run without ckpt_path",
                )
            self.tokenizer = saved
        self._check_shapes(checkpoint)

    def _check_shapes(self, checkpoint: dict[str, Any]) -> None:
        """Name the settings behind a shape mismatch (Lightning would print a raw state_dict error)."""
        trainer = self._trainer
        if trainer is not None and isinstance(trainer.strategy, FSDPStrategy):
            # a model FSDP has already wrapped (testing after fit) names and flattens its parameters;
            # the strategy loads the full checkpoint itself and reports a real mismatch
            return
        ours = self.state_dict()
        theirs = checkpoint.get("state_dict", {})
        if all(name in theirs and theirs[name].shape == value.shape for name, value in ours.items()):
            return
        saved = {**checkpoint.get("hyper_parameters", {}).get("backbone", {})}
        saved["vocab_size"] = checkpoint.get("hyper_parameters", {}).get("vocab_size")
        current = {**self.hparams.get("backbone", {}), "vocab_size": self.hparams.get("vocab_size")}
        changed = [f"{k}={saved.get(k)} there, {v} here" for k, v in current.items() if saved.get(k) != v]
        raise ValueError(
            "the checkpoint's weights do not fit this model, which has other shapes "
            f"(model.backbone: {'; '.join(changed) or 'see its hyperparameters'}); resume with the "
            "checkpoint's settings (its run's .hydra/config.yaml), or start a new run that fine-tunes "
            "from it with model.pretrained=<checkpoint>"
        )

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
