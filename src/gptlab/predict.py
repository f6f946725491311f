"""``gptlab-predict``: label texts with a classifier checkpoint alone and write them to a CSV file.

gptlab-predict ckpt_path=.../best-step000600.ckpt input=texts.txt output=preds.csv
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from gptlab.data.readers import expand_paths, iter_records
from gptlab.run.entry import entry_point
from gptlab.run.files import atomic_write
from gptlab.run.hydra import check_device
from gptlab.tasks.registry import load_module, task_for_module

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
    task = task_for_module(model)
    label = task.predict_function()
    if label is None:
        raise ValueError(
            f"checkpoint '{cfg.ckpt_path}' holds a {task.name}, not a classifier"
            + ("; gptlab-generate samples text from it" if task.generates else "")
        )
    columns, predictions = label(model, [text for _, text in rows], [line for line, _ in rows], cfg)

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["line", *columns])
        for (line, _), prediction in zip(rows, predictions, strict=True):
            writer.writerow([line, *prediction])
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


main = entry_point(predict, "predict")


if __name__ == "__main__":
    main()
