"""The record of a run: its config printed and saved with the code's git commit, and its hyperparameters."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lightning import Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from gptlab import PROJECT_ROOT


def log_config(cfg: DictConfig, loggers: list[Logger], **extra: dict) -> None:
    """Record the whole resolved config, and ``extra`` groups of values, as the run's hyperparameters."""
    params = OmegaConf.to_container(cfg, resolve=True) | extra
    for logger in loggers:
        logger.log_hyperparams(params)


def log_checkpoint_path(trainer: Trainer, loggers: list[Logger]) -> None:
    """The best (else the last) checkpoint's path, as a parameter of the run in MLflow and W&B, where a run
    is looked up later (TensorBoard's and the CSV logs lie in the run directory, beside the checkpoints)."""
    callback = trainer.checkpoint_callback
    path = (callback.best_model_path or callback.last_model_path) if callback else ""
    for logger in loggers:
        if path and isinstance(logger, MLFlowLogger | WandbLogger):
            logger.log_hyperparams({"checkpoint": path})


def git_commit(directory: str | Path) -> str | None:
    """The commit of the code being run (with ``-dirty`` when the tree has changes), if in a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def record_run(cfg: DictConfig) -> None:
    """Print the config as a tree and save it, resolved, with the code's git commit, in the run dir.
    A resumed run keeps the configs of the earlier sessions of the run as config_resolved.<n>.yaml."""
    with open_dict(cfg):
        cfg.git_commit = git_commit(PROJECT_ROOT)
    if rank_zero_only.rank == 0:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        record = output_dir / "config_resolved.yaml"
        if record.exists():
            sessions = len(list(output_dir.glob("config_resolved*")))
            record.rename(output_dir / f"config_resolved.{sessions}.yaml")
        record.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tree = Tree("config", guide_style="dim")
        for key, value in cfg.items():
            branch = tree.add(f"[bold]{key}")
            text = OmegaConf.to_yaml(value) if isinstance(value, DictConfig | ListConfig) else str(value)
            branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
        Console().print(tree)
