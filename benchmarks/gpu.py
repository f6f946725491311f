"""Tokens/s and MFU of GPT-2 124M on one GPU: bf16 autocast, torch.compile, fused AdamW.

    python benchmarks/gpu.py                       # batch 16 x block 1024, 20 timed steps
    python benchmarks/gpu.py --batch-size 32 --no-compile

MFU = achieved FLOP/s (6N + 12·L·H·Q·T per token) / the GPU's bf16 peak as Lightning knows it
(``--peak-tflops`` for a GPU it does not know). Needs a CUDA GPU; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import get_available_flops

from gptlab import PROJECT_ROOT
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead

# Dense bf16 peaks (NVIDIA datasheets) of GPUs Lightning's table does not name yet.
EXTRA_PEAKS = {"h200": 989.4e12}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU; none is visible here")

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    config = GPTConfig(vocab_size=50257, block_size=args.block_size, n_layer=12, n_head=12, n_embd=768)
    backbone = GPT(config).to(device)
    head = LMHead(backbone.wte, config.vocab_size)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=True)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = head(backbone(inputs))
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if not args.no_compile:
        step = torch.compile(step)
    data = torch.randint(0, config.vocab_size, (args.batch_size, args.block_size + 1), device=device)
    inputs, targets = data[:, :-1], data[:, 1:]
    times = []
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step(inputs, targets)
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)

    seconds = statistics.median(times)
    tokens = args.batch_size * args.block_size
    achieved = backbone.flops_per_token() * tokens / seconds
    peak = args.peak_tflops * 1e12 if args.peak_tflops else get_available_flops(device, torch.bfloat16)
    name = torch.cuda.get_device_name(device).lower()
    peak = peak or next((flops for chip, flops in EXTRA_PEAKS.items() if chip in name), None)
    result = {
        "gpu": torch.cuda.get_device_name(device),
        "compile": not args.no_compile,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "ms_per_step": round(seconds * 1e3, 2),
        "tokens_per_s": round(tokens / seconds),
        "achieved_tflops": round(achieved / 1e12, 1),
        "peak_tflops": None if peak is None else round(peak / 1e12, 1),
        "mfu": None if peak is None else round(achieved / peak, 4),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
