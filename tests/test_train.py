"""End to end: train() on CPU, checkpoints, TensorBoard logs, and sampling from a checkpoint alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab import CONFIG_DIR
from gptlab.generate import generate
from gptlab.run.hydra import RunStopped, run_task
from gptlab.tasks.registry import load_module
from gptlab.train import train
from tests.conftest import CHINESE, ENGLISH, TINY_OVERRIDES, compose_config, hparams_tab, latest


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, float]:
    """One short real run shared by the tests below: 40 steps, validation every 10."""
    out = tmp_path_factory.mktemp("run")
    corpus = out / "corpus.txt"
    corpus.write_text((ENGLISH + CHINESE) * 30, encoding="utf-8")
    (out / "poem.txt").write_text(CHINESE * 4, encoding="utf-8")
    task = out / "task.jsonl"
    item = {"context": "All:\n", "choices": ["Speak, speak.\n", "First Citizen:\n"], "label": 0}
    task.write_text(json.dumps(item) + "\n", encoding="utf-8")
    cfg = compose_config(
        out,
        f"data.path={corpus}",
        f"data.eval_sets={{poem: {out / 'poem.txt'}}}",
        f"callbacks.choice_eval.path={task}",
        "optimized_metric=val/bpb",
        *TINY_OVERRIDES,
        "trainer.max_steps=40",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=5",
        "model.optimizer.lr=3e-3",
        "model.scheduler.warmup_steps=5",
        "callbacks.throughput.peak_flops=1e11",
        "callbacks.throughput.window_size=5",
        "callbacks.text_sampler.every_n_validations=3",
    )
    metric = train(cfg)
    return Path(cfg.paths.output_dir), metric


def test_run_writes_best_and_last_checkpoints(trained_run):
    run_dir, metric = trained_run
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names[-1] == "last.ckpt" and names[0].startswith("best-step")
    assert 0 < metric < 4.0


def test_checkpoint_loads_with_weights_only_and_is_self_contained(trained_run):
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 40
    assert checkpoint["hyper_parameters"]["backbone"]["n_layer"] == 2
    model = load_module(run_dir / "checkpoints" / "last.ckpt")
    assert model.tokenizer.vocab_size == checkpoint["hyper_parameters"]["vocab_size"]
    assert model.tokenizer.decode(model.tokenizer.encode(CHINESE)) == CHINESE
    torch.testing.assert_close(
        model.state_dict()["backbone.wte.weight"], checkpoint["state_dict"]["backbone.wte.weight"]
    )


def test_tensorboard_has_scalars_samples_and_resolved_hparams(trained_run):
    run_dir, metric = trained_run
    events = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0}, purge_orphaned_data=False
    )
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # the curated set: no hp_metric placeholder, no epoch, one lr curve, no raw throughput counters
    evaluation = {"val/bpb", "test/bpb", "val/poem/loss", "val/poem/bpb", "test/poem/loss", "test/poem/bpb"}
    evaluation |= {"val/choice/acc", "val/choice/acc_norm", "test/choice/acc", "test/choice/acc_norm"}
    assert scalars == evaluation | {
        "train/loss", "train/lr", "train/grad_norm", "train/memory_gb", "train/tokens_per_s", "train/mfu",
        "val/loss", "val/ppl", "test/loss", "best/val/loss",
    }  # fmt: skip
    assert latest(events, "val/choice/acc") in (0.0, 1.0)
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))
    tokens_per_s = latest(events, "train/tokens_per_s")
    model = load_module(run_dir / "checkpoints" / "last.ckpt")
    flops_per_s = latest(events, "train/mfu") * 1e11  # callbacks.throughput.peak_flops=1e11
    assert flops_per_s / tokens_per_s == pytest.approx(model.backbone.flops_per_token(), rel=1e-3)
    val = [e.value for e in events.Scalars("val/loss")]
    assert len(val) == 4 and val[-1] < val[0]  # it learns
    ppl = [e.value for e in events.Scalars("val/ppl")]
    assert ppl[-1] == pytest.approx(float(torch.tensor(val[-1]).exp()), rel=1e-4)
    assert latest(events, "best/val/loss") == pytest.approx(min(val))
    bpb = [e.value for e in events.Scalars("val/bpb")]  # optimized_metric=val/bpb
    assert len(bpb) == 4 and bpb[-1] < bpb[0] and bpb[-1] == pytest.approx(metric, rel=1e-5)
    samples = events.Tensors("samples/text/text_summary")
    assert [s.step for s in samples] == [30, 40]  # every third validation, and the last step's
    # every scalar is numbered by the steps done, like the samples and checkpoints of that step
    assert [e.step for e in events.Scalars("val/loss")] == [10, 20, 30, 40]
    assert max(e.step for e in events.Scalars("train/loss")) == 40
    # TensorBoard lists the run by experiment (or task) and run directory, from the links in logs/tensorboard/
    board = run_dir.parent / "logs" / "tensorboard"
    assert (board / "train" / run_dir.name).resolve() == (run_dir / "tensorboard").resolve()
    experiment, (group,) = hparams_tab(board)
    assert group["hparams"]["model.backbone.n_layer"] == 2 and group["hparams"]["model.parameters"] > 0
    assert not [name for name in group["hparams"] if name.startswith("paths.") or "dirpath" in name]
    values = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
    assert values["val/loss"] == pytest.approx(val[-1]) and values["best/val/loss"] == pytest.approx(min(val))


def test_generate_from_checkpoint_alone_and_greedy_is_deterministic(trained_run, tmp_path):
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={ckpt}", "prompt=First", "max_new_tokens=30", "top_k=1", "num_samples=2"]
    cfg = compose_config(tmp_path, *overrides, config_name="generate")
    first, second = generate(cfg)
    assert first == second and first.startswith("First") and len(first) == len("First") + 30
    cfg = compose_config(
        tmp_path, *overrides[:-2], "temperature=1.0", "num_samples=2", config_name="generate"
    )
    a, b = generate(cfg)
    assert a != b  # sampling draws from one seeded generator: samples differ, runs repeat
    assert generate(cfg) == [a, b]


def test_generate_takes_nucleus_penalty_and_stop_strings(trained_run, tmp_path):
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={ckpt}", "prompt=All:", "max_new_tokens=60", "temperature=1.0", "num_samples=3"]
    free = generate(compose_config(tmp_path, *overrides, config_name="generate"))
    options = ["top_p=0.9", "repetition_penalty=1.2", "stop=[':']"]
    stopped = generate(compose_config(tmp_path, *overrides, *options, config_name="generate"))
    assert all(text.startswith("All:") and ":" not in text[4:] for text in stopped)
    assert stopped != free and sum(map(len, stopped)) < sum(map(len, free))


def test_generate_cli_prints_text_and_names_bad_input(trained_run):
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cli = [sys.executable, "-m", "gptlab.generate", f"ckpt_path={ckpt}", "max_new_tokens=20"]
    done = subprocess.run([*cli, "prompt=All:"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("All:") and len(done.stdout) > 20
    done = subprocess.run([*cli, 'prompt="床前¿"'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "missing from the character vocabulary: ['¿']" in done.stderr
    missing = [sys.executable, "-m", "gptlab.generate", "ckpt_path=nowhere/last.ckpt"]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "checkpoint 'nowhere/last.ckpt' does not exist" in done.stderr


def test_fast_dev_run_trains_on_cpu(compose_train, corpus):
    cfg = compose_train("debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES)
    val_loss = train(cfg)
    assert 0 < val_loss < 10


def test_optimized_metric_that_was_never_logged_is_named(compose_train, corpus):
    cfg = compose_train("debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES, "optimized_metric=val/acc")
    with pytest.raises(RunStopped, match=r"'val/acc' was never logged; logged metrics: \[.*'val/loss'"):
        train(cfg)


def test_a_stopped_single_run_ends_with_one_line_and_exit_status_1(capsys):
    def task(cfg):
        raise RunStopped("optimized_metric 'val/acc' was never logged")

    with pytest.raises(SystemExit) as stopped:
        run_task(task, None)
    assert stopped.value.code == 1
    assert capsys.readouterr().out == ""  # logged (console and train.log), no traceback printed


@pytest.mark.parametrize("val_check_interval", [250, 5])
def test_the_last_step_validates_and_checkpoints_however_short_the_run(
    compose_train, corpus, val_check_interval
):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, "trainer.max_steps=7", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", f"trainer.val_check_interval={val_check_interval}",
        "model.scheduler.warmup_steps=2", "callbacks.text_sampler=null", "trainer.num_sanity_val_steps=0",
    )  # fmt: skip
    metric = train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 7
    (best,) = checkpoints.glob("best-*.ckpt")
    best_step = torch.load(best, weights_only=True)["global_step"]
    assert best_step in ({5, 7} if val_check_interval == 5 else {7})
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), purge_orphaned_data=False)
    events.Reload()
    val_steps = [event.step for event in events.Scalars("val/loss")]
    assert val_steps == ([5, 7] if val_check_interval == 5 else [7])  # numbered like the checkpoints
    assert 0 < metric < 10


@pytest.mark.slow
def test_ddp_sim_fast_dev_run_on_two_cpu_processes(compose_train, corpus):
    cfg = compose_train("trainer=ddp_sim", "debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES)
    assert train(cfg) > 0


@pytest.mark.slow
def test_train_cli_makes_one_run_directory(tmp_path, corpus):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, "-m", "gptlab.train", "debug=fdr", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list((tmp_path / "debug" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / ".hydra" / "config.yaml").is_file() and (runs[0] / "tensorboard").is_dir()
    log = (runs[0] / "debug.log").read_text()  # Lightning's messages reach the run's log file too
    assert "[INFO] - batch: 4 samples = 64 tokens per optimizer step" in log and "max_steps=1" in log


def test_a_default_run_prints_no_warning_and_ends_with_a_summary_in_its_log(tmp_path, corpus):
    command = [
        sys.executable, "-m", "gptlab.train", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, "trainer.max_steps=4",
        "model.scheduler.warmup_steps=2", "data.max_eval_windows=8",
    ]  # fmt: skip
    launched = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)  # warnings not silenced
    elapsed = time.perf_counter() - launched
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert not [line for line in console.splitlines() if "warn" in line.lower() or "Tip:" in line], console
    (run,) = (tmp_path / "train" / "runs").iterdir()
    # the config is printed once, as what differs from the defaults
    assert done.stdout.count("values differ from configs/train.yaml's defaults") == 1
    assert "backbone.n_embd: 32  (default 128)" in done.stdout and "pos_embedding" not in done.stdout
    log = (run / "train.log").read_text()
    assert f"run: {run}\n" in log
    assert f"best checkpoint: {run / 'checkpoints' / 'best-step000004.ckpt'} (val/loss " in log
    assert f"last checkpoint: {run / 'checkpoints' / 'last.ckpt'} (step 4)" in log
    assert "test/loss" in log.split("test: ")[-1]
    assert f"tensorboard --logdir {tmp_path / 'tensorboard'}   (this run: train/{run.name})" in log
    # where the wall time went, counted from the process's start (not from when gptlab was imported)
    times = json.loads((run / "run_summary.json").read_text())["times"]
    assert 0 < times["first_step_s"] < times["wall_s"] <= elapsed + 0.1
    assert times["validation_s"] > 0 and times["median_step_ms"] > 0  # sanity check + step 4; 3 intervals
    assert f"first step done {times['first_step_s']:.1f} s after the process started" in log


PRETRAINING_EXPERIMENTS = [
    "shakespeare_char",
    "shakespeare_bpe",
    "shakespeare_modern",
    "shakespeare_speedrun",
    "shakespeare_char_fast",
]
# These need inputs made by their own tests: a classification sample (tests/test_classification.py)
# and a Hugging Face GPT-2 directory (tests/test_hf.py), where their fast_dev_runs live; the bundled
# sentiment set's recipe runs in tests/test_sentiment_zh.py.
RUN_ELSEWHERE = {"austen_scratch", "austen_finetune", "gpt2_classify", "sentiment_zh"}


def test_every_experiment_has_a_fast_dev_run():
    experiments = {p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")}
    assert experiments == set(PRETRAINING_EXPERIMENTS) | RUN_ELSEWHERE


@pytest.mark.parametrize(
    "experiment",
    [pytest.param(e, marks=pytest.mark.slow) if e.endswith("_fast") else e for e in PRETRAINING_EXPERIMENTS],
)  # the compiled recipe's fast_dev_run compiles: a minute on 2 cores
def test_pretraining_experiment_fast_dev_run(compose_train, corpus, experiment):
    cfg = compose_train(f"experiment={experiment}", "debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES)
    assert 0 < train(cfg) < 10
