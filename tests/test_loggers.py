"""logger=mlflow and logger=wandb (through logger=many_loggers): the same hyperparameters, metrics and
checkpoint path as the run's TensorBoard logs and config, read back from each logger's own files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.train import train
from tests.conftest import CHINESE, ENGLISH, TINY_OVERRIDES, compose_config, latest

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny run with every logger; its run directory and log directory."""
    out = tmp_path_factory.mktemp("loggers")
    corpus = out / "corpus.txt"
    corpus.write_text((ENGLISH + CHINESE) * 30, encoding="utf-8")
    cfg = compose_config(
        out, "logger=many_loggers", "debug=limit", "trainer.max_steps=4", "trainer.val_check_interval=2",
        f"data.path={corpus}", *TINY_OVERRIDES, "callbacks.text_sampler=null",
    )  # fmt: skip
    train(cfg)
    wandb.finish()  # what the end of the process would do
    return Path(cfg.paths.output_dir), Path(cfg.paths.log_dir)


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    items = {}
    for key, value in tree.items():
        items |= flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return items


def test_mlflow_store_has_the_run_with_its_params_metrics_and_checkpoint(logged_run):
    run_dir, log_dir = logged_run
    client = mlflow.tracking.MlflowClient(f"sqlite:///{log_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    assert run.data.tags["run_dir"] == str(run_dir)
    config = flat(yaml.safe_load((run_dir / "config_resolved.yaml").read_text()))
    for key in (
        "model/optimizer/lr",
        "model/backbone/n_embd",
        "data/batch_size",
        "seed",
        "trainer/max_steps",
    ):
        assert run.data.params[key.replace("/", ".")] == str(config[key])
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    assert run.data.params["checkpoint"] == str(best)
    events = EventAccumulator(str(run_dir / "tensorboard"), purge_orphaned_data=False)
    events.Reload()
    for metric in ("val/loss", "test/loss", "best/val/loss"):
        assert run.data.metrics[metric] == pytest.approx(latest(events, metric), rel=1e-6)
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in history] == [e.step for e in events.Scalars("val/loss")]


def test_wandb_offline_run_is_written_in_the_run_directory(logged_run):
    run_dir, _ = logged_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    # W&B's record file (protobuf records; `wandb sync` uploads it): it starts with W&B's magic, and holds
    # the config (as JSON text), the checkpoint path and the logged metrics
    data = records.read_bytes()
    assert data.startswith(b":W&B")
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    assert b'"' + str(best).encode() + b'"' in data
    assert b"model.optimizer.lr" in data and b"model.backbone.n_embd" in data  # the flattened config
    for metric in (b"val/loss", b"test/loss", b"best/val/loss"):
        assert metric in data
