"""A third task, written as a user would: regression of a number from a text, with its data, its
predictor and one registry entry. Nothing in gptlab's entry points knows of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanAbsoluteError, MeanMetric

from gptlab.data.datamodules import GlobalBatchDataModule
from gptlab.data.datasets import pad_collate
from gptlab.tasks.base import GPTTask
from gptlab.tasks.metrics import WeightedMean
from gptlab.tasks.registry import Task, register
from gptlab.tokenization import CharTokenizer, Tokenizer


class NumberRows(Dataset):
    def __init__(self, texts: Sequence[str], values: Sequence[float], tokenizer: Tokenizer, length: int):
        self.items = [
            {"input_ids": torch.tensor(tokenizer.encode(text)[:length]), "value": float(value)}
            for text, value in zip(texts, values, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = pad_collate(items)
    batch["values"] = torch.tensor([item["value"] for item in items])
    return batch


class NumberData(GlobalBatchDataModule):
    """JSONL rows ``{"text": ..., "value": ...}``: six eighths train, one validates, one tests."""

    def __init__(
        self, path: str, batch_size: int = 4, block_size: int = 16, tokenizer: Tokenizer | None = None
    ):
        super().__init__()
        self.path, self.batch_size, self.block_size = path, batch_size, block_size
        self.tokenizer = tokenizer or CharTokenizer()
        self.num_workers, self.pin_memory = 0, False
        self.tokens_per_sample = None
        self.datasets: dict[str, NumberRows] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        with open(self.path, encoding="utf-8") as file:
            rows = [json.loads(line) for line in file]
        texts, values = [r["text"] for r in rows], [r["value"] for r in rows]
        if self.tokenizer.needs_fit:
            self.tokenizer.fit(texts)
        cuts = {"train": (0, 6 * len(rows) // 8), "val": (6 * len(rows) // 8, 7 * len(rows) // 8)}
        cuts["test"] = (cuts["val"][1], len(rows))
        for split, (start, end) in cuts.items():
            self.datasets[split] = NumberRows(
                texts[start:end], values[start:end], self.tokenizer, self.block_size
            )

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.tokenizer.vocab_size, "tokenizer": self.tokenizer}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["train"], batch_size=self.batch_size, shuffle=True, collate_fn=collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], batch_size=self.batch_size, collate_fn=collate)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], batch_size=self.batch_size, collate_fn=collate)


class Regressor(GPTTask):
    """The backbone, mean-pooled, and a linear head to one number, trained on squared error."""

    def __init__(self, vocab_size: int, backbone: dict, **task: Any) -> None:
        task.pop("eval_sets", None)  # the language model's config group is reused as it is
        super().__init__(vocab_size, backbone, **task)
        self.head = torch.nn.Linear(self.config.n_embd, 1)
        self.train_loss = MeanMetric()
        self.val_loss, self.test_loss = WeightedMean(), WeightedMean()
        self.val_mae, self.test_mae = MeanAbsoluteError(), MeanAbsoluteError()

    def sequence_lengths(self, batch: dict) -> torch.Tensor:
        return batch["attention_mask"].sum(1)

    def predict_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1)).squeeze(-1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self.predict_values(batch["input_ids"], batch["attention_mask"]), batch["values"])
        self.log("train/loss", loss)
        return loss

    def _evaluate(self, stage: str, batch: dict, dataloader_idx: int = 0) -> None:
        predicted = self.predict_values(batch["input_ids"], batch["attention_mask"])
        getattr(self, f"{stage}_loss").update(F.mse_loss(predicted, batch["values"]), len(predicted))
        getattr(self, f"{stage}_mae").update(predicted, batch["values"])
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"))
        self.log(f"{stage}/mae", getattr(self, f"{stage}_mae"))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("test", batch)


@torch.inference_mode()
def predict_numbers(
    model: Regressor, texts: Sequence[str], lines: Sequence[int], cfg: Any
) -> tuple[list[str], list[list]]:
    model.eval()
    rows = []
    for text in texts:
        ids = torch.tensor([model.tokenizer.encode(text)[: model.config.block_size]])
        rows.append([f"{float(model.predict_values(ids, torch.ones_like(ids, dtype=torch.bool))):.6f}"])
    return ["value"], rows


register(
    Task(
        name="regressor",
        module="tests.tasks.regression:Regressor",
        datamodule="tests.tasks.regression:NumberData",
        data_hint="rows with a text and a number",
        predictor="tests.tasks.regression:predict_numbers",
    )
)
