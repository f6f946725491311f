"""Every trainer config trains on CPU with its own precision; gradients are clipped correctly under each
precision with the fused AdamW (which Lightning's mixed-precision plugins refuse to clip)."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from gptlab.tasks.lm import GPTModule
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

TRAINERS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "trainer").glob("*.yaml"))
# processes per config on CPU: the spawning data-parallel ones with 2 (gloo), the others with 1; spawning
# costs a minute on 2 busy cores, so those two are slow tests (test_train's ddp_sim fast_dev_run is not)
DEVICES = {"ddp_sim": 2, "ddp_spawn": 2}
SPAWNING = {name: [pytest.mark.slow] for name in DEVICES}


class RecordsClippedGradients(GPTModule):
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.clipped.append([p.grad.detach().clone() for p in self.parameters()])


def one_step(precision_plugin: MixedPrecision | None, fused: bool, clip: float) -> RecordsClippedGradients:
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2, fused=fused)
    backbone = {"block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 16}
    model = RecordsClippedGradients(vocab_size=16, backbone=backbone, optimizer=optimizer)
    model.clipped = []
    rows = torch.randint(0, 16, (4, 9), generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader([(r[:-1], r[1:]) for r in rows], batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, gradient_clip_val=clip, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        plugins=[precision_plugin] if precision_plugin else None,
    )  # fmt: skip
    trainer.fit(model, loader)
    return model


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_fused_adamw_clips_the_true_gradients_under_every_precision(precision):
    # Lightning turns 16-mixed into bf16-mixed on CPU; the plugin given directly keeps fp16 and its scaler
    plugin = None if precision == "32-true" else MixedPrecision(precision, "cpu")
    fused, plain = one_step(plugin, fused=True, clip=0.01), one_step(plugin, fused=False, clip=0.01)
    (fused_grads,), (plain_grads,) = fused.clipped, plain.clipped
    # clipped to the norm asked for, on unscaled gradients (fp16: Lightning unscales the unfused one itself)
    assert torch.nn.utils.get_total_norm(fused_grads).item() == pytest.approx(0.01, rel=1e-4)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)
    # and the fused step used them once: the same update as the unfused AdamW's
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if precision == "16-mixed":
        assert plugin.scaler.get_scale() == 2.0**16  # no step skipped for overflow


@pytest.mark.parametrize("name", [pytest.param(n, marks=SPAWNING.get(n, ())) for n in TRAINERS])
def test_every_trainer_config_trains_on_cpu_with_its_own_precision(compose_train, corpus, name, monkeypatch):
    on_gpu = name == "fsdp" and torch.cuda.is_available()
    if name == "fsdp" and not on_gpu:
        pytest.skip("Lightning's FSDPStrategy refuses accelerator=cpu; on a GPU this runs on cuda")
    # a data-parallel run in this process leaves its rendezvous port in the environment
    monkeypatch.delenv("MASTER_PORT", raising=False)
    cfg = compose_train(
        f"trainer={name}", f"trainer.accelerator={'gpu' if on_gpu else 'cpu'}",
        f"trainer.devices={DEVICES.get(name, 1)}",
        f"data.path={corpus}", *TINY_OVERRIDES, "model.backbone.n_layer=1", "data.batch_size=2",
        "callbacks.text_sampler=null", "callbacks.throughput=null", "test=false", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0", "+trainer.limit_val_batches=1",
    )  # fmt: skip
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.model.optimizer.fused
    assert train(cfg) > 0
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2
    if torch.distributed.is_initialized():  # trainer=ddp on one device ran in this process
        torch.distributed.destroy_process_group()
