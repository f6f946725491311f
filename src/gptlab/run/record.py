"""The record of a run: its config printed and saved with the code's git commit, and its hyperparameters."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from gptlab import PROJECT_ROOT


class RunLogHandler(logging.FileHandler):
    """The handler of a run's ``<task>.log`` (configs/hydra/default.yaml). A training run holds its records
    (:func:`hold_run_log`) until it has checked that it may write in its directory, so that a refused
    resume leaves the other run's log as it was; the file is created at the first record written."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = "utf-8") -> None:
        super().__init__(filename, mode, encoding, delay=True)
        self.held: list[logging.LogRecord] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is None:
            super().emit(record)
        else:
            self.held.append(record)

    def write_held(self) -> None:
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)


def _run_log_handlers() -> list[RunLogHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RunLogHandler)]


def hold_run_log() -> None:
    """Keep the run's log records in memory until :func:`record_run` (dropped if the run is refused)."""
    for handler in _run_log_handlers():
        handler.held = handler.held or []


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


def record_run(cfg: DictConfig, composed: DictConfig | None = None) -> None:
    """Print the config as a tree and save it, resolved, with the code's git commit, in the run dir; write
    the held log records, and Hydra's record of the run (``.hydra/``: ``composed``, the config before
    resolution, the hydra node and the overrides), which configs/train.yaml leaves to this function so
    that nothing is written in a run directory before the run has been checked.
    A resumed run keeps the configs of the earlier sessions of the run as config_resolved.<n>.yaml."""
    with open_dict(cfg):
        cfg.git_commit = git_commit(PROJECT_ROOT)
    for handler in _run_log_handlers():
        handler.write_held()
    if rank_zero_only.rank == 0:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if HydraConfig.initialized() and HydraConfig.get().output_subdir is None:
            hydra_dir = output_dir / ".hydra"
            hydra_dir.mkdir(exist_ok=True)
            hydra = HydraConfig.get()
            records = {
                "hydra.yaml": OmegaConf.create({"hydra": hydra}),
                "overrides.yaml": hydra.overrides.task,
            }
            if composed is not None:
                records["config.yaml"] = composed
            for name, record in records.items():
                OmegaConf.save(record, hydra_dir / name)
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
