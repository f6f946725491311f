"""Small helpers shared by the entry points."""

from __future__ import annotations

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from gptlab import CONFIG_DIR


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


def log_config(cfg: DictConfig, loggers: list[Logger]) -> None:
    """Record the whole resolved config as the run's hyperparameters."""
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(params)
