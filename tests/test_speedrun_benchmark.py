"""benchmarks/speedrun.py's arguments, run order, run records and table (no timing: nothing is trained)."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from gptlab import PROJECT_ROOT


@pytest.fixture(scope="module")
def speedrun():
    spec = importlib.util.spec_from_file_location("speedrun", PROJECT_ROOT / "benchmarks" / "speedrun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_choose_the_recipes_and_the_results_file(speedrun):
    args = speedrun.parse(["--seeds", "2"])
    assert args.recipes == ["full"] and args.out.name == "speedrun.json"
    args = speedrun.parse(["--ablation"])
    assert args.recipes == list(speedrun.ABLATIONS) and args.out.name == "speedrun_ablation.json"
    assert speedrun.parse(["--ablation", "--only", "full", "no_rope"]).recipes == ["full", "no_rope"]
    for bad in (["--only", "no_rope"], ["--seeds", "0"], ["--ablation", "--only", "no_such_idea"]):
        with pytest.raises(SystemExit):
            speedrun.parse(bad)


def test_the_reference_alternates_first_and_last(speedrun):
    runs = speedrun.plan(["full", "no_rope"], [1, 2, 3], reference=True)
    assert runs == [
        ("nanogpt", 1), ("full", 1), ("no_rope", 1),
        ("full", 2), ("no_rope", 2), ("nanogpt", 2),
        ("nanogpt", 3), ("full", 3), ("no_rope", 3),
    ]  # fmt: skip
    assert speedrun.plan(["full"], [1, 2], reference=False) == [("full", 1), ("full", 2)]


def test_a_run_is_read_from_its_summary_and_its_events(speedrun, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "full-seed1"
    (run / "tensorboard").mkdir(parents=True)
    summary = {
        "step": 300,
        "metrics": {"val/loss": 1.88},
        "target": {"monitor": "val/loss", "threshold": 1.9, "mode": "min",
                   "reached": {"step": 300, "seconds": 12.5, "value": 1.88}},
    }  # fmt: skip
    (run / "run_summary.json").write_text(json.dumps(summary))
    with SummaryWriter(run / "tensorboard") as writer:
        for step, loss in ((100, 2.4), (200, 2.05), (300, 1.88)):
            writer.add_scalar("val/loss", loss, step)
    metrics = speedrun.read_run(run, fixed_step=200)
    assert metrics == pytest.approx(
        {"val/loss": 1.88, "target/step": 300, "target/seconds": 12.5, "val/loss@200": 2.05}
    )
    assert "val/loss@400" not in speedrun.read_run(run, fixed_step=400)  # the run stopped before


def test_the_table_compares_each_recipe_to_the_reference_and_the_full_recipe(speedrun):
    times = {("nanogpt", 1): 80.0, ("nanogpt", 2): 76.0, ("full", 1): 30.0, ("full", 2): 34.0}
    times |= {("no_rope", 1): 41.0, ("no_rope", 2): 45.0}
    jobs = [
        {"job": i, "overrides": [f"recipe={name}", f"seed={seed}"], "status": "completed",
         "metrics": {"job/seconds": seconds, "val/loss": 1.89}}
        for i, ((name, seed), seconds) in enumerate(times.items())
    ]  # fmt: skip
    grouped = speedrun.summarize(jobs, "full")
    by_name = {c["overrides"][0]: c for c in grouped["configurations"]}
    full, no_rope = by_name["recipe=full"], by_name["recipe=no_rope"]
    assert full["baseline"] and grouped["baseline"] == "recipe=full"
    assert full["vs_nanogpt"] == pytest.approx(statistics.mean([30, 34]) / statistics.mean([80, 76]))
    assert no_rope["metrics"]["job/seconds"]["diff"]["mean"] == pytest.approx(11.0)
    assert full["metrics"]["job/seconds"]["std"] == pytest.approx(statistics.stdev([30, 34]))
    rows = speedrun.table(grouped).splitlines()
    assert len(rows) == 2 + 3
    full_row = next(r for r in rows if r.startswith("| full (baseline) |"))
    assert "| 2 | 32 ± 2.8 |" in full_row and f"| {32 / 78:.2f}× |" in full_row
    assert "+11 [" in next(r for r in rows if r.startswith("| no_rope |"))
