"""trainer.precision=auto and model.compile=auto: the choice made from (faked) CPU flags and run lengths."""

from __future__ import annotations

import math
import os

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from gptlab.run import speed
from gptlab.run.speed import COMPILE_MIN_STEPS, auto_compile, auto_precision, cpu_flags, resolve_auto_speed
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
PLAIN_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n\n"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    (tmp_path / "amx").write_text(AMX_CPUINFO)
    (tmp_path / "plain").write_text(PLAIN_CPUINFO)
    assert {"amx_bf16", "avx512f"} <= cpu_flags(tmp_path / "amx")
    assert "amx_bf16" not in cpu_flags(tmp_path / "plain")
    assert cpu_flags(tmp_path / "missing") == set()


def test_precision_is_bf16_only_with_bf16_matrix_units(tmp_path, monkeypatch):
    (tmp_path / "amx").write_text(AMX_CPUINFO)
    assert auto_precision("cpu", cpu_flags(tmp_path / "amx")) == "bf16-mixed"
    assert auto_precision("cpu", {"avx512f", "avx512_bf16"}) == "32-true"  # no AMX: fp32 is faster
    assert auto_precision("gpu", set()) == "bf16-mixed"
    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: False)
    assert auto_precision("auto", {"amx_bf16"}) == "32-true"  # accelerator=auto on a machine without GPU


def test_compile_only_when_the_run_repays_it():
    cpu, cuda = COMPILE_MIN_STEPS["cpu"], COMPILE_MIN_STEPS["cuda"]
    assert cuda < cpu
    assert not auto_compile("cpu", 2000)
    assert not auto_compile("cpu", cpu - 1) and auto_compile("cpu", cpu)
    assert not auto_compile("gpu", cuda - 1) and auto_compile("gpu", cuda)
    assert not auto_compile("gpu", -1)  # epoch-bound: length unknown


def test_the_defaults_are_auto_and_resolve_into_the_config(compose_train, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cfg = compose_train("experiment=shakespeare_char")
    assert (cfg.trainer.precision, cfg.model.compile) == ("auto", "auto")
    resolve_auto_speed(cfg, flags={"avx2"})
    assert (cfg.trainer.precision, cfg.model.compile) == ("32-true", False)
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # nothing compiled, nothing set

    long_run = compose_train("experiment=shakespeare_char", f"trainer.max_steps={COMPILE_MIN_STEPS['cpu']}")
    resolve_auto_speed(long_run, flags={"amx_bf16"})
    assert (long_run.trainer.precision, long_run.model.compile) == ("bf16-mixed", True)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "torchinductor")

    explicit = compose_train("trainer.precision=bf16-mixed", "model.compile=false")
    resolve_auto_speed(explicit, flags=set())
    assert (explicit.trainer.precision, explicit.model.compile) == ("bf16-mixed", False)


def test_an_unresolved_auto_is_refused_by_the_model(compose_train):
    cfg = compose_train("experiment=shakespeare_char")
    with pytest.raises(InstantiationException, match=r"compile='auto': True or False .*resolve_auto_speed"):
        instantiate(cfg.model, vocab_size=65)


def test_auto_bf16_trains_with_fused_adamw_and_clipping(compose_train, corpus, monkeypatch):
    """What auto picks on an AMX CPU (bf16-mixed, with the default fused AdamW and clipping) runs."""
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"amx_bf16"})
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, "trainer.max_steps=2", "trainer.val_check_interval=2",
        "test=false", "callbacks.text_sampler=null", "trainer.num_sanity_val_steps=0",
        "data.max_eval_windows=4",
    )  # fmt: skip
    loss = train(cfg)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.compile is False
    assert cfg.model.optimizer.fused and cfg.trainer.gradient_clip_val > 0
    assert math.isfinite(loss)


def test_the_default_config_is_composed_once_then_read_from_the_cache(compose_train, tmp_path, monkeypatch):
    """The run's config tree compares with configs/train.yaml's defaults; composing them costs as much as
    the run's own config, so they are kept in paths.cache_dir, keyed by the configs' contents."""
    from gptlab.run import record

    compose_train()  # as in a run: Hydra's runtime values (${hydra:...}) set
    fresh = record.flat_defaults(tmp_path)
    assert fresh["trainer.max_steps"] == 2000 and fresh["model.backbone.n_embd"] == 128
    (cached,) = (tmp_path / "config_defaults").glob("*.json")

    composed = []
    compose = record.default_config
    monkeypatch.setattr(record, "default_config", lambda: composed.append(1) or compose())
    assert record.flat_defaults(tmp_path) == fresh and composed == []
    cached.unlink()  # another configs/ (another key) or a cleared cache: composed again
    assert record.flat_defaults(tmp_path) == fresh and composed == [1]
    assert cached.is_file()
