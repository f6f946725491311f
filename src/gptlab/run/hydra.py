"""Hydra helpers shared by the entry points: the config directory, composing, instantiating groups, sweeps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab import CONFIG_DIR
from gptlab.run import resolvers  # noqa: F401 -- the configs need them
from gptlab.run.board import in_multirun
from gptlab.run.lightning_private import relaunches_command_line
from gptlab.run.record import keep_run_log

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


class RunStopped(RuntimeError):
    """A run that cannot go on for a reason its message names with the fix: a single run stops with that
    one line (no traceback); a sweep records the job as failed with it."""


class FailedJob(float):
    """What a failed sweep job returns: NaN (a failed Optuna trial), carrying the error's message for the
    sweep's summary."""

    error: str

    def __new__(cls, error: str) -> FailedJob:
        job = super().__new__(cls, float("nan"))
        job.error = error
        return job

    def __reduce__(self) -> tuple:  # a job run elsewhere (submitit) comes back pickled
        return FailedJob, (self.error,)


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
        except RunStopped as err:
            log.error(f"job failed; the sweep goes on: {err}")
            return FailedJob(str(err))
        except Exception as err:
            if is_pruned(err):
                raise  # Hydra keeps it as the job's result: the sweeper records the trial as pruned
            keep_run_log(cfg)
            log.exception("job failed; the sweep goes on")
            if isinstance(err, InstantiationException) and err.__cause__ is not None:
                err = err.__cause__  # the constructor's own error, without Hydra's wrapping
            return FailedJob(f"{type(err).__name__}: {err}")
    try:
        return task(cfg)
    except RunStopped as err:
        log.error(f"error: {err}")  # in <task>.log too, when the run got that far
        sys.exit(1)
    except Exception:
        keep_run_log(cfg)
        raise


def is_pruned(error: object) -> bool:
    """Whether a job was stopped by an Optuna pruner (only sweeps that prune import optuna)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)


# What a command-line choice needs that gptlab's base install lacks: (module, extra that installs it).
OPTIONAL_PACKAGES = {
    ("hparams_search=", "hydra/sweeper=gptlab_optuna"): [
        ("optuna", "sweep"),
        ("hydra_plugins.hydra_joblib_launcher", "sweep"),
    ],
    ("hydra/launcher=slurm",): [("hydra_plugins.hydra_submitit_launcher", "sweep")],
    ("hydra/launcher=parallel", "hydra/launcher=joblib"): [("hydra_plugins.hydra_joblib_launcher", "sweep")],
    ("logger=mlflow",): [("mlflow", "mlflow")],
    ("logger=wandb",): [("wandb", "wandb")],
    ("logger=many_loggers",): [("mlflow", "mlflow"), ("wandb", "wandb")],
}


def multirun_flag_first(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``-m``/``--multirun`` moved to the front: Hydra's parser takes the flag only before the
    overrides and stops ``experiment=x -m data.fold=0,1`` with "unrecognized arguments"."""
    flags = [arg for arg in argv if arg in ("-m", "--multirun")]
    return flags + [arg for arg in argv if arg not in ("-m", "--multirun")]


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


def refuse_unknown_settings(argv: Sequence[str], config_name: str) -> None:
    """Stop when the command line names a top-level setting ``configs/<config_name>.yaml`` does not have:
    Hydra would refuse ``top_p=0.9`` and suggest ``+top_p=0.9``, which it then accepts and nothing reads."""
    known = settings_of(config_name)
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else ""
        top = key.split(".")[0].split("/")[0]
        if top and top != "hydra" and top not in known:
            sys.exit(
                f"error: gptlab-{config_name} has no setting '{key}' (in '{arg}'); its settings are "
                f"{', '.join(sorted(known))}. Check the spelling; gptlab-{config_name} --help shows them."
            )


def settings_of(config_name: str) -> set[str]:
    """The top-level keys and config groups of ``configs/<config_name>.yaml``."""
    config = OmegaConf.load(Path(check_config_dir()) / f"{config_name}.yaml")
    groups = [next(iter(entry)) for entry in config.get("defaults", []) if not isinstance(entry, str)]
    groups = {g.split(" ")[-1].split("/")[0] for g in groups} - {"hydra"}  # "optional local", "override ..."
    return {str(key) for key in config if key not in ("defaults", "hydra")} | groups


def check_device(device: str) -> None:
    """Refuse a CUDA device that this torch cannot use, before a checkpoint is mapped onto it."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"device={device}, but torch {torch.__version__} ({build}) finds no CUDA GPU; use device=cpu, "
            "or install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
