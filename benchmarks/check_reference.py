"""Check benchmarks/nanogpt_reference.py against nanoGPT's own train.py: both as whole processes, A B A B.

nanoGPT is not a dependency: give a directory holding its files (train.py, model.py, configurator.py,
config/); its data/shakespeare_char/ is filled with the reference's prepared data, so both train on the
same bin files. nanoGPT runs its README's CPU recipe; both print one line per iteration, and the median
step time is read from those lines on both sides, the val losses from their "step N: ... val loss" lines.

    git --git-dir=<nanoGPT git dir> archive HEAD | tar -x -C /tmp/nanogpt
    flock -x /work/cpu.lock python benchmarks/check_reference.py --nanogpt /tmp/nanogpt --pairs 2
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nanogpt_reference as ref  # noqa: E402
from end_to_end import cpu_flags  # noqa: E402

RESULTS = ref.ROOT / "benchmarks" / "results"
# nanoGPT's README, "I only have a macbook": its CPU run of config/train_shakespeare_char.py.
NANOGPT_CPU = (
    "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 "
    "--n_layer=4 --n_head=4 --n_embd=128 --max_iters={iters} --lr_decay_iters={iters} --dropout=0.0"
)


def run(command: list[str], cwd: Path) -> dict:
    """Run one whole process; its wall, median iteration time and val losses, read from its output."""
    t = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"{command[:2]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    times = [float(ms) for ms in re.findall(r"^iter \d+: .*time ([\d.]+)ms", done.stdout, re.M)]
    losses = [float(v) for v in re.findall(r"^iter \d+: loss ([\d.]+)", done.stdout, re.M)]
    vals = {int(i): float(v) for i, v in re.findall(r"^step (\d+): .*val loss ([\d.]+)", done.stdout, re.M)}
    return {"wall_s": wall, "median_step_ms": statistics.median(times), "val_losses": vals,
            "val_loss": vals[max(vals)], "iter_losses": losses}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a directory with nanoGPT's files")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--work-dir", type=Path, default=ref.ROOT / "data" / ".cache" / "nanogpt_reference")
    args = parser.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        sys.exit(f"--nanogpt {args.nanogpt} has no train.py: extract nanoGPT's files there first")
    ref.prepare(ref.TEXT, args.work_dir / "data" / "shakespeare_char")
    target = args.nanogpt / "data" / "shakespeare_char"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train.bin", "val.bin", "meta.pkl"):
        shutil.copyfile(args.work_dir / "data" / "shakespeare_char" / name, target / name)
    nanogpt = [sys.executable, "train.py", "config/train_shakespeare_char.py",
               *NANOGPT_CPU.format(iters=args.max_iters).split()]  # fmt: skip
    reference = [sys.executable, str(Path(ref.__file__).resolve()), f"--max-iters={args.max_iters}",
                 f"--work-dir={args.work_dir}"]  # fmt: skip
    flags = cpu_flags()
    print(f"CPU flags: {flags}\nnanoGPT:   {' '.join(nanogpt)}  (in {args.nanogpt})")
    print(f"reference: {' '.join(reference)}", flush=True)
    rows = []
    for pair in range(args.pairs):
        for side, command, cwd in (("nanoGPT", nanogpt, args.nanogpt), ("reference", reference, ref.ROOT)):
            row = {"pair": pair, "side": side, **run(command, cwd)}
            rows.append(row)
            wall, step, val = row["wall_s"], row["median_step_ms"], row["val_loss"]
            print(
                f"{side:>9} pair {pair}: wall {wall:.1f} s, median step {step:.2f} ms, val loss {val:.4f}",
                flush=True,
            )
    same = [max(abs(a - b) for a, b in zip(x["iter_losses"], y["iter_losses"], strict=True))
            for x, y in zip(rows[::2], rows[1::2], strict=True)]  # fmt: skip
    print(f"largest difference between the two sides' per-iteration training losses, per pair: {same}")
    print("\n| pair | side | wall s | median step ms | val loss at end |\n|---|---|---|---|---|")
    for row in rows:
        cells = (
            row["pair"],
            row["side"],
            f"{row['wall_s']:.1f}",
            f"{row['median_step_ms']:.2f}",
            f"{row['val_loss']:.4f}",
        )
        print("| " + " | ".join(map(str, cells)) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "check_reference.json"
    out.write_text(
        json.dumps({"cpu_flags": flags, "nanogpt": nanogpt, "reference": reference, "rows": rows}, indent=1)
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
