"""``gptlab-predict``: label texts with a classifier checkpoint alone and write them to a CSV file.

gptlab-predict ckpt_path=.../best-step000600.ckpt input=texts.txt output=preds.csv
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from gptlab.data.datasets import TextClassificationDataset, describe_dropped, pad_collate
from gptlab.data.readers import expand_paths, iter_records
from gptlab.models.classifier import GPTClassifier
from gptlab.models.io import load_module
from gptlab.run.files import atomic_write
from gptlab.run.hydra import check_config_dir, check_device, refuse_unknown_settings

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> Path:
    """Write ``cfg.output``: for every input row its line, the predicted label and each class's
    probability (``p_<label>``); return the output path."""
    inputs = expand_paths(cfg.input, key="input")
    output = Path(cfg.output)
    check_output(output, inputs, cfg.overwrite)
    check_device(cfg.device)
    rows = [
        (line, record[cfg.text_field] or "")
        for file in inputs
        for line, record in iter_records(file, [cfg.text_field], cfg.encoding_errors, prefix="")
    ]
    model = load_module(cfg.ckpt_path, map_location=cfg.device).to(cfg.device)
    if not isinstance(model, GPTClassifier):
        raise ValueError(
            f"checkpoint '{cfg.ckpt_path}' holds a language model, not a classifier; "
            "gptlab-generate samples text from it"
        )
    if model.preprocessing.active:  # the checkpoint's word-level preprocessing, as in training
        rows = [(line, model.preprocessing(text)) for line, text in rows]
    blank = [line for line, text in rows if not text.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        after = " after preprocessing" if model.preprocessing.active else ""
        log.warning(
            f"{len(blank)} input row(s) have no text{after} (line {shown}); their output rows have an "
            "empty label and no probabilities"
        )
    texts = [text for _, text in rows if text.strip()]
    probabilities = iter(
        predict_probabilities(
            model, texts, cfg.batch_size, cfg.truncation, cfg.unknown_chars, preprocessed=True
        )
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*HEADER, *(f"p_{name}" for name in model.label_names)])
        for line, text in rows:
            if not text.strip():
                writer.writerow([line, "", *[""] * len(model.label_names)])
                continue
            probs = next(probabilities)
            label = model.label_names[int(probs.argmax())]
            writer.writerow([line, label, *(f"{p:.6f}" for p in probs.tolist())])
    log.info(f"wrote {len(rows)} predictions to {output}")
    return output


HEADER = ("line", "label")


def check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse to write predictions over an input, or over a file that holds something else."""
    if output.resolve() in {path.resolve() for path in inputs}:
        raise FileExistsError(
            f"output={output} is one of the input files; predicting would replace the texts with their "
            "labels. Pass another output=<file>.csv"
        )
    if output.is_dir():
        raise IsADirectoryError(
            f"output={output} is a directory; pass a file name, e.g. output={output}/preds.csv"
        )
    if output.exists() and not overwrite and not _is_predictions(output):
        raise FileExistsError(
            f"output={output} exists and is not an earlier gptlab-predict file; pass another "
            "output=<file>.csv, or overwrite=true to replace it"
        )


def _is_predictions(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.readline().decode("utf-8", errors="replace").strip().split(",")[:2] == list(HEADER)


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


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    predict(cfg)


def main() -> None:
    refuse_unknown_settings(sys.argv[1:], "predict")
    hydra_main()


if __name__ == "__main__":
    main()
