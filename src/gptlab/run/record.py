"""The record of a run: its log, its config (saved with the code's git commit; what differs from the
defaults printed) and the summary printed when it ends."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning import Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.tree import Tree

from gptlab import CONFIG_DIR, PROJECT_ROOT
from gptlab.checkpoints.fit import flatten
from gptlab.run.board import BOARD_DIR, in_multirun

log = logging.getLogger(__name__)


SUMMARY_FILE = "run_summary.json"  # the run's last step, metrics and target, written when it ends


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


def keep_run_log(cfg: DictConfig) -> None:
    """A run that failed before :func:`record_run` keeps its held log (and the error logged next) when its
    directory is its own; a resumed run's directory belongs to the run it resumes and is left alone."""
    if not cfg.get("ckpt_path"):
        for handler in _run_log_handlers():
            handler.write_held()


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
        print_config_changes(cfg, output_dir / "config_resolved.yaml")


def default_config() -> DictConfig:
    """configs/train.yaml as composed without overrides: what a run's config is compared to."""
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its own search path
        return compose(config_name="train")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train")


def flat_defaults(cache_dir: str | os.PathLike | None) -> dict:
    """:func:`default_config`, resolved and flattened, kept in ``cache_dir`` under a hash of configs/:
    composing it again costs about as much as composing the run's own config."""
    digest = hashlib.sha256(str(CONFIG_DIR).encode())
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        digest.update(str(path.relative_to(CONFIG_DIR)).encode() + b"\0" + path.read_bytes())
    cached = Path(cache_dir or "", "config_defaults", f"{digest.hexdigest()[:20]}.json")
    if cache_dir and cached.is_file():
        return json.loads(cached.read_text())
    try:
        # a JSON round trip, so that a fresh and a cached default compare alike (tuples as lists)
        default = json.loads(
            json.dumps(flatten(OmegaConf.to_container(default_config(), resolve=True)), default=str)
        )
    except Exception as err:  # noqa: BLE001 -- a config that does not compose alone still runs
        log.debug(f"defaults not composed: {err}")
        return {}
    if cache_dir:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(default))
        temporary.replace(cached)  # atomic: a concurrent run reads the whole file or none
    return default


def print_config_changes(cfg: DictConfig, saved: Path) -> None:
    """Print the values that differ from the defaults (a run's own choices), as a tree; the whole config
    is in ``saved``."""
    now = json.loads(json.dumps(flatten(OmegaConf.to_container(cfg, resolve=True)), default=str))
    default = flat_defaults(OmegaConf.select(cfg, "paths.cache_dir"))
    run_dir = str(cfg.paths.output_dir)
    own = {
        key: value
        for key, value in now.items()
        if not key.startswith(("paths.", "git_commit"))
        and not (isinstance(value, str) and value.startswith(run_dir))
    }
    if print_sweep_job_changes(own, saved):
        return
    changed = {key: value for key, value in own.items() if key not in default or default[key] != value}
    tree = Tree(
        f"config: {len(changed)} values differ from configs/train.yaml's defaults; all of it: {saved}"
    )
    branches: dict[str, Tree] = {}
    for key, value in changed.items():
        group, _, rest = key.partition(".")
        if not rest:
            tree.add(f"{key}: [bold]{value}[/]")
            continue
        if group not in branches:
            branches[group] = tree.add(f"[bold]{group}")
        was = f"  [dim](default {default[key]})[/]" if key in default else ""
        branches[group].add(f"{rest}: [bold]{value}[/]{was}")
    Console().print(tree)


# The first job of each sweep this process runs, with its config: (sweep dir) -> (job number, config).
_SWEEP_FIRST_JOB: dict[str, tuple[int, dict]] = {}


def print_sweep_job_changes(config: dict, saved: Path) -> bool:
    """In a multirun, every job after the first prints only what differs from that job's config (a k-fold
    sweep's jobs differ in one value, and the whole tree each time would bury it). Returns whether it
    printed: not for a single run, nor for a sweep's first job here, which prints the whole tree."""
    if not in_multirun():
        return False
    hydra = HydraConfig.get()
    job = int(hydra.job.num)
    first, first_config = _SWEEP_FIRST_JOB.setdefault(str(hydra.sweep.dir), (job, config))
    if first == job:
        return False
    keys = [k for k in sorted(config.keys() | first_config.keys()) if config.get(k) != first_config.get(k)]
    console = Console()
    console.print(f"config: as job {first}'s except {len(keys)} values; all of it: {saved}")
    for key in keys:
        was = first_config.get(key, "(unset)")
        console.print(f"  {key}: [bold]{config.get(key, '(unset)')}[/]  [dim](job {first}: {was})[/]")
    return True


@rank_zero_only
def summarize_run(cfg: DictConfig, trainer: Trainer, metrics: dict, board: Path | None) -> None:
    """Where the run is, its best checkpoint and metrics, where it reached its target (callbacks.
    stop_at_target), and how to look at it: on the console and in ``<task>.log``; the step, the metrics
    and the target (and :class:`RunTimes`' ``times``) also in ``run_summary.json``, for scripts
    (``target``: null when none was set; its ``reached``: null when the run ended short of it)."""
    lines = [f"run: {cfg.paths.output_dir}"]
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        score = checkpoint.best_model_score
        scored = f" ({checkpoint.monitor} {float(score):.4f})" if score is not None else ""
        lines.append(f"best checkpoint: {checkpoint.best_model_path}{scored}")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        lines.append(f"last checkpoint: {last} (step {trainer.global_step})")
    for stage in ("val", "test", "baseline"):
        values = {k: float(v) for k, v in metrics.items() if k.startswith(f"{stage}/")}
        if values:
            lines.append(f"{stage}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())))
    # callbacks that report in the summary (RunTimes' times, StopAtTarget's target): (key, line, record)
    entries = {"target": None, "times": None}
    for callback in trainer.callbacks:
        if hasattr(callback, "summary_entry"):
            key, line, record = callback.summary_entry()
            entries[key] = record
            if line:
                lines.append(line)
    if board is not None:
        root = Path(cfg.paths.log_dir) / BOARD_DIR
        lines.append(f"tensorboard --logdir {root}   (this run: {board.relative_to(root)})")
    for line in lines:
        log.info(line)
    summary = {
        "run": str(cfg.paths.output_dir),
        "step": trainer.global_step,
        "metrics": {
            k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/", "baseline/"))
        },
        **entries,
    }
    Path(cfg.paths.output_dir, SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
