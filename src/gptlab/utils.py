"""Small helpers shared by the entry points."""

from __future__ import annotations

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

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


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """Compose a config from Python (tests, notebooks, benchmarks) as a command line would.

    Hydra's run-time values (``${hydra:...}``) resolve as in a real run; override ``paths.output_dir``
    to send outputs elsewhere.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=check_config_dir()):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        del cfg.hydra  # a task function never sees the hydra node
    return cfg
