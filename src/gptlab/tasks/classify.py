"""Labelling texts with a trained classifier: class probabilities, and the rows gptlab-predict writes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from gptlab.data.datasets import TextClassificationDataset, describe_dropped, pad_collate
from gptlab.tasks.classification import GPTClassifier

log = logging.getLogger(__name__)


def predict_labels(
    model: GPTClassifier, texts: Sequence[str], lines: Sequence[int], cfg: Any
) -> tuple[list[str], list[list]]:
    """gptlab-predict's columns for ``texts`` (the predicted label, then each class's probability
    ``p_<label>``) and one row per text; a text with nothing left after the model's preprocessing gets
    empty cells (``lines``: where each text is in the input, for the warning)."""
    if model.preprocessing.active:  # the checkpoint's word-level preprocessing, as in training
        texts = [model.preprocessing(text) for text in texts]
    blank = [line for line, text in zip(lines, texts, strict=True) if not text.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        after = " after preprocessing" if model.preprocessing.active else ""
        log.warning(
            f"{len(blank)} input row(s) have no text{after} (line {shown}); their output rows have an "
            "empty label and no probabilities"
        )
    probabilities = iter(
        predict_probabilities(
            model, [t for t in texts if t.strip()], cfg.batch_size, cfg.truncation, cfg.unknown_chars,
            preprocessed=True,
        )
    )  # fmt: skip
    rows = []
    for text in texts:
        if not text.strip():
            rows.append(["", *[""] * len(model.label_names)])
            continue
        probs = next(probabilities)
        rows.append([model.label_names[int(probs.argmax())], *(f"{p:.6f}" for p in probs.tolist())])
    return ["label", *(f"p_{name}" for name in model.label_names)], rows


@torch.inference_mode()
def predict_probabilities(
    model: GPTClassifier,
    texts: Sequence[str],
    batch_size: int = 64,
    truncation: str = "head",
    unknown_chars: str = "drop",
    preprocessed: bool = False,
) -> torch.Tensor:
    """Class probabilities (len(texts), classes) for non-empty ``texts``, in order; the model's word-level
    preprocessing is applied to them unless they are ``preprocessed`` already."""
    if not preprocessed and model.preprocessing.active:
        texts = [model.preprocessing(text) for text in texts]
    if not texts:
        return torch.empty(0, len(model.label_names))
    dataset = TextClassificationDataset(
        texts,
        tokenizer=model.tokenizer,
        max_length=model.config.block_size,
        truncation=truncation,
        unknown_chars=unknown_chars,
    )
    if dataset.dropped:
        log.info(f"{describe_dropped(dataset.dropped, dataset.num_chars)}; dropped")
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate)
    batches = (
        model.predict_step({k: v.to(model.device) for k, v in batch.items()}, i)
        for i, batch in enumerate(loader)
    )
    return torch.cat([probs.cpu() for probs in batches])
