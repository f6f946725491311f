"""Zero-shot multiple choice: score each choice's log-likelihood given the context, pick the best.

A task is a JSONL file of ``{"context": str, "choices": [str, ...], "label": int}`` (the shape of
HellaSwag, LAMBADA-style and cloze tasks). As lm-evaluation-harness reports them, ``acc`` picks the
choice with the highest summed log-likelihood and ``acc_norm`` the highest per UTF-8 byte of the
choice, which does not favour short choices. ``data/make_next_line_task.py`` builds a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import task_for_module
from gptlab.tokenization import UnknownCharactersError


@dataclass(frozen=True)
class ChoiceItem:
    context: str
    choices: list[str]
    label: int


def read_choice_task(path: str | Path) -> list[ChoiceItem]:
    """The items of a JSONL task file; a malformed line is named with what it lacks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"multiple-choice task '{path}' does not exist; point choice_eval.path at a JSONL"
        )
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        context, choices, label = record.get("context"), record.get("choices"), record.get("label")
        if not (
            isinstance(context, str)
            and isinstance(choices, list)
            and len(choices) >= 2
            and all(isinstance(choice, str) and choice for choice in choices)
            and isinstance(label, int)
            and 0 <= label < len(choices)
        ):
            raise ValueError(
                f'{path} line {number}: expected {{"context": str, "choices": [2 or more non-empty str], '
                f'"label": index of the right choice}}, got {line[:200]!r}'
            )
        items.append(ChoiceItem(context, choices, label))
    if not items:
        raise ValueError(f"multiple-choice task '{path}' holds no items")
    return items


@torch.no_grad()
def choice_log_likelihoods(model: GPTModule, item: ChoiceItem) -> torch.Tensor:
    """The summed log-likelihood of each choice's tokens after the context's, in one padded batch; the
    context is cut on the left to fit the model's block size."""
    tokenizer, block = model.tokenizer, model.config.block_size
    context = tokenizer.encode(item.context) or [tokenizer.eot_id]
    sequences, lengths = [], []
    for choice in item.choices:
        ids = (context + tokenizer.encode(choice))[-(block + 1) :]
        sequences.append(ids)
        lengths.append(min(len(tokenizer.encode(choice)), len(ids) - 1))
    width = max(map(len, sequences)) - 1
    # Right padding: a causal model's earlier positions never see it.
    inputs = torch.tensor([ids[:-1] + [0] * (width - len(ids) + 1) for ids in sequences], device=model.device)
    logits = model(inputs).float()
    scores = []
    for row, (ids, length) in enumerate(zip(sequences, lengths, strict=True)):
        end = len(ids) - 1
        targets = torch.tensor(ids[end - length + 1 :], device=model.device)
        log_probs = F.log_softmax(logits[row, end - length : end], dim=-1)
        scores.append(log_probs.gather(1, targets[:, None]).sum())
    return torch.stack(scores)


def score_choice_task(model: GPTModule, items: list[ChoiceItem]) -> dict[str, float]:
    """``acc`` and ``acc_norm`` (per byte) of ``model`` on the items, and the chance level."""
    right = right_norm = chance = 0.0
    for item in items:
        scores = choice_log_likelihoods(model, item).cpu()
        sizes = torch.tensor([len(choice.encode("utf-8")) for choice in item.choices])
        right += float(scores.argmax() == item.label)
        right_norm += float((scores / sizes).argmax() == item.label)
        chance += 1 / len(item.choices)
    n = len(items)
    return {"acc": right / n, "acc_norm": right_norm / n, "chance": chance / n}


class ChoiceEval(L.Callback):
    """After each validation and test, score the model on the task at ``path`` and log
    ``<stage>/<name>/acc`` and ``<stage>/<name>/acc_norm``; does nothing while ``path`` is null."""

    def __init__(self, path: str | None = None, name: str = "choice", max_items: int | None = None) -> None:
        self.path = path
        self.name = name
        self.max_items = max_items
        self.items: list[ChoiceItem] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.path is None:
            return
        if not task_for_module(pl_module).generates:
            raise ValueError(
                f"callbacks.choice_eval scores a language model's next tokens; {type(pl_module).__name__} "
                "is not one: set callbacks.choice_eval.path=null"
            )
        self.items = read_choice_task(self.path)[: self.max_items]

    def _score(self, stage: str, trainer: L.Trainer, pl_module: GPTModule) -> None:
        if not self.items or trainer.sanity_checking:
            return
        # Every rank scores every item (a task is small), so the logged values agree without a sync.
        try:
            scores = score_choice_task(pl_module, self.items)
        except UnknownCharactersError as err:
            raise UnknownCharactersError(f"multiple-choice task '{self.path}': {err}") from None
        for key, value in scores.items():
            if key != "chance":
                pl_module.log(f"{stage}/{self.name}/{key}", value)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: GPTModule) -> None:
        self._score("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: GPTModule) -> None:
        self._score("test", trainer, pl_module)
