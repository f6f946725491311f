"""Small helpers shared by the entry points."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning import Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from gptlab import CONFIG_DIR, PROJECT_ROOT

log = logging.getLogger(__name__)


def check_config_dir() -> str:
    """The configs/ directory, or an error saying how to point at it."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"gptlab's configs were not found at {CONFIG_DIR}. Install gptlab editable from its checkout "
            "(`pip install -e .`) or set GPTLAB_ROOT to the checkout's path."
        )
    return str(CONFIG_DIR)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate each entry of a config group like callbacks/ or logger/ (null entries are off)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def log_config(cfg: DictConfig, loggers: list[Logger], **extra: dict) -> None:
    """Record the whole resolved config, and ``extra`` groups of values, as the run's hyperparameters."""
    params = OmegaConf.to_container(cfg, resolve=True) | extra
    for logger in loggers:
        logger.log_hyperparams(params)


def compose_config(*overrides: str, config_name: str = "train", keep_hydra: bool = False) -> DictConfig:
    """Compose a config from Python (tests, notebooks, benchmarks) as a command line would.

    Hydra's run-time values (``${hydra:...}``) resolve as in a real run; override ``paths.output_dir``
    to send outputs elsewhere.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=check_config_dir()):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    GlobalHydra.instance().clear()
    if not keep_hydra:
        with open_dict(cfg):
            del cfg.hydra  # a task function never sees the hydra node
    return cfg


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


class SweepSetupError(RuntimeError):
    """A multirun that cannot work at all: it stops at the first job instead of failing every job."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def refuse_script_launcher_in_sweep(trainer: Trainer) -> None:
    """Lightning's ``ddp`` strategy starts the other ranks by running this command line again, which in a
    Hydra multirun would start the whole sweep again in every rank."""
    if in_multirun() and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise SweepSetupError(
            "trainer.strategy=ddp relaunches the command line once per device, which a Hydra multirun (-m) "
            "cannot do. In a sweep use trainer=ddp_spawn (or trainer=ddp_sim on CPU), or "
            "hydra/launcher=slurm to give each job its own GPUs; or run each configuration as its own "
            "gptlab-train command."
        )


def send_lightning_logs_to_hydra() -> None:
    """Lightning gives its loggers a console handler of their own when imported, before Hydra sets up
    logging, so its messages (``rank_zero_info`` included) would never reach the run's ``<task>.log``."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def run_task(task: Callable[[DictConfig], float | None], cfg: DictConfig) -> float | None:
    """Run an entry point's task, its messages logged to the console and the run's log file. In a
    multirun, a failed job is logged and returns NaN, so the sweep records it as failed and goes on; a
    single run raises as usual."""
    send_lightning_logs_to_hydra()
    if in_multirun():
        try:
            return task(cfg)
        except SweepSetupError as err:
            sys.exit(f"error: {err}")  # Hydra would record the job as failed and start the next one
        except Exception:
            log.exception("job failed; the sweep goes on")
            return float("nan")
    return task(cfg)


def require_sweep_plugins(argv: Sequence[str]) -> None:
    """Stop with install instructions when the command line asks for a sweeper or launcher plugin
    that is not installed (Hydra would only say that it cannot find the config)."""
    wanted = {
        "hydra_plugins.hydra_optuna_sweeper": ("hparams_search=", "hydra/sweeper=optuna"),
        "hydra_plugins.hydra_submitit_launcher": ("hydra/launcher=",),
    }
    for module, prefixes in wanted.items():
        if any(arg.startswith(prefixes) for arg in argv) and find_spec(module) is None:
            sys.exit(
                f"this command needs the Hydra plugin '{module.split('.')[-1]}', which is not installed; "
                "install gptlab's sweep extra: pip install -e '.[sweep]'"
            )
