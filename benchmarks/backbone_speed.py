"""Forward + backward time of a GPT-2 124M-sized backbone on this machine (fp32, CPU by default).

python benchmarks/backbone_speed.py            # block 256, batch 4, 5 timed steps
python benchmarks/backbone_speed.py --smoke    # a tiny model, for the test suite
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlab import PROJECT_ROOT
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead

GPT2_124M = {"vocab_size": 50257, "n_layer": 12, "n_head": 12, "n_embd": 768}
SMOKE = {"vocab_size": 256, "n_layer": 2, "n_head": 2, "n_embd": 64}


def time_steps(config: GPTConfig, batch_size: int, steps: int, warmup: int) -> list[float]:
    backbone = GPT(config)
    head = LMHead(backbone.wte, config.vocab_size)
    idx = torch.randint(0, config.vocab_size, (batch_size, config.block_size))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        logits = head(backbone(idx))
        F.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
        backbone.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "backbone_speed.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = SMOKE if args.smoke else GPT2_124M
    config = GPTConfig(block_size=32 if args.smoke else args.block_size, **shape)
    times = time_steps(config, args.batch_size, 2 if args.smoke else args.steps, warmup=1)
    median = statistics.median(times)
    tokens = args.batch_size * config.block_size
    backbone = GPT(config)
    result = {
        "model": "smoke" if args.smoke else "gpt2-124M",
        "parameters": backbone.num_parameters(exclude_positions=False),
        "block_size": config.block_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "fwd_bwd_ms": round(median, 3),
        "tokens_per_s": round(tokens / median * 1e3),
        "achieved_tflops": round(backbone.flops_per_token() * tokens / median * 1e3 / 1e12, 4),
    }
    print(f"{result['model']} ({result['parameters'] / 1e6:.1f}M params), block {config.block_size}, "
          f"batch {args.batch_size}, {args.threads} threads: forward+backward {median:.1f} ms "
          f"({result['tokens_per_s']:,} tokens/s, {result['achieved_tflops']} TFLOP/s)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
