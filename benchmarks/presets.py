"""Choose a model size: the backbone presets side by side on this machine (fp32, CPU by default).

For the default char model (configs/model/gpt.yaml), its LLaMA-style twin (experiment=shakespeare_modern)
and every preset in configs/model/backbone/, composed from the configs exactly as `gptlab-train
model/backbone=<preset>` (or `experiment=shakespeare_modern`) would:

- parameters: every tensor GPTModule allocates (embedding rows padded to a multiple of 64, positions and
  the tied head counted once), counted on the meta device, so even gpt2-xl costs no memory;
- training memory by arithmetic: 16 bytes per parameter in fp32 with AdamW (4 weights + 4 gradients +
  8 for AdamW's two moments), activations not included;
- measured, each preset in its own fresh process: forward + backward tokens/s at a given block and batch
  (benchmarks/backbone_speed.py's timing loop: 1 warm-up step, then the median of the timed ones), peak
  RSS during those steps (weights + gradients + activations), and peak RSS of two full training steps
  with fused AdamW (adds the optimizer state).

python benchmarks/presets.py              # block 256, batch 2: all but gpt2-xl (counted only)
python benchmarks/presets.py --measure gpt2 gpt2-medium --batch-size 1 --steps 2
python benchmarks/presets.py --smoke      # counts every preset, measures a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlab import PROJECT_ROOT
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead
from gptlab.models.optim import weight_decay_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backbone_speed import time_steps  # noqa: E402  (the same forward + backward loop)

GPT2_VOCAB = 50257


def char_vocab_size() -> int:
    """The default run's vocabulary: the characters of data/shakespeare_char.txt + <|endoftext|> (75)."""
    from gptlab.tokenization import CharTokenizer

    tokenizer = CharTokenizer()
    tokenizer.fit([(PROJECT_ROOT / "data" / "shakespeare_char.txt").read_text(encoding="utf-8")])
    return tokenizer.vocab_size


# name -> (overrides of gptlab-train, vocabulary size; None: the default char vocabulary)
PRESETS = {
    "char (default)": ([], None),
    "modern": (["experiment=shakespeare_modern"], None),  # the char model, LLaMA-style
    "gpt2": (["model/backbone=gpt2"], GPT2_VOCAB),
    "gpt2-medium": (["model/backbone=gpt2-medium"], GPT2_VOCAB),
    "gpt2-large": (["model/backbone=gpt2-large"], GPT2_VOCAB),
    "gpt2-xl": (["model/backbone=gpt2-xl"], GPT2_VOCAB),
}
MEASURED_BY_DEFAULT = ["char (default)", "modern", "gpt2", "gpt2-medium", "gpt2-large"]
SMOKE = ({"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32}, 256)
BYTES_PER_PARAM = 16  # fp32 weights 4 + gradients 4 + AdamW exp_avg 4 + exp_avg_sq 4
SKIP_REASONS = {
    "gpt2-xl": "not measured: fp32 AdamW training needs 16 B/param = 24.9 GB before activations, more than "
    "this 24 GB machine has (gpt2-large's measured train step peaks at ~19 B/param); a forward+backward "
    "alone would hold ~15 GB for ~25 s a step (2x gpt2-large) on cores and memory shared with others"
}


def backbone_of(overrides: list[str]) -> dict:
    """model.backbone as `gptlab-train <overrides>` composes it."""
    from gptlab.run.hydra import compose_config  # Hydra only where configs are read

    cfg = compose_config(*overrides)
    return {key: value for key, value in cfg.model.backbone.items()}


def count_parameters(vocab_size: int, backbone: dict) -> dict:
    """GPTModule's parameters, built on the meta device (no memory); tied weights counted once."""
    from gptlab.tasks.lm import GPTModule

    with torch.device("meta"):
        module = GPTModule(vocab_size, backbone)
    total = sum(p.numel() for p in module.parameters())
    config = module.config
    padding = (config.padded_vocab_size - vocab_size) * config.n_embd
    return {
        "parameters": total,
        "parameters_unpadded": total - padding,  # as Hugging Face counts GPT-2 (124,439,808 for gpt2)
        "parameters_no_positions": module.backbone.num_parameters(exclude_positions=True),
        "fp32_adamw_gb": round(total * BYTES_PER_PARAM / 1e9, 3),
    }


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(config: GPTConfig, batch_size: int, steps: int) -> dict:
    """Run in a fresh process: speed and peak memory of one size (ru_maxrss only ever grows)."""
    baseline = rss_mb()
    times = time_steps(config, batch_size, steps, warmup=1)
    peak_fwd_bwd = peak_rss_mb()
    # two full training steps (the second one holds AdamW's state from the start, as training does)
    backbone = GPT(config)
    head = LMHead(backbone.wte, config.vocab_size)
    optimizer = torch.optim.AdamW(weight_decay_groups(backbone), lr=1e-4, fused=True)
    idx = torch.randint(0, config.vocab_size, (batch_size, config.block_size))
    optimizer_ms = []
    for _ in range(2):
        logits = head(backbone(idx))
        F.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
        start = time.perf_counter()
        optimizer.step()
        optimizer_ms.append((time.perf_counter() - start) * 1e3)
        optimizer.zero_grad(set_to_none=True)
    median = statistics.median(times)
    tokens = batch_size * config.block_size
    return {
        "block_size": config.block_size,
        "batch_size": batch_size,
        "timed_steps": len(times),
        "fwd_bwd_ms": round(median, 1),
        "fwd_bwd_ms_all": [round(t, 1) for t in times],
        "tokens_per_s": round(tokens / median * 1e3, 1),
        "adamw_step_ms": round(optimizer_ms[-1], 1),
        "rss_baseline_mb": round(baseline),
        "peak_rss_fwd_bwd_mb": round(peak_fwd_bwd),
        "peak_rss_train_step_mb": round(peak_rss_mb()),
    }


def child(args: argparse.Namespace) -> None:
    """--child: measure one size and print its result as JSON (the parent reads the last line)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = json.loads(args.child)
    config = GPTConfig(vocab_size=spec["vocab_size"], **spec["backbone"])
    print(json.dumps(measure(config, args.batch_size, args.steps)))


def measure_in_subprocess(vocab_size: int, backbone: dict, args: argparse.Namespace) -> dict:
    spec = json.dumps({"vocab_size": vocab_size, "backbone": backbone})
    command = [sys.executable, __file__, "--child", spec, "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps)]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if run.returncode != 0:
        return {"error": f"exit {run.returncode}: {run.stderr.strip()[-500:]}"}
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    return result


def table(rows: list[dict]) -> str:
    lines = [
        "| preset | vocab | layers×heads×width | parameters | fp32+AdamW (16 B/param) | "
        "fwd+bwd tokens/s | fwd+bwd ms | peak RSS fwd+bwd | peak RSS train step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = f"{row['n_layer']}×{row['n_head']}×{row['n_embd']}"
        measured = row.get("measured") or {}
        if "tokens_per_s" in measured:
            speed = (f"{measured['tokens_per_s']:,.0f} | {measured['fwd_bwd_ms']:,.0f} | "
                     f"{measured['peak_rss_fwd_bwd_mb'] / 1024:.2f} GiB | "
                     f"{measured['peak_rss_train_step_mb'] / 1024:.2f} GiB")  # fmt: skip
        else:
            speed = f"{row.get('skipped') or measured.get('error', '–')} | | |"
        lines.append(f"| {row['preset']} | {row['vocab_size']:,} | {shape} | {row['parameters'] / 1e6:,.2f}M "
                     f"| {row['fp32_adamw_gb']:.2f} GB | {speed} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed forward+backward steps after 1 warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--measure", nargs="*", default=MEASURED_BY_DEFAULT, metavar="PRESET",
        help=f"presets to measure (the others are only counted): any of {list(PRESETS)}",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measured preset")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "presets.json")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    unknown = set(args.measure) - set(PRESETS)
    if unknown:
        parser.error(f"unknown presets {sorted(unknown)}; choose from {list(PRESETS)}")
    presets = dict(PRESETS)
    if args.smoke:
        presets["smoke"] = ([], SMOKE[1])
        args.measure, args.steps, args.batch_size = ["smoke"], 1, 1
    rows = []
    for name, (overrides, vocab_size) in presets.items():
        vocab_size = vocab_size or char_vocab_size()
        backbone = backbone_of(overrides)
        if name == "smoke":
            backbone.update(SMOKE[0])
        command = "(--smoke only)" if name == "smoke" else " ".join(["gptlab-train", *overrides])
        row = {"preset": name, "command": command, "vocab_size": vocab_size,
               **{k: backbone[k] for k in ("n_layer", "n_head", "n_embd", "block_size")},
               **count_parameters(vocab_size, backbone)}  # fmt: skip
        if name in args.measure:
            block = min(args.block_size, backbone["block_size"]) if args.smoke else args.block_size
            print(f"measuring {name} at block {block}, batch {args.batch_size} ...", flush=True)
            row["measured"] = measure_in_subprocess(vocab_size, {**backbone, "block_size": block}, args)
        else:
            row["skipped"] = SKIP_REASONS.get(name, "not measured (not in --measure)")
        rows.append(row)
    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "bytes_per_param": BYTES_PER_PARAM,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
        "rows": rows,
    }
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
