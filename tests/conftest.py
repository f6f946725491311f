"""Shared fixtures: a small corpus written per test and a composer for the real Hydra configs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gptlab import CONFIG_DIR

ENGLISH = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
)
CHINESE = (
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n"
)

# Small enough to run in seconds on 2 cores.
TINY_OVERRIDES = [
    "model.backbone.n_layer=2",
    "model.backbone.n_head=2",
    "model.backbone.n_embd=32",
    "model.backbone.block_size=16",
    "data.batch_size=4",
    "callbacks.rich_progress_bar=null",
    "callbacks.text_sampler.max_new_tokens=20",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text((ENGLISH + CHINESE) * 30, encoding="utf-8")
    return path


def compose_config(out_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """Compose configs/<config_name>.yaml as a run would see it, with outputs and caches in out_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / "run")
        cfg.paths.log_dir = str(out_dir / "logs")
        cfg.paths.cache_dir = str(out_dir / "cache")
        del cfg.hydra  # as inside a real run: the task function never sees the hydra node
    return cfg


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config with overrides, writing outputs and caches under tmp_path."""
    return functools.partial(compose_config, tmp_path)
