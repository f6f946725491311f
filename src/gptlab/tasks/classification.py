"""Text classification on the GPT backbone: the language model's module plus a classification head."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from gptlab.checkpoints import fit
from gptlab.checkpoints.read import Checkpoint
from gptlab.models.gpt import fit_to_backbone
from gptlab.models.heads import ClassificationHead
from gptlab.models.lora import LoRAConfig, add_lora, merge_lora, merge_lora_state
from gptlab.models.optim import layerwise_lr_groups
from gptlab.tasks.base import GPTTask, OptimizerFactory, SchedulerFactory
from gptlab.tasks.metrics import WeightedMean
from gptlab.tokenization import Tokenizer
from gptlab.tokenization.words import WordPreprocessing

Batch = Mapping[str, torch.Tensor]


class GPTClassifier(GPTTask):
    """The backbone, a classification head and the tied LM head, trained with cross-entropy on the
    labels plus ``lm_loss_weight`` times the causal-LM loss on the same texts (GPT-1's auxiliary loss).

    ``label_names`` fix the class ids (their order) and travel in the checkpoint's hyperparameters, as
    does ``preprocessing`` (the data's word-level preprocessing, which gptlab-eval and gptlab-predict
    apply to texts before tokenizing).
    ``pretrained`` (a gptlab checkpoint's path, or the :class:`Checkpoint` read from it) gives the
    backbone its weights and must share the tokenizer and settings (but ``FINETUNE_CHOICES`` and a
    smaller ``block_size``); ``pretrained_hf`` (a local Hugging Face GPT-2 directory) gives it the
    weights and shapes instead; ``trainable_blocks`` trains only the last N blocks (0: a linear probe on
    a frozen backbone); ``layer_lr_decay`` < 1 lowers the learning rate by that factor per layer below
    the head; ``lora`` (rank, alpha, dropout, targets: :class:`~gptlab.models.lora.LoRAConfig`) adds
    low-rank adapters to the backbone's projections and trains only them and the head
    (:meth:`merge_lora` folds them into the weights).
    Batches are :func:`gptlab.data.datasets.pad_collate` dicts.
    """

    data_hparams = ("label_names", "preprocessing")

    def __init__(
        self,
        vocab_size: int,
        backbone: Mapping[str, Any],
        label_names: Sequence[str],
        pooling: str = "last",
        head_dropout: float = 0.0,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        lm_loss_weight: float = 0.0,
        pretrained: str | os.PathLike | Checkpoint | None = None,
        trainable_blocks: int | None = None,
        layer_lr_decay: float = 1.0,
        lora: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        tokenizer: Tokenizer | None = None,
        pretrained_hf: str | os.PathLike | None = None,
        compile: bool = False,
    ) -> None:
        if pretrained is not None and pretrained_hf is not None:
            raise ValueError(
                "model.pretrained and model.pretrained_hf are both set; take the backbone from one of "
                "them (a gptlab checkpoint or a Hugging Face GPT-2 directory)"
            )
        label_names = list(label_names)
        num_classes = len(label_names)
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least two classes, got label_names={label_names}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(class_weights)} values for {num_classes} classes "
                f"{label_names}; give one weight per class, in that order"
            )
        lora = None if lora is None else LoRAConfig.from_any(lora)
        if lora is not None and trainable_blocks is not None:
            raise ValueError(
                f"model.lora and model.trainable_blocks={trainable_blocks} are both set; LoRA already "
                "freezes the backbone and trains only its adapters and the head: set one of them"
            )
        preprocessing = WordPreprocessing.from_any(preprocessing)
        # `pretrained` is only where the weights came from: the checkpoint holds them afterwards.
        hparams = {
            "label_names": label_names,
            "pooling": pooling,
            "head_dropout": head_dropout,
            "class_weights": None if class_weights is None else list(class_weights),
            "label_smoothing": label_smoothing,
            "lm_loss_weight": lm_loss_weight,
            "trainable_blocks": trainable_blocks,
            "layer_lr_decay": layer_lr_decay,
            "lora": None if lora is None else lora.to_dict(),
            "preprocessing": preprocessing.to_hparams(),
        }
        super().__init__(
            vocab_size, backbone, optimizer, scheduler, tokenizer, pretrained_hf, compile, hparams
        )
        if trainable_blocks is not None and not 0 <= trainable_blocks <= self.config.n_layer:
            raise ValueError(
                f"trainable_blocks={trainable_blocks} must be between 0 (a linear probe) and n_layer="
                f"{self.config.n_layer}, or null to train the whole backbone"
            )
        self.label_names = label_names
        self.preprocessing = preprocessing
        self.head = ClassificationHead(self.config.n_embd, num_classes, pooling, head_dropout)
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_smoothing = label_smoothing
        self.lm_loss_weight = lm_loss_weight
        self.layer_lr_decay = layer_lr_decay
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = WeightedMean()
        self.test_loss = WeightedMean()
        # the auxiliary LM loss is logged on its own (*/lm_loss): */loss stays the classification loss
        self.train_lm_loss = MeanMetric(nan_strategy="disable")
        self.val_lm_loss = WeightedMean()
        self.test_lm_loss = WeightedMean()

        metrics = {"num_classes": num_classes}
        self.train_acc = MulticlassAccuracy(**metrics, average="micro")
        self.val_acc = MulticlassAccuracy(**metrics, average="micro")
        self.val_f1 = MulticlassF1Score(**metrics, average="macro")
        self.val_acc_best = MaxMetric()
        self.val_f1_best = MaxMetric()
        self.test_acc = MulticlassAccuracy(**metrics, average="micro")
        self.test_f1 = MulticlassF1Score(**metrics, average="macro")
        # expected calibration error of the top class (15 equal-width confidence bins); the reliability
        # diagram (gptlab.callbacks.calibration) is drawn from its states
        self.test_ece = MulticlassCalibrationError(**metrics, n_bins=15, norm="l1")
        # Reset here at the start of each validation and test; gptlab.callbacks.confusion_matrix reads
        # them at its end.
        self.val_confmat = MulticlassConfusionMatrix(**metrics)
        self.test_confmat = MulticlassConfusionMatrix(**metrics)

        if pretrained is not None:
            self.load_pretrained(pretrained)
        if trainable_blocks is not None:
            self.freeze_backbone(trainable_blocks)
        if lora is not None:
            add_lora(self.backbone, lora)  # after the pretrained weights: the adapters start from them

    def classify(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Padded token ids and their mask (B, T) -> class logits (B, classes)."""
        return self.head(self.backbone(input_ids), attention_mask)

    def sequence_lengths(self, batch: Batch) -> torch.Tensor:
        return batch["attention_mask"].sum(1)

    def _step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The classification loss, the auxiliary LM loss (None when its weight is 0) and the logits."""
        hidden = self.backbone(batch["input_ids"])
        logits = self.head(hidden, batch["attention_mask"])
        loss = F.cross_entropy(
            logits, batch["labels"], weight=self.class_weights, label_smoothing=self.label_smoothing
        )
        lm_loss = self._text_lm_loss(hidden, batch) if self.lm_loss_weight > 0 else None
        return loss, lm_loss, logits

    def _text_lm_loss(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Next-token loss on the texts themselves, padding excluded."""
        logits = self.lm_head(hidden[:, :-1])
        targets = batch["input_ids"][:, 1:].masked_fill(~batch["attention_mask"][:, 1:], -100)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, lm_loss, logits = self._step(batch)
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), batch["labels"])
        if lm_loss is not None:
            self.train_lm_loss.update(lm_loss.detach())
        if self.logs_this_step(batch_idx):
            self.log("train/loss", self.train_loss.compute(), prog_bar=True)
            self.log("train/acc", self.train_acc.compute(), prog_bar=True)
            if lm_loss is not None:
                self.log("train/lm_loss", self.train_lm_loss.compute())
            for metric in (self.train_loss, self.train_acc, self.train_lm_loss):
                metric.reset()
        return loss if lm_loss is None else loss + self.lm_loss_weight * lm_loss

    def _evaluate(self, stage: str, batch: Batch) -> None:
        loss, lm_loss, logits = self._step(batch)
        labels = batch["labels"]
        getattr(self, f"{stage}_loss").update(loss, len(labels))
        if lm_loss is not None:
            getattr(self, f"{stage}_lm_loss").update(lm_loss, len(labels))
            self.log(f"{stage}/lm_loss", getattr(self, f"{stage}_lm_loss"))
        for name in ("acc", "f1", "confmat"):
            getattr(self, f"{stage}_{name}").update(logits, labels)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage == "val")
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), prog_bar=stage == "val")
        self.log(f"{stage}/f1", getattr(self, f"{stage}_f1"))
        if stage == "test":
            self.test_ece.update(logits.float().softmax(-1), labels)
            self.log("test/ece", self.test_ece)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities (B, classes)."""
        return self.classify(batch["input_ids"], batch["attention_mask"]).softmax(-1)

    def on_train_start(self) -> None:
        # the sanity check's validation must not count as a best
        self.val_acc_best.reset()
        self.val_f1_best.reset()

    def on_validation_epoch_start(self) -> None:
        self.val_confmat.reset()

    def on_test_epoch_start(self) -> None:
        self.test_confmat.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute())
        self.val_f1_best.update(self.val_f1.compute())
        self.log("val/f1_best", self.val_f1_best.compute())

    def data_differences(self, saved_hparams: Mapping[str, Any]) -> list[str]:
        """How the texts behind weights saved with ``saved_hparams`` were read otherwise than this model's
        data is (:func:`gptlab.checkpoints.fit.check_fits`)."""
        saved = saved_hparams.get("preprocessing")
        if saved is None or WordPreprocessing.from_any(saved).to_hparams() == self.hparams["preprocessing"]:
            return []
        return [
            f"it was trained on texts preprocessed with {_settings(saved)}, but this run's "
            f"data.preprocessing is {_settings(self.hparams['preprocessing'])}"
        ]

    def parameter_groups(self) -> list[dict]:
        if self.layer_lr_decay == 1.0:
            return super().parameter_groups()
        return layerwise_lr_groups(self, self._depth, self.config.n_layer + 2, self.layer_lr_decay)

    def _depth(self, name: str) -> int:
        """0 for the embeddings, i + 1 for block i, n_layer + 1 for the final norm and the head."""
        parts = name.split(".")
        if parts[0] == "backbone" and parts[1] in ("wte", "wpe"):
            return 0
        if parts[0] == "backbone" and parts[1] == "blocks":
            return int(parts[2]) + 1
        return self.config.n_layer + 1

    def freeze_backbone(self, trainable_blocks: int) -> None:
        """Train only the last ``trainable_blocks`` blocks (and the final norm, which feeds the head)."""
        self.backbone.requires_grad_(False)
        if trainable_blocks > 0:
            for block in self.backbone.blocks[-trainable_blocks:]:
                block.requires_grad_(True)
            self.backbone.ln_f.requires_grad_(True)

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the backbone's weights: the model, and a checkpoint saved from it,
        is then a plain classifier (same outputs in eval mode), which any gptlab tool loads."""
        if self.hparams.get("lora") is None:
            return
        merge_lora(self.backbone)
        self.hparams["lora"] = None
        self.backbone.requires_grad_(True)

    def for_export(self) -> GPTClassifier:
        self.merge_lora()  # neither export format knows adapters; merged, the weights compute the same
        return self

    def load_pretrained(self, source: str | os.PathLike | Checkpoint) -> None:
        """Copy the backbone weights of a gptlab checkpoint; refuse one that does not fit this model.

        A classifier checkpoint must have the same label set, and its head is copied too (fine-tuning
        goes on); a language-model checkpoint leaves the freshly initialised head as it is.
        """
        checkpoint = source if isinstance(source, Checkpoint) else Checkpoint.read(source)
        if self.tokenizer is None:
            self.tokenizer = checkpoint.tokenizer()
        try:
            fit.check_fits(
                checkpoint,
                self,
                finetune=True,
                fix="fine-tune with the checkpoint's tokenizer (gptlab-train loads it when model.pretrained "
                "is set) and set model.backbone to the shapes it was trained with",
            )
        except fit.CheckpointMismatch as err:
            raise fit.CheckpointMismatch(f"pretrained checkpoint '{checkpoint.path}': {err}") from None
        hparams = checkpoint.hparams
        state = checkpoint.submodule_state("backbone")
        if hparams.get("lora") is not None:  # a LoRA classifier's adapters, folded into its weights
            state = merge_lora_state(state, LoRAConfig.from_any(hparams["lora"]).scale)
        self.backbone.load_state_dict(fit_to_backbone(state, self.config))
        if not self.config.tie_embeddings:  # an untied head has weights of its own, padded like wte's
            head = {"wte.weight": checkpoint.submodule_state("lm_head")["weight"]}
            self.lm_head.weight.data.copy_(fit_to_backbone(head, self.config)["wte.weight"])
        if hparams.get("label_names") is not None:
            self.head.load_state_dict(checkpoint.submodule_state("head"))


def _settings(preprocessing: Mapping[str, Any]) -> str:
    stopwords = len(preprocessing["extra_stopwords"])
    return f"words={preprocessing['words']}, lowercase={preprocessing['lowercase']}, {stopwords} stopwords"
