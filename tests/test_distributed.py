"""Data parallelism on CPU: 2 gloo processes equal 1 process, the global batch, and one run directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from gptlab.data.sampling import BatchPlan, BucketBatchSampler, GlobalBatchSampler, ShardSampler
from gptlab.run.hydra import SweepSetupError, refuse_script_launcher_in_sweep
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

QUIET = ["callbacks.text_sampler=null", "callbacks.throughput=null", "test=false"]


def test_global_batches_are_shared_out_without_overlap_and_add_up_to_one_process():
    single = list(GlobalBatchSampler(1000, steps=3, plan=BatchPlan(8), seed=5))
    ranks = [list(GlobalBatchSampler(1000, 3, BatchPlan(8, world_size=2, rank=r), seed=5)) for r in (0, 1)]
    for step in range(3):
        halves = [r[step * 4 : step * 4 + 4] for r in ranks]
        assert not set(halves[0]) & set(halves[1])  # no window read by both ranks in a step
        assert halves[0] + halves[1] == single[step * 8 : step * 8 + 8]
    assert len(set(single[:8])) == 8


def test_accumulation_reads_the_same_global_batch_in_micro_batches():
    single = list(GlobalBatchSampler(500, steps=2, plan=BatchPlan(12), seed=1))
    accumulated = list(GlobalBatchSampler(500, steps=2, plan=BatchPlan(12, accumulate=3), seed=1))
    assert accumulated == single


def test_a_sampler_resumes_mid_epoch_and_draws_anew_each_epoch():
    sampler = GlobalBatchSampler(1000, steps=5, plan=BatchPlan(4), seed=0)
    whole = list(sampler)
    sampler.skip = 8
    assert list(sampler) == whole[8:]
    sampler.set_epoch(1)
    assert list(sampler) != whole


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(
        ValueError, match=r"data.batch_size=12 .* 2 process\(es\) x 5 accumulation .* multiple of 10"
    ):
        BatchPlan(12, world_size=2, accumulate=5)


def test_evaluation_shards_cover_every_sample_once_without_padding():
    shards = [list(ShardSampler(11, rank, 3)) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]
    lengths = list(range(1, 23))
    batches = [b for r in (0, 1) for b in BucketBatchSampler(lengths, BatchPlan(4, 2, r), shuffle=False)]
    assert sorted(i for b in batches for i in b) == list(range(22))


def test_classification_ranks_step_together_on_distinct_rows():
    lengths = [i % 7 + 1 for i in range(103)]
    ranks = [list(BucketBatchSampler(lengths, BatchPlan(10, world_size=2, rank=r), seed=3)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 10  # the last, incomplete global batch is dropped
    assert all(len(b) == 5 for r in ranks for b in r)
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == 100


def checkpoint_after_one_step(compose_train, corpus, *overrides) -> tuple[dict, float]:
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "data.batch_size=8", "trainer.max_steps=1",
        "trainer.val_check_interval=1", "trainer.num_sanity_val_steps=0", *overrides,
    )  # fmt: skip
    val_loss = train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    return state["state_dict"], val_loss


@pytest.mark.slow
def test_two_gloo_processes_on_half_batches_equal_one_process_on_the_whole(compose_train, corpus, tmp_path):
    single, single_val = checkpoint_after_one_step(compose_train, corpus)
    compose_ddp = lambda *o: compose_train(*o, f"paths.output_dir={tmp_path / 'ddp'}")  # noqa: E731
    ddp, ddp_val = checkpoint_after_one_step(compose_ddp, corpus, "trainer=ddp_sim")
    diff = max((single[name] - ddp[name]).abs().max().item() for name in single)
    print(f"max parameter difference, DDP (2 processes) vs 1 process: {diff:.3g}")
    assert diff < 1e-6
    assert abs(single_val - ddp_val) < 1e-6


def test_multirun_with_the_script_launcher_stops_at_once(compose_train, corpus, monkeypatch):
    trainer = type("FakeTrainer", (), {})()
    trainer.strategy = "the strategy"
    monkeypatch.setattr(
        "gptlab.run.hydra.relaunches_command_line", lambda strategy: strategy == "the strategy"
    )
    monkeypatch.setattr("gptlab.run.hydra.in_multirun", lambda: True)
    with pytest.raises(SweepSetupError, match="trainer=ddp_spawn .*trainer=ddp_sim"):
        refuse_script_launcher_in_sweep(trainer)


def test_an_indivisible_global_batch_stops_before_the_data_is_prepared(compose_train, corpus):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, "data.batch_size=6", "trainer.accumulate_grad_batches=4"
    )
    with pytest.raises(ValueError, match="does not divide"):
        train(cfg)
    assert not (Path(cfg.paths.cache_dir)).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_on_loopback_share_one_run_directory(tmp_path, corpus):
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [
        "-m", "gptlab.train", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *QUIET, "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.num_nodes=2", "trainer.devices=1",
        "trainer.max_steps=6", "trainer.val_check_interval=3",
    ]  # fmt: skip
    start = time.perf_counter()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=loopback",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    print(f"torchrun, 2 nodes x 1 process, 6 steps: {time.perf_counter() - start:.1f} s")
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert [run.name for run in runs] == ["torchrun-loopback"]
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6


@pytest.mark.slow
def test_ddp_relaunched_by_lightning_under_hydra_writes_one_run_directory(tmp_path, corpus):
    command = [
        sys.executable, "-m", "gptlab.train", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *QUIET, "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_steps=4",
        "trainer.val_check_interval=2",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) x 1 accumulation x 2 per micro-batch" in done.stdout + done.stderr
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_config_keeps_effective_batch_in_the_logged_hyperparameters(compose_train, corpus):
    cfg = compose_train(
        "debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES, "trainer.accumulate_grad_batches=2"
    )
    with open_dict(cfg):
        cfg.logger = {
            "csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": cfg.paths.output_dir}
        }
    train(cfg)
    hparams = (Path(cfg.paths.output_dir) / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "tokens_per_step: 64" in hparams and "micro_batch: 2" in hparams and "accumulate: 2" in hparams


def test_fsdp_config_shards_each_transformer_block(compose_train):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from gptlab.models.gpt import Block

    cfg = compose_train("trainer=fsdp")
    strategy = instantiate(cfg.trainer.strategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {Block}
    assert cfg.trainer.precision == "bf16-mixed" and strategy._state_dict_type == "full"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_multi_gpu_strategies_train_and_save_a_loadable_checkpoint(compose_train, corpus, trainer):
    cfg = compose_train(
        f"trainer={trainer}", f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "trainer.devices=2",
        "trainer.max_steps=4", "trainer.val_check_interval=2",
    )  # fmt: skip
    assert train(cfg) > 0
    assert load_module(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_gpu_precisions_train(compose_train, corpus, precision):
    overrides = [f"trainer.precision={precision}", "debug=fdr", f"data.path={corpus}", *TINY_OVERRIDES]
    cfg = compose_train("trainer=gpu", *overrides)
    assert 0 < train(cfg) < 10


def test_training_metrics_are_logged_once_per_logged_step_under_accumulation():
    from types import SimpleNamespace

    module = GPTModule(vocab_size=8, backbone={"block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 8})
    trainer = SimpleNamespace(fast_dev_run=False, accumulate_grad_batches=2, log_every_n_steps=5)
    logged = []
    for batch_idx in range(20):  # 10 optimizer steps of 2 micro-batches
        step = batch_idx // 2
        with (
            patch.object(GPTModule, "trainer", trainer),
            patch.object(GPTModule, "global_step", step),
        ):
            if module.logs_this_step(batch_idx):
                logged.append((step, batch_idx))
    assert logged == [(4, 9), (9, 19)]  # the last micro-batch of steps 5 and 10
