"""Generation speed with and without the KV cache, side by side in one process.

The shakespeare_char model (4 layers, 4 heads, 128 wide, 65 characters), untrained (the speed does not
depend on the weights), writes the same greedy tokens after a one-token prompt, once recomputing the whole
context every step and once decoding through the cache. Runs alternate A B A B, so drift and contention
on a shared machine hit both alike; the table gives the median of each.

At the recipe's block_size 64, most of 256 new tokens come after the context is full, where the window
slides and the cache has to recompute it: the larger blocks show what the cache saves.

    python benchmarks/generation_speed.py                         # 256 new tokens, blocks 64, 256, 512
    python benchmarks/generation_speed.py --new-tokens 512 --block-sizes 512 1024
    python benchmarks/generation_speed.py --smoke                 # a few seconds, for the test suite
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gptlab import PROJECT_ROOT
from gptlab.models.generation import KVCache, sample
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.heads import LMHead

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
VOCAB = 65  # shakespeare_char's characters
SHAKESPEARE_CHAR = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}
VARIANTS = {
    "gpt2": {},
    "modern": {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 2},
}


class LanguageModel(torch.nn.Module):
    """What GPTModule computes at inference (backbone, tied head), without importing Lightning: the
    smoke run then starts in 2 s rather than 5."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.backbone = GPT(config)
        self.lm_head = LMHead(self.backbone.wte, config.vocab_size)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.lm_head(self.backbone(idx, cache))


def timed_generation(
    model: LanguageModel, block_size: int, new_tokens: int, use_cache: bool
) -> tuple[float, list]:
    """Seconds to write ``new_tokens`` greedily after a one-token prompt, and the tokens written."""
    prompt = torch.zeros(1, 1, dtype=torch.long)
    start = time.perf_counter()
    out = sample(model, prompt, new_tokens, block_size, temperature=0, use_cache=use_cache)
    return time.perf_counter() - start, out[0].tolist()


def measure(variant: str, block_size: int, new_tokens: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=block_size, **SHAKESPEARE_CHAR, **VARIANTS[variant])
    model = LanguageModel(config).eval()
    for use_cache in (False, True):  # warm-up: first calls allocate and pick kernels
        timed_generation(model, block_size, min(new_tokens, 8), use_cache)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    tokens: dict[bool, list] = {}
    for _ in range(repeats):
        for use_cache in (False, True):
            elapsed, tokens[use_cache] = timed_generation(model, block_size, new_tokens, use_cache)
            seconds[use_cache].append(elapsed)
    uncached, cached = (new_tokens / statistics.median(seconds[c]) for c in (False, True))
    return {
        "variant": variant,
        "block_size": block_size,
        "new_tokens": new_tokens,
        "uncached_tokens_per_s": round(uncached, 1),
        "cached_tokens_per_s": round(cached, 1),
        "speedup": round(cached / uncached, 2),
        "identical_tokens": tokens[False] == tokens[True],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path; the median counts")
    # One token's matmuls are too small to split: on the 2-core machine a second thread left the cached
    # path as fast, sped the uncached one up ~25%, and, with any other process running, made timings
    # swing by 10x (OpenMP threads spin-waiting). Compare --threads 2 for the other side.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="few tokens, one repeat (for tests)")
    parser.add_argument("--out", type=Path, default=RESULTS / "generation_speed.json")
    args = parser.parse_args()
    if args.smoke:
        args.new_tokens, args.block_sizes, args.repeats = 24, [16], 1  # the window slides after 15
    torch.set_num_threads(args.threads)

    rows = [
        measure(variant, block_size, args.new_tokens, args.repeats)
        for variant in args.variants
        for block_size in args.block_sizes
    ]
    print(
        f"\n{args.new_tokens} new tokens, greedy, batch 1, {args.threads} threads, median of {args.repeats}"
    )
    print(
        f"{'variant':<8} {'block':>6} {'no cache tok/s':>15} {'cache tok/s':>12} {'speedup':>8}  same tokens"
    )
    for row in rows:
        print(
            f"{row['variant']:<8} {row['block_size']:>6} {row['uncached_tokens_per_s']:>15,.1f} "
            f"{row['cached_tokens_per_s']:>12,.1f} {row['speedup']:>7.2f}x  {row['identical_tokens']}"
        )
    result = {
        "model": {**SHAKESPEARE_CHAR, "vocab_size": VOCAB},
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
