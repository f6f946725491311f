"""Hydra multiruns: basic and Optuna sweeps, their summary, and what TensorBoard gets from each job."""

from __future__ import annotations

import json
import logging
import math
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.run.hydra import require_optional_packages
from tests.conftest import TINY_OVERRIDES, hparams_tab


def sweep_command(tmp_path: Path, corpus: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "gptlab.train", "-m", "debug=limit", "trainer.max_steps=6",
        "trainer.val_check_interval=3", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *overrides,
    ]  # fmt: skip


def run_sweep(tmp_path: Path, corpus: Path, *overrides: str) -> tuple[Path, dict]:
    command = sweep_command(tmp_path, corpus, *overrides)
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


def test_seeds_are_grouped_into_configurations_with_statistics_and_a_baseline(tmp_path, corpus):
    command = sweep_command(
        tmp_path, corpus, "seed=1,2", "model.optimizer.lr=1e-3,3e-3", "test=false",
        'hydra.callbacks.sweep_summary.baseline="model.optimizer.lr=1e-3"',
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "debug" / "multiruns").iterdir()
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    # each job's own record, read back from its directory
    losses: dict[str, list[float]] = {}
    for result in sorted(sweep_dir.glob("*/job_result.json"), key=lambda p: int(p.parent.name)):
        job = json.loads(result.read_text())
        lr = next(o for o in job["overrides"] if o.startswith("model.optimizer.lr="))
        assert job["metrics"]["val/loss"] == job["metric"] and job["started"] < job["ended"]
        # the jobs share a process, but each one's times count from its own start
        times = json.loads((result.parent / "run_summary.json").read_text())["times"]
        assert 0 < times["first_step_s"] < times["wall_s"] <= job["ended"] - job["started"]
        losses.setdefault(lr, []).append(job["metrics"]["val/loss"])
    assert summary["repeat"] == ["seed", "data.fold"]
    assert summary["baseline"] == "model.optimizer.lr=0.001" and summary["baseline_error"] is None
    configs = {c["name"]: c for c in summary["configurations"]}
    assert sorted(configs) == sorted(losses) and all(len(v) == 2 for v in losses.values())
    for name, values in losses.items():
        stats = configs[name]["metrics"]["val/loss"]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(statistics.mean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
        half = 12.706 * statistics.stdev(values) / 2**0.5  # t_0.975 with 1 degree of freedom
        assert stats["ci95"] == pytest.approx(
            [statistics.mean(values) - half, statistics.mean(values) + half]
        )
    base, other = losses["model.optimizer.lr=0.001"], losses["model.optimizer.lr=0.003"]
    diff = configs["model.optimizer.lr=0.003"]["metrics"]["val/loss"]["diff"]
    assert diff["mean"] == pytest.approx(statistics.mean(other) - statistics.mean(base))
    assert configs["model.optimizer.lr=0.001"]["baseline"]
    assert "configurations (repeats: seed, data.fold)" in done.stdout and "Δ baseline" in done.stdout
    # the first job prints its config tree, the others only what differs from it
    assert done.stdout.count("values differ from configs/train.yaml's defaults") == 1
    assert done.stdout.count("config: as job 0's except") == 3
    assert "model.optimizer.lr: 0.003  (job 0: 0.001)" in done.stdout
    assert "s after the job started" in done.stdout and "after the process started" not in done.stdout
    assert (sweep_dir / "sweep_summary.png").read_bytes()[:4] == b"\x89PNG"


def test_optuna_trials_run_in_parallel_with_n_jobs(tmp_path, corpus):
    pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    _, summary = run_sweep(
        tmp_path, corpus, "hparams_search=shakespeare_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", "trainer.max_steps=30", "trainer.val_check_interval=15",
    )  # fmt: skip
    assert [job["status"] for job in summary["jobs"]] == ["completed", "completed"]
    first, second = (
        json.loads((Path(job["dir"]) / "job_result.json").read_text()) for job in summary["jobs"]
    )
    # each started before the other ended: they ran at the same time
    assert max(first["started"], second["started"]) < min(first["ended"], second["ended"])


def test_n_jobs_with_the_sequential_launcher_warns(caplog):
    pytest.importorskip("optuna")
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from hydra_plugins.gptlab_optuna_sweeper.optuna_sweeper import warn_if_sequential

    with caplog.at_level(logging.WARNING):
        warn_if_sequential(BasicLauncher(), n_jobs=2)
        warn_if_sequential(BasicLauncher(), n_jobs=1)
    assert caplog.messages == [
        "warning: hydra.sweeper.n_jobs=2, but hydra/launcher=basic runs trials one after another; "
        "hydra/launcher=parallel (the search configs' default) runs them at once"
    ]


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
    assert failed["error"].startswith("ValueError: n_embd=33 is not divisible by n_head=2")
    assert "n_embd=33 is not divisible by n_head=2" in (Path(failed["dir"]) / "debug.log").read_text()


def test_optuna_sweep_with_two_trials(tmp_path, corpus):
    pytest.importorskip("optuna")
    # The search's own space (log-scale lr, dropout; width and depth are fixed by the tiny overrides).
    sweep_dir, summary = run_sweep(
        tmp_path, corpus, "hparams_search=shakespeare_optuna", "hydra.sweeper.n_trials=2"
    )
    assert sweep_dir.name == "shakespeare_char"  # named after the study, so the same command resumes it
    assert len(summary["jobs"]) == 2 and summary["metric"] == "val/loss"
    assert all(math.isfinite(job["metric"]) for job in summary["jobs"])
    optuna = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_value: {summary['best']['metric']}" in optuna
    for plot in ("history", "importances", "parallel_coordinate"):
        assert (sweep_dir / f"optuna_{plot}.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(sweep_dir / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["images"]) == {
        "optuna/history",
        "optuna/importances",
        "optuna/parallel_coordinate",
    }


def study_trials(sweep_dir: Path, name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials


@pytest.mark.slow
def test_an_interrupted_optuna_sweep_resumes_where_it_stopped(tmp_path, corpus):
    optuna = pytest.importorskip("optuna")
    command = sweep_command(
        tmp_path, corpus, "hparams_search=shakespeare_optuna", "hydra.sweeper.n_trials=6", "test=false"
    )
    sweep_dir = tmp_path / "debug" / "multiruns" / "shakespeare_char"
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (sweep_dir / "3").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # a crash or a pre-emption: nothing is cleaned up
    first.wait()
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/job_result.json")}
    assert sorted(finished_before) == ["0", "1", "2"]
    assert [t.state for t in study_trials(sweep_dir, "shakespeare_char")][
        3
    ] == optuna.trial.TrialState.RUNNING

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_trials(sweep_dir, "shakespeare_char")
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL"] + ["COMPLETE"] * 3  # 6 finished; the interrupted one failed
    retry = trials[4]
    assert retry.user_attrs["retry_of"] == 3 and retry.params == trials[3].params  # run again, same values
    # the first three trials were not run again
    after = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/job_result.json")}
    assert sorted(after) == ["0", "1", "2", "4", "5", "6"]
    assert {n: after[n] for n in finished_before} == finished_before
    assert not any(sweep_dir.glob("[0-2]/config_resolved.1.yaml"))
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [(j["job"], j["status"]) for j in summary["jobs"]] == [
        (n, "completed") for n in (0, 1, 2, 4, 5, 6)
    ]

    other = sweep_command(tmp_path, corpus, "hparams_search=shakespeare_optuna", "hydra.sweeper.n_trials=6")
    refused = subprocess.run(other, capture_output=True, text=True, timeout=600)  # without test=false
    assert refused.returncode != 0 and "hydra.sweeper.study_name=<new name>" in refused.stderr
    assert len(study_trials(sweep_dir, "shakespeare_char")) == 7


def test_a_trial_with_a_bad_learning_rate_is_pruned(tmp_path, corpus):
    optuna = pytest.importorskip("optuna")
    sweep_dir = tmp_path / "debug" / "multiruns" / "lr"
    sweep_dir.mkdir(parents=True)
    # Optuna runs queued trials first: two good learning rates, then one that makes the loss explode.
    study = optuna.create_study(study_name="lr", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    for lr in (3e-3, 2e-3, 30.0):
        study.enqueue_trial({"model.optimizer.lr": lr})
    _, summary = run_sweep(
        tmp_path, corpus, "hparams_search=optuna", "hydra.sweeper.study_name=lr", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.n_startup_trials=2", "model.optimizer.lr=tag(log, interval(1e-4, 100))",
    )  # fmt: skip
    assert [job["status"] for job in summary["jobs"]] == ["completed", "completed", "pruned"]
    pruned = summary["jobs"][2]
    assert pruned["metric"] is None and pruned["error"] is None and summary["best"]["job"] in (0, 1)
    trials = study_trials(sweep_dir, "lr")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    # stopped at its first validation (step 3 of 6), worse than the median of the others there
    assert list(trials[2].intermediate_values) == [3]
    assert trials[2].intermediate_values[3] > max(t.intermediate_values[3] for t in trials[:2])
    assert list(trials[0].intermediate_values) == [3, 6]
    assert "trial 2 pruned at step 3" in (Path(pruned["dir"]) / "debug.log").read_text()


def test_asking_for_optuna_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr("gptlab.run.hydra.find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"needs 'optuna'.*pip install -e '\.\[sweep\]'"):
        require_optional_packages(["-m", "hparams_search=shakespeare_optuna"])
    with pytest.raises(SystemExit, match=r"needs 'mlflow'.*pip install -e '\.\[mlflow\]'"):
        require_optional_packages(["logger=mlflow"])
    with pytest.raises(SystemExit, match=r"needs 'wandb'.*pip install -e '\.\[wandb\]'"):
        require_optional_packages(["logger=wandb"])
    with pytest.raises(SystemExit, match=r"needs 'hydra_joblib_launcher'.*pip install -e '\.\[sweep\]'"):
        require_optional_packages(["-m", "hydra/launcher=parallel", "seed=1,2"])
    require_optional_packages(["-m", "model.optimizer.lr=1e-3,3e-4"])  # the basic sweeper needs nothing


@pytest.mark.slow
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
