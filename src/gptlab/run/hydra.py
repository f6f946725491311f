"""Hydra helpers shared by the entry points: the config directory, composing, instantiating groups, sweeps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning import Trainer
from omegaconf import DictConfig, open_dict

from gptlab import CONFIG_DIR
from gptlab.run.lightning_private import relaunches_command_line

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


class SweepSetupError(RuntimeError):
    """A multirun that cannot work at all: it stops at the first job instead of failing every job."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def refuse_script_launcher_in_sweep(trainer: Trainer) -> None:
    """Lightning's ``ddp`` strategy starts the other ranks by running this command line again, which in a
    Hydra multirun would start the whole sweep again in every rank."""
    if in_multirun() and relaunches_command_line(trainer.strategy):
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
        except Exception as err:
            if is_pruned(err):
                raise  # Hydra keeps it as the job's result: the sweeper records the trial as pruned
            log.exception("job failed; the sweep goes on")
            return float("nan")
    return task(cfg)


def is_pruned(error: object) -> bool:
    """Whether a job was stopped by an Optuna pruner (only sweeps that prune import optuna)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)


# What a command-line choice needs that gptlab's base install lacks: (module, extra that installs it).
OPTIONAL_PACKAGES = {
    ("hparams_search=", "hydra/sweeper=gptlab_optuna"): [("optuna", "sweep")],
    ("hydra/launcher=",): [("hydra_plugins.hydra_submitit_launcher", "sweep")],
    ("logger=mlflow",): [("mlflow", "mlflow")],
    ("logger=wandb",): [("wandb", "wandb")],
    ("logger=many_loggers",): [("mlflow", "mlflow"), ("wandb", "wandb")],
}


def require_optional_packages(argv: Sequence[str]) -> None:
    """Stop with install instructions when the command line asks for a sweeper, launcher or logger whose
    package is not installed (Hydra or Lightning would fail later, with less to go on)."""
    for prefixes, needs in OPTIONAL_PACKAGES.items():
        for module, extra in needs:
            if any(arg.startswith(prefixes) for arg in argv) and find_spec(module) is None:
                sys.exit(
                    f"error: this command needs '{module.split('.')[-1]}', which is not installed; install "
                    f"gptlab's {extra} extra: pip install -e '.[{extra}]'"
                )
