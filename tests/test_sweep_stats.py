"""Statistics over a sweep's repeats (gptlab/run/sweep_stats.py): grouping, intervals, baseline, plot."""

from __future__ import annotations

import math
import statistics

import pytest

from gptlab.run import sweep_stats


def job(num: int, overrides: list[str], status: str = "completed", **metrics: float) -> dict:
    return {"job": num, "overrides": overrides, "status": status, "metrics": metrics}


def test_the_t_table_matches_scipy():
    t = pytest.importorskip("scipy.stats").t
    for df in range(1, 31):
        assert sweep_stats.t975(df) == pytest.approx(t.ppf(0.975, df), abs=6e-4)
    for df in (35, 45, 80, 200):  # between rows: the smaller df's quantile, never a narrower interval
        assert t.ppf(0.975, df) <= sweep_stats.t975(df) <= t.ppf(0.975, df) + 0.03
    assert sweep_stats.t975(2.9) == sweep_stats.t975(2)  # Welch's fractional df rounds down


def test_jobs_differing_only_in_seed_or_fold_are_one_configuration():
    losses = {
        ("0.001", "1"): 2.0,
        ("0.001", "2"): 2.2,
        ("0.001", "3"): 2.3,
        ("0.003", "1"): 1.5,
        ("0.003", "2"): 1.9,
    }
    jobs = [
        job(
            i,
            ["debug=limit", f"model.optimizer.lr={lr}", f"seed={seed}"],
            **{"val/loss": loss, "val/ppl": 9.0},
        )
        for i, ((lr, seed), loss) in enumerate(losses.items())
    ]
    jobs.append(job(5, ["debug=limit", "model.optimizer.lr=0.003", "seed=3"], status="failed"))
    grouped = sweep_stats.group(jobs, ["seed", "data.fold"], baseline="model.optimizer.lr=1e-3")
    base, other = grouped["configurations"]
    assert (base["name"], other["name"]) == ("model.optimizer.lr=0.001", "model.optimizer.lr=0.003")
    assert grouped["baseline"] == base["name"] and base["baseline"] and not other["baseline"]
    assert base["jobs"] == [0, 1, 2] and other["jobs"] == [3, 4, 5] and other["failed"] == 1
    assert set(base["metrics"]) == {"val/loss"}  # val/ppl is not a reported metric
    a, b = [2.0, 2.2, 2.3], [1.5, 1.9]
    for values, stats in ((a, base["metrics"]["val/loss"]), (b, other["metrics"]["val/loss"])):
        assert stats["n"] == len(values) and stats["values"] == values
        assert stats["mean"] == pytest.approx(statistics.mean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
        half = {3: 4.303, 2: 12.706}[len(values)] * statistics.stdev(values) / math.sqrt(len(values))
        assert stats["ci95"] == pytest.approx(
            [statistics.mean(values) - half, statistics.mean(values) + half]
        )
    diff = other["metrics"]["val/loss"]["diff"]
    assert diff["mean"] == pytest.approx(statistics.mean(b) - statistics.mean(a))
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 2
    welch_df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # 1.6...: rounds down to 1
    assert math.floor(welch_df) == 1
    half = 12.706 * math.sqrt(va + vb)
    assert diff["ci95"] == pytest.approx([diff["mean"] - half, diff["mean"] + half])
    assert base["metrics"]["val/loss"]["diff"] is None


def test_folds_group_too_and_f1_and_target_times_are_reported():
    jobs = [
        job(
            f,
            ["data.fold=" + str(f)],
            **{"test/acc": 0.5 + f / 10, "test/f1_macro": 0.4, "target/seconds": 3.0},
        )
        for f in range(5)
    ]
    (config,) = sweep_stats.group(jobs, ["seed", "data.fold"])["configurations"]
    assert config["name"] == "(all jobs)" and config["jobs"] == [0, 1, 2, 3, 4]
    assert set(config["metrics"]) == {"test/acc", "test/f1_macro", "target/seconds"}
    assert config["metrics"]["test/acc"]["mean"] == pytest.approx(0.7)
    assert config["metrics"]["test/f1_macro"]["std"] == 0.0


def test_a_classifiers_calibration_and_baseline_are_reported():
    metrics = {"test/ece": 0.1, "baseline/acc": 0.8, "baseline/f1": 0.7, "baseline/majority_acc": 0.3,
               "baseline/margin": -0.1, "train/loss": 0.5}  # fmt: skip
    jobs = [job(f, [f"data.fold={f}"], **metrics) for f in range(2)]
    (config,) = sweep_stats.group(jobs, ["data.fold"])["configurations"]
    assert set(config["metrics"]) == set(metrics) - {"train/loss"}
    assert config["metrics"]["baseline/acc"]["mean"] == pytest.approx(0.8)


def test_a_baseline_that_names_no_single_configuration_is_reported():
    jobs = [job(i, [f"a={i % 2}", f"b={i // 2}", f"seed={i}"], **{"val/loss": 1.0}) for i in range(4)]
    grouped = sweep_stats.group(jobs, ["seed"], baseline="a=0")
    assert grouped["baseline"] is None
    assert grouped["baseline_error"].startswith("baseline 'a=0' matches 2 configurations, not one")
    assert "a=0 b=0" in grouped["baseline_error"]
    assert sweep_stats.group(jobs, ["seed"], baseline="a=0 b=1")["baseline"] == "a=0 b=1"
    # Hydra writes a job's overrides normalised (1e-3 as 0.001, true as True): a baseline matches either way
    jobs = [
        job(i, [f"lr={lr}", f"flag={flag}", f"seed={i}"])
        for i, (lr, flag) in enumerate([(0.001, True), (0.003, False)])
    ]
    assert sweep_stats.group(jobs, ["seed"], baseline="lr=1e-3 flag=true")["baseline"] == "lr=0.001 flag=True"


def test_the_plot_is_a_png(tmp_path):
    jobs = [job(i, [f"lr={i % 2}", f"seed={i}"], **{"val/loss": 1.0 + i / 10}) for i in range(4)]
    grouped = sweep_stats.group(jobs, ["seed"], baseline="lr=0")
    path = sweep_stats.plot(grouped["configurations"], tmp_path / "summary.png", "test")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert (
        sweep_stats.plot([], tmp_path / "none.png", "test") is None and not (tmp_path / "none.png").exists()
    )


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]  # the IHDR chunk: width and height, big-endian
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_many_metrics_are_plotted_in_rows_of_four_panels(tmp_path):
    def plotted(n: int):
        jobs = [job(f, [f"data.fold={f}"], **{f"val/loss{i}": f + i for i in range(n)}) for f in range(3)]
        grouped = sweep_stats.group(jobs, ["data.fold"])
        return png_size(sweep_stats.plot(grouped["configurations"], tmp_path / f"{n}.png", "test"))

    (w1, h1), (w4, h4), (w10, h10) = plotted(1), plotted(4), plotted(10)
    assert w1 < w4 == w10  # no wider than four panels
    assert h1 == h4 and h10 > 2.5 * h4  # three rows
