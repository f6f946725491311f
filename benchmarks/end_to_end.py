"""End to end, whole processes, A B A B: ``gptlab-train`` as ``make train`` runs it (test included) against
benchmarks/nanogpt_reference.py, a loop that behaves like nanoGPT's train.py (checked against it:
benchmarks/check_reference.py).

Per side: the wall time of the whole process (measured here, from launch to exit), the time from the
process's start to its first optimizer step done, the median training step, the seconds spent
evaluating, and the val loss at the last step; gptlab's side reads these from its run's
``run_summary.json``. Both sides' data caches are warmed before the first pair.

    python benchmarks/end_to_end.py                  # 2 pairs of the default recipe (about 6 min a pair)
    python benchmarks/end_to_end.py --pairs 1 --gptlab-args model.compile=true
    python benchmarks/end_to_end.py --smoke          # 5 steps a side, for the test suite
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REFERENCE = ROOT / "benchmarks" / "nanogpt_reference.py"
KEYS = ("wall_s", "first_step_s", "median_step_ms", "eval_s", "val_loss")
SMOKE_GPTLAB = ["trainer.val_check_interval=5", "data.max_eval_windows=8", "callbacks.text_sampler=null",
                "model.scheduler.warmup_steps=2"]  # fmt: skip


def cpu_flags() -> str:
    """The CPU features that decide which precision is fast here (bf16 matrix units, AVX-512)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f in flags) or "none"


def gptlab_train() -> list[str]:
    """The console script ``make train`` runs, beside this Python; else the module."""
    script = Path(sys.executable).with_name("gptlab-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gptlab.train"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return time.perf_counter() - start


def run_gptlab(overrides: list[str], work: Path, name: str) -> dict:
    run_dir = work / "logs" / "train" / "runs" / name
    wall = timed([*gptlab_train(), *overrides, f"paths.log_dir={work / 'logs'}", f"run_name={name}"])
    summary = json.loads((run_dir / "run_summary.json").read_text())
    times = summary["times"]
    return {
        "wall_s": wall,
        "first_step_s": times["first_step_s"],
        "median_step_ms": times["median_step_ms"],
        "eval_s": times["validation_s"],
        "val_loss": summary["metrics"]["val/loss"],
        "run_dir": str(run_dir),
    }


def run_reference(options: list[str], work: Path, name: str) -> dict:
    out = work / f"{name}.json"
    wall = timed(
        [sys.executable, str(REFERENCE), *options, f"--work-dir={work / 'reference'}", f"--out-json={out}"]
    )
    result = json.loads(out.read_text())
    return {**{key: result[key] for key in KEYS}, "wall_s": wall, "wall_in_process_s": result["wall_s"]}


def table(rows: list[dict]) -> str:
    lines = ["| side | pairs | wall s | first step s | median step ms | validation s | val loss at end |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for side in ("gptlab", "reference"):
        mine = [row for row in rows if row["side"] == side]
        median = {key: statistics.median(row[key] for row in mine) for key in KEYS}
        formats = {
            "wall_s": ".1f",
            "first_step_s": ".2f",
            "median_step_ms": ".2f",
            "eval_s": ".1f",
            "val_loss": ".4f",
        }
        cells = [format(median[key], formats[key]) for key in KEYS]
        lines.append(f"| {side} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--gptlab-args", nargs="*", default=[], help="overrides added to gptlab-train's")
    parser.add_argument("--smoke", action="store_true", help="5 steps a side, 1 pair (a check, not a figure)")
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end.json")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs {args.pairs}: run at least one pair")
    gptlab, reference = list(args.gptlab_args), []
    if args.smoke:
        args.pairs = 1
        gptlab = ["trainer.max_steps=5", *SMOKE_GPTLAB, *gptlab]
        reference = ["--max-iters=5", "--eval-interval=5", "--eval-iters=2"]
    flags = cpu_flags()
    print(f"CPU flags: {flags}")
    print(f"gptlab:    {' '.join(gptlab_train())} {' '.join(gptlab)}")
    print(f"reference: {sys.executable} {REFERENCE.relative_to(ROOT)} {' '.join(reference)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gptlab_e2e_") as tmp:
        work = Path(tmp)
        # Warm both data caches (gptlab's token cache, the reference's bin files) outside the timings.
        run_gptlab(["trainer.max_steps=1", "test=false", *SMOKE_GPTLAB, *gptlab], work, "warmup")
        run_reference(["--max-iters=0", "--eval-iters=1", "--log-interval=1000"], work, "warmup")
        for pair in range(args.pairs):
            for side in ("gptlab", "reference"):
                name = f"{side}_{pair}"
                row = (
                    run_gptlab(gptlab, work, name)
                    if side == "gptlab"
                    else run_reference(reference, work, name)
                )
                rows.append({"pair": pair, "side": side, **row})
                print(
                    f"{side:>9} pair {pair}: " + ", ".join(f"{key} {row[key]:.4g}" for key in KEYS),
                    flush=True,
                )
    text = table(rows)
    walls = {
        side: statistics.median(r["wall_s"] for r in rows if r["side"] == side)
        for side in ("gptlab", "reference")
    }
    ratio = walls["gptlab"] / walls["reference"]
    print(f"\nCPU flags: {flags}\n{text}\ngptlab's wall / the reference's: {ratio:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_flags": flags, "gptlab_args": gptlab, "reference_args": reference,
                                    "wall_ratio": ratio, "rows": rows, "table": text}, indent=1))  # fmt: skip
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
