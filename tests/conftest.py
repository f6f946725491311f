"""Shared fixtures: a small corpus written per test and a composer for the real Hydra configs."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

# Tiny models run fastest on one thread, and a second thread per process only adds contention on a
# 2-core machine (the DDP and CLI subprocesses inherit this too). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from omegaconf import DictConfig

from gptlab.run import hydra as run_hydra

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


def compose_config(out_dir: Path, *overrides: str, **options) -> DictConfig:
    """Compose configs/<config_name>.yaml as a run would see it, with outputs and caches in out_dir."""
    paths = [
        f"paths.output_dir={out_dir / 'run'}",
        f"paths.log_dir={out_dir / 'logs'}",
        f"paths.cache_dir={out_dir / 'cache'}",
    ]
    return run_hydra.compose_config(*paths, *overrides, **options)


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config with overrides, writing outputs and caches under tmp_path."""
    return functools.partial(compose_config, tmp_path)


def latest(events, tag: str) -> float:
    """The value TensorBoard shows for a scalar: the one written last (a run's fit and test stages
    write separate event files, which a reader may return in either order)."""
    return max(events.Scalars(tag), key=lambda event: event.wall_time).value


def hparams_tab(logdir: Path) -> tuple[dict, list[dict]]:
    """What TensorBoard's HPARAMS tab shows for ``logdir``, read through the hparams plugin's own HTTP
    routes: the experiment (hyperparameter and metric infos, as TensorBoard orders them) and the session
    groups (one per run, with its hyperparameters and final metric values)."""
    import json

    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug import test, wrappers

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    routes = hparams_plugin.HParamsPlugin(context).get_plugin_apps()

    def post(route: str, body: dict) -> dict:
        response = test.Client(routes[route], wrappers.Response).post(route, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data())

    experiment = post("/experiment", {"experimentName": "", "includeMetrics": True})
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    groups = post(
        "/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": statuses,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )
    return experiment, groups.get("sessionGroups", [])
