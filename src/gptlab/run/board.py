"""What TensorBoard shows of a run: a readable run name, and hyperparameters that compare across runs."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from tensorboard.plugins.hparams.summary_v2 import hparams_pb

from gptlab.checkpoints.fit import flatten

log = logging.getLogger(__name__)

BOARD_DIR = "tensorboard"  # logs/tensorboard/: `tensorboard --logdir logs/tensorboard`
# config keys that only say where files go, or how an object is built: never compared
NOT_HPARAMS = ("paths.", "hydra.")
NOT_HPARAMS_SUFFIXES = ("_target_", "_partial_")


# Lightning's throughput counters (batches, samples, time, per-device rates; validation's and test's too):
# kept out of TensorBoard, which shows tokens/s and MFU of the whole run instead
RAW_COUNTERS = re.compile(r"^(train|validate|test)/(device/)?(batches|samples|lengths|time|\w+_per_sec|mfu)$")
THROUGHPUT = re.compile(r"^train/(device/)?(items_per_sec|mfu)$")


class BoardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` with a curated set of scalars: ``train/tokens_per_s`` and
    ``train/mfu`` (all devices, else this one) instead of Lightning's ~24 throughput counters, one
    ``train/lr`` curve per distinct learning rate (``lr-AdamW/decay`` and ``/no_decay`` are one schedule),
    and no ``epoch`` scalar (gptlab's runs are counted in steps)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lr_names: dict[str, str] | None = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        curated: dict[str, Any] = {}
        rates = {k: v for k, v in metrics.items() if k.startswith("lr-")}
        for key, value in metrics.items():
            if (match := THROUGHPUT.match(key)) is not None:
                name = "train/tokens_per_s" if match[2] == "items_per_sec" else "train/mfu"
                if match[1] is None or name not in curated:  # the global rate over this device's
                    curated[name] = value
            elif key != "epoch" and key not in rates and not RAW_COUNTERS.match(key):
                curated[key] = value
        if rates:
            curated |= {name: rates[key] for key, name in self._lr_curves(rates).items() if key in rates}
        if curated:
            super().log_metrics(curated, step)

    def _lr_curves(self, rates: Mapping[str, Any]) -> dict[str, str]:
        """Parameter groups on one schedule share a curve; decided on the first values logged."""
        if self._lr_names is None:
            first: dict[float, str] = {}
            for key, value in rates.items():
                first.setdefault(float(value), key)
            keys = list(first.values())
            self._lr_names = {
                key: "train/lr" if len(keys) == 1 else f"train/lr/{key.split('/', 1)[-1]}" for key in keys
            }
        return self._lr_names


def hparams(cfg: DictConfig, **extra: Mapping) -> dict[str, bool | int | float | str]:
    """The run's resolved config, flattened, with ``extra`` groups (``batch.global_samples``, ...), as the
    values TensorBoard's HPARAMS tab takes."""
    values = flatten(OmegaConf.to_container(cfg, resolve=True)) | flatten(extra)
    run_dir = str(cfg.paths.output_dir)  # checkpoint and log paths differ in every run and say nothing

    def compared(key: str, value: Any) -> bool:
        if value is None or key.startswith(NOT_HPARAMS) or key.endswith(NOT_HPARAMS_SUFFIXES):
            return False
        return not (isinstance(value, str) and value.startswith(run_dir))

    return {
        key: value if isinstance(value, bool | int | float | str) else str(value)
        for key, value in values.items()
        if compared(key, value)
    }


@rank_zero_only  # other ranks' loggers hold no writer
def log_hparams(cfg: DictConfig, loggers: list[Logger], **extra: Mapping) -> None:
    """Record the run's hyperparameters.

    TensorBoard gets the session's start info only (TensorBoard's ``hparams_pb``), not Lightning's
    ``log_hyperparams``, which also writes an experiment summary into every run: TensorBoard then shows one
    run's experiment, in which nothing differs and only ``hp_metric`` is a metric. From start infos alone it
    builds the experiment across runs itself: the keys that differ first, every scalar a metric column.
    """
    values = hparams(cfg, **extra)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.file_writer.add_summary(hparams_pb(values))
        else:
            logger.log_hyperparams(values)


def swept_overrides() -> list[str]:
    """A sweep job's own overrides: those the sweep chose (``lr=0.003``), not the ones every job shares
    from the command line. Keys are shortened to their last part where that stays unambiguous."""
    hydra = HydraConfig.get()
    shared = set(sys.argv[1:])
    own = [o for o in hydra.overrides.task if o not in shared]
    keys = [o.split("=", 1)[0].lstrip("+~") for o in own]
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return [
        f"{short if last.count(short) == 1 else key}={o.split('=', 1)[1]}"
        for o, key, short in zip(own, keys, last, strict=True)
    ]


def in_multirun() -> bool:
    """Whether this process runs the jobs of a Hydra sweep (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def board_run_name(cfg: DictConfig) -> str:
    """The run's name in TensorBoard: ``<experiment or task>/<run directory>`` for a run,
    ``<sweep time>/<the job's overrides>`` for a sweep job."""
    run_dir = Path(cfg.paths.output_dir)
    if in_multirun():
        own = ",".join(swept_overrides()).replace("/", "_") or run_dir.name
        return f"{run_dir.parent.name}/{own}"
    experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
    return f"{experiment or cfg.task_name}/{run_dir.name}"


def link_board_run(cfg: DictConfig, loggers: list[Logger]) -> Path | None:
    """Link the run's TensorBoard directory as ``logs/tensorboard/<board_run_name>``, so that
    ``tensorboard --logdir logs/tensorboard`` names runs by experiment and time, and sweep jobs by what
    they changed; the event files stay in the run directory. Returns the link."""
    board = next((lg for lg in loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is None:
        return None
    target = Path(board.log_dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    link = Path(cfg.paths.log_dir) / BOARD_DIR / board_run_name(cfg)
    for suffix in ("", *(f"-{n}" for n in range(2, 100))):  # an Optuna trial may repeat a job's values
        candidate = link.with_name(link.name + suffix)
        if candidate.is_symlink() and candidate.resolve() == target:
            return candidate  # a resumed run continues its TensorBoard run
        if not candidate.exists() and not candidate.is_symlink():
            candidate.parent.mkdir(parents=True, exist_ok=True)
            try:
                candidate.symlink_to(os.path.relpath(target, candidate.parent), target_is_directory=True)
            except OSError as err:  # e.g. Windows without the symlink privilege
                log.info(f"TensorBoard: no link in {candidate.parent} ({err}); use --logdir {target}")
                return None
            return candidate
    return None
