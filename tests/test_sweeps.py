"""Hydra multiruns: basic and Optuna sweeps, their summary, and what TensorBoard gets from each job."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.run.hydra import require_sweep_plugins
from tests.conftest import TINY_OVERRIDES, hparams_tab

pytestmark = pytest.mark.slow


def run_sweep(tmp_path: Path, corpus: Path, *overrides: str) -> tuple[Path, dict]:
    command = [
        sys.executable, "-m", "gptlab.train", "-m", "debug=limit", "trainer.max_steps=6",
        "trainer.val_check_interval=3", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *overrides,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "debug" / "multiruns").iterdir()
    return sweep_dir, json.loads((sweep_dir / "sweep_summary.json").read_text())


def test_basic_sweep_runs_every_combination(tmp_path, corpus):
    sweep_dir, summary = run_sweep(
        tmp_path,
        corpus,
        "model.optimizer.lr=1e-3,3e-3",
        "data.batch_size=2,4",
        "model.backbone.dropout=0.0,0.5",
    )
    assert [job["job"] for job in summary["jobs"]] == list(range(8))
    assert all(job["status"] == "completed" for job in summary["jobs"])
    swept = {
        tuple(o for o in job["overrides"] if o.split("=")[0] in {"data.batch_size"})
        for job in summary["jobs"]
    }
    assert swept == {("data.batch_size=2",), ("data.batch_size=4",)}
    best = min(summary["jobs"], key=lambda job: job["metric"])
    assert summary["best"] == best and summary["mode"] == "min"
    for job in summary["jobs"]:
        job_dir = sweep_dir / str(job["job"])
        assert (job_dir / "config_resolved.yaml").is_file() and (
            job_dir / ".hydra" / "overrides.yaml"
        ).is_file()
        events = EventAccumulator(str(job_dir / "tensorboard"), purge_orphaned_data=False)
        events.Reload()
        assert "hp_metric" not in events.Tags()["scalars"]
        assert events.Scalars("val/loss")[-1].value == pytest.approx(job["metric"], rel=1e-5)
        resolved = (job_dir / "config_resolved.yaml").read_text()
        assert "git_commit:" in resolved and "${" not in resolved


def test_tensorboard_compares_the_jobs_of_a_sweep_by_what_they_changed(tmp_path, corpus):
    sweep_dir, summary = run_sweep(tmp_path, corpus, "model.optimizer.lr=1e-3,3e-3")
    board = tmp_path / "tensorboard"
    assert sorted(p.name for p in (board / sweep_dir.name).iterdir()) == ["lr=0.001", "lr=0.003"]
    experiment, groups = hparams_tab(board)
    hparams = experiment["hparamInfos"]
    assert hparams[0]["name"] == "model.optimizer.lr"  # the swept key comes first...
    assert [h["name"] for h in hparams if h.get("differs")] == [
        "model.optimizer.lr"
    ]  # ...and only it differs
    assert {"batch.tokens_per_step", "model.parameters", "model.backbone.n_embd"} <= {
        h["name"] for h in hparams
    }
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"val/loss", "val/ppl", "test/loss", "best/val/loss"} <= metrics and "hp_metric" not in metrics
    assert len(groups) == 2
    by_lr = {group["hparams"]["model.optimizer.lr"]: group for group in groups}
    for job in summary["jobs"]:
        lr = float(next(o for o in job["overrides"] if o.startswith("model.optimizer.lr=")).split("=")[1])
        values = {m["name"]["tag"]: m["value"] for m in by_lr[lr]["sessions"][0]["metricValues"]}
        assert values["val/loss"] == pytest.approx(job["metric"], rel=1e-5)


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, corpus):
    # n_embd=33 is not divisible by n_head=2: that job fails when its model is built.
    _, summary = run_sweep(tmp_path, corpus, "model.backbone.n_embd=32,33")
    width = {
        job["job"]: next(o for o in job["overrides"] if o.startswith("model.backbone.n_embd="))
        for job in summary["jobs"]
    }
    statuses = {width[job["job"]]: job["status"] for job in summary["jobs"]}
    assert statuses == {"model.backbone.n_embd=32": "completed", "model.backbone.n_embd=33": "failed"}
    failed = next(job for job in summary["jobs"] if job["status"] == "failed")
    assert failed["metric"] is None
    assert "n_embd=33 is not divisible by n_head=2" in failed["error"]
    assert "n_embd=33 is not divisible by n_head=2" in (Path(failed["dir"]) / "debug.log").read_text()


def test_optuna_sweep_with_two_trials(tmp_path, corpus):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    # The search's own space (width, depth, dropout, log-scale lr) on top of the tiny overrides.
    sweep_dir, summary = run_sweep(
        tmp_path, corpus, "hparams_search=shakespeare_optuna", "hydra.sweeper.n_trials=2"
    )
    assert len(summary["jobs"]) == 2 and summary["metric"] == "val/loss"
    assert all(math.isfinite(job["metric"]) for job in summary["jobs"])
    optuna = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_value: {summary['best']['metric']}" in optuna


def test_asking_for_optuna_without_the_plugin_says_how_to_install(monkeypatch):
    monkeypatch.setattr("gptlab.run.hydra.find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[sweep\]'"):
        require_sweep_plugins(["-m", "hparams_search=shakespeare_optuna"])
    require_sweep_plugins(["-m", "model.optimizer.lr=1e-3,3e-4"])  # the basic sweeper needs nothing


def test_a_sweep_of_spawned_ddp_jobs_works(tmp_path, corpus):
    _, summary = run_sweep(tmp_path, corpus, "trainer=ddp_sim", "seed=1,2")
    assert [job["status"] for job in summary["jobs"]] == ["completed", "completed"]
    assert all(0 < job["metric"] < 10 for job in summary["jobs"])


def test_a_sweep_with_the_relaunching_ddp_strategy_stops_at_once(tmp_path, corpus):
    command = [
        sys.executable, "-m", "gptlab.train", "-m", "debug=fdr", f"data.path={corpus}",
        f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.precision=32-true", "seed=1,2,3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "trainer=ddp_spawn" in done.stderr and "relaunches the command line" in done.stderr
    (sweep_dir,) = (tmp_path / "debug" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0"]  # no job after the first
    assert not (tmp_path / "cache").exists()  # stopped before preparing any data
