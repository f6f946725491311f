"""The benchmark scripts run (in their smoke mode) and write the results they promise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gptlab import PROJECT_ROOT


def run_smoke(script: str, tmp_path, timeout: int, *options: str) -> tuple[str, dict]:
    """Run ``benchmarks/<script>.py --smoke``; return its printed table and the JSON it wrote."""
    out = tmp_path / f"{script}.json"
    script_path = PROJECT_ROOT / "benchmarks" / f"{script}.py"
    run = subprocess.run(
        [sys.executable, str(script_path), "--smoke", "--out", str(out), *options],
        check=True, timeout=timeout, capture_output=True, text=True,
    )  # fmt: skip
    return run.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_data_pipeline_benchmark_smoke(tmp_path):
    _, result = run_smoke("data_pipeline", tmp_path, timeout=180)
    assert result["encode_mb_per_s"] > 0 and result["bpe_fit_seconds"] > 0
    assert len(result["peak_rss_mb"]) == 3 and all(v > 0 for v in result["peak_rss_mb"].values())
    for row in result["preparation"]:
        assert row["num_tokens"] > 0 and row["encode_seconds"] > 0 and row["peak_rss_mb"] > 0
    sizes = [row["corpus_mb"] for row in result["preparation"]]
    assert sizes == sorted(set(sizes))  # three growing corpora
    wait = result["data_wait"]
    assert wait["steps"] > 0 and wait["step_ms"] > 0 and 0 < wait["wait_share_percent"] < 100


def test_generation_speed_benchmark_smoke(tmp_path):
    table, result = run_smoke("generation_speed", tmp_path, timeout=120)
    assert "cache tok/s" in table
    rows = result["results"]
    assert {row["variant"] for row in rows} == {"gpt2", "modern"}
    for row in rows:
        assert row["uncached_tokens_per_s"] > 0 and row["cached_tokens_per_s"] > 0
        assert row["identical_tokens"]  # the cache changes the speed, never the text


@pytest.mark.slow
def test_train_speed_benchmark_smoke(tmp_path):
    table, results = run_smoke("train_speed", tmp_path, timeout=600)
    assert "same_optimizer" in table and "val loss" in table
    assert set(results) == {"same_optimizer", "default"}
    for result in results.values():
        assert result["trained_steps"] == 12
        assert result["lightning_ms_per_step"] > 0 and result["plain_ms_per_step"] > 0
        ratio = result["plain_ms_per_step"] / result["lightning_ms_per_step"]
        assert result["lightning_over_plain_throughput"] == pytest.approx(ratio, abs=1e-3)
        assert result["ranges"]["2-12"]["lightning_ms_per_step"] == result["lightning_ms_per_step"]
        # two independent models (no tensor shared, tied or deep-copied alike), fed the same windows
        assert result["shared_parameters"] == [] and result["same_batches"]
        assert 0 < result["lightning_val_loss"] < 10 and 0 < result["plain_val_loss"] < 10
    # The same optimizer on the same windows computes the same model, up to float rounding; a fused
    # AdamW rounds differently, which only independent models show.
    same, fused = results["same_optimizer"], results["default"]
    assert same["lightning_val_loss"] == pytest.approx(same["plain_val_loss"], abs=1e-4)
    assert fused["parameters_differ"]
    assert not fused["plain_matched"]


@pytest.mark.slow
def test_train_speed_benchmark_with_a_matched_plain_loop(tmp_path):
    table, results = run_smoke("train_speed", tmp_path, 600, "--matched")
    assert "the run's optimizer and compile" in table
    # the plain loop now takes the run's fused AdamW too: both paths compute the same model again
    fused = results["default"]
    assert fused["plain_matched"] and fused["same_batches"]
    assert fused["lightning_val_loss"] == pytest.approx(fused["plain_val_loss"], abs=1e-4)


def test_backbone_speed_benchmark_smoke(tmp_path):
    _, result = run_smoke("backbone_speed", tmp_path, timeout=120)
    assert result["model"] == "smoke" and result["fwd_bwd_ms"] > 0
    tokens_per_s = result["batch_size"] * result["block_size"] / result["fwd_bwd_ms"] * 1e3
    assert result["tokens_per_s"] == pytest.approx(tokens_per_s, rel=1e-3, abs=1)  # both are rounded


def test_presets_benchmark_smoke(tmp_path):
    table, result = run_smoke("presets", tmp_path, timeout=180)
    assert "fwd+bwd tokens/s" in table
    rows = {row["preset"]: row for row in result["rows"]}
    assert set(rows) == {"char (default)", "modern", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "smoke"}
    # counted from the composed configs: GPT-2's sizes as Hugging Face counts them (unpadded vocabulary)
    assert rows["gpt2"]["parameters_unpadded"] == 124_439_808
    assert rows["gpt2-xl"]["parameters_unpadded"] == 1_557_611_200
    for row in rows.values():
        assert row["fp32_adamw_gb"] == pytest.approx(row["parameters"] * 16 / 1e9, abs=1e-3)
    measured = rows["smoke"]["measured"]
    assert measured["fwd_bwd_ms"] > 0 and measured["tokens_per_s"] > 0
    assert measured["peak_rss_train_step_mb"] >= measured["peak_rss_fwd_bwd_mb"] > 0
    assert "measured" not in rows["gpt2-xl"] and rows["gpt2-xl"]["skipped"]


@pytest.mark.slow
def test_end_to_end_benchmark_smoke(tmp_path):
    table, result = run_smoke("end_to_end", tmp_path, timeout=600)
    assert "| gptlab | 1 |" in table and "| reference | 1 |" in table and "CPU flags:" in table
    rows = {row["side"]: row for row in result["rows"]}
    assert set(rows) == {"gptlab", "reference"}
    for row in rows.values():
        assert 0 < row["first_step_s"] < row["wall_s"] and row["median_step_ms"] > 0
        assert 0 < row["eval_s"] < row["wall_s"] and 0 < row["val_loss"] < 6
    assert result["wall_ratio"] == pytest.approx(rows["gptlab"]["wall_s"] / rows["reference"]["wall_s"])
