"""Speed and memory of corpus preparation, and how long training waits for data.

    python benchmarks/data_pipeline.py            # 25 / 50 / 100 MB corpora, 100 training steps
    python benchmarks/data_pipeline.py --smoke    # tiny sizes and a few steps (for the test suite)

(a) Preparation throughput: byte-level BPE (vocab 4096) learnt from, then encoding, a synthetic corpus:
    the paragraphs of data/shakespeare_char.txt shuffled and repeated, with 1% of characters replaced
    at random (so it is not one text over and over), in files of 5 MB. BPE training and encoding are
    timed separately; MB/s counts MB of text.
(b) Peak RSS of each preparation, each in a fresh process.
(c) The share of each training step spent waiting for the next batch with experiment=shakespeare_bpe
    (plain loop: next(batches), forward, backward, step).
Results go to benchmarks/results/data_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gptlab import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
SHAKESPEARE = PROJECT_ROOT / "data" / "shakespeare_char.txt"
NOISE = 0.01
FILE_MB = 5
MB = 1_000_000


def write_corpus(directory: Path, megabytes: float, file_mb: float, seed: int = 0) -> list[Path]:
    """Files of shuffled Shakespeare paragraphs with random character substitutions, ``megabytes`` in all."""
    paragraphs = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
    passes_per_file = math.ceil(file_mb * MB / SHAKESPEARE.stat().st_size)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    files = []
    for index in range(math.ceil(megabytes / file_mb)):
        text = []
        for _ in range(passes_per_file):
            rng.shuffle(paragraphs)
            text.append("\n\n".join(paragraphs))
        data = "\n\n".join(text).encode()
        files.append(directory / f"part{index:03d}.txt")
        files[-1].write_bytes(substitute_letters(data[: data.rfind(b"\n", 0, int(file_mb * MB)) + 1], noise))
    return files


def substitute_letters(text: bytes, noise: np.random.Generator) -> bytes:
    """``text`` with a share ``NOISE`` of its ASCII characters, newlines aside, replaced by random letters or
    spaces, so the number of distinct words keeps growing with a corpus; multi-byte UTF-8 stays valid."""
    data = np.frombuffer(text, dtype=np.uint8).copy()
    hit = (noise.random(len(data)) < NOISE) & (data < 128) & (data != ord("\n"))
    data[hit] = noise.choice(np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", dtype=np.uint8), int(hit.sum()))
    return data.tobytes()


def prepare(files: list[str], cache_dir: str, vocab_size: int, fit_sample_mb: float | None) -> dict:
    """One preparation, run inside the child process started by ``measure_preparation``."""
    from gptlab.data.cache import build_token_cache
    from gptlab.tokenization import BPETokenizer

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    meta = build_token_cache(files, BPETokenizer(vocab_size), cache_dir, fit_sample_mb=fit_sample_mb).meta
    return {
        "fit_seconds": meta["fit_seconds"],
        "encode_seconds": meta["encode_seconds"],
        "encode_cpu_seconds": meta["encode_cpu_seconds"],
        "num_tokens": meta["num_tokens"],
        "baseline_rss_mb": round(baseline_kb / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure_preparation(
    files: list[Path], cache_dir: Path, vocab_size: int, fit_sample_mb: float | None
) -> dict:
    """Prepare in a fresh process, so each peak RSS is that preparation's alone."""
    args = json.dumps([[str(f) for f in files], str(cache_dir), vocab_size, fit_sample_mb])
    child = subprocess.run(
        [sys.executable, __file__, "--child", args], capture_output=True, text=True, check=True
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    corpus_mb = sum(f.stat().st_size for f in files) / MB
    return {
        "corpus_mb": round(corpus_mb, 1),
        **result,
        "encode_mb_per_s": round(corpus_mb / result["encode_seconds"], 2),
    }


def measure_data_wait(steps: int, warmup: int, overrides: list[str], cache_dir: Path) -> dict:
    """Time next(batches) against the whole step over ``steps`` steps of the shakespeare_bpe recipe."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from gptlab.run.hydra import compose_config
    from gptlab.run.speed import resolve_auto_speed

    cfg = compose_config("experiment=shakespeare_bpe", f"paths.cache_dir={cache_dir}", *overrides)
    resolve_auto_speed(cfg)
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model, vocab_size=datamodule.tokenizer.vocab_size, tokenizer=datamodule.tokenizer)
    optimizer = model.configure_optimizers()["optimizer"]
    batches = iter(datamodule.train_dataloader())
    wait = total = 0.0
    for step in range(warmup + steps):
        start = time.perf_counter()
        inputs, targets = next(batches)
        loaded = time.perf_counter()
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        if step >= warmup:
            wait += loaded - start
            total += time.perf_counter() - start
    return {
        "steps": steps,
        "wait_ms_per_step": round(wait / steps * 1e3, 4),
        "step_ms": round(total / steps * 1e3, 3),
        "wait_share_percent": round(100 * wait / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny corpora and a few steps (~30 s)")
    parser.add_argument(
        "--fit-sample-mb",
        type=float,
        default=25,
        help="learn BPE from about this many MB spread over the corpus (0: all of it); 25: data=corpus's",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "data_pipeline.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(prepare(*json.loads(args.child))))
        return

    sizes, file_mb, vocab = ([0.5, 1, 2], 0.5, 512) if args.smoke else ([25, 50, 100], FILE_MB, 4096)
    steps, warmup = (10, 2) if args.smoke else (100, 10)
    tiny_model = ["model.backbone.n_layer=1", "model.backbone.n_embd=32", "model.backbone.n_head=2"]
    sample = args.fit_sample_mb or None
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = write_corpus(scratch, max(sizes), file_mb)
        preparation = []
        for size in sizes:
            chosen = files[: round(size / file_mb)]
            preparation.append(measure_preparation(chosen, scratch / f"cache{size}", vocab, sample))
        data_wait = measure_data_wait(steps, warmup, tiny_model if args.smoke else [], scratch / "cache")

    largest = preparation[-1]
    result = {
        "smoke": args.smoke,
        "bpe_vocab_size": vocab,
        "fit_sample_mb": sample,
        "encode_mb_per_s": largest["encode_mb_per_s"],
        "bpe_fit_seconds": largest["fit_seconds"],
        "peak_rss_mb": {str(p["corpus_mb"]): p["peak_rss_mb"] for p in preparation},
        "preparation": preparation,
        "data_wait": data_wait,
    }
    print(f"\nBPE vocab {vocab}, fit on {sample or 'all'} MB; noise {NOISE:.0%} of characters")
    header = ("corpus MB", "fit s", "encode s", "(CPU s)", "encode MB/s", "peak RSS MB")
    print(" ".join(f"{h:>11}" for h in header))
    for p in preparation:
        print(
            f"{p['corpus_mb']:>11.1f} {p['fit_seconds']:>11.1f} {p['encode_seconds']:>11.1f} "
            f"{p['encode_cpu_seconds']:>11.1f} {p['encode_mb_per_s']:>11.2f} {p['peak_rss_mb']:>11.0f}"
        )
    print(
        f"\ndata wait: {data_wait['wait_share_percent']:.2f}% of each step "
        f"({data_wait['wait_ms_per_step']:.3f} of {data_wait['step_ms']:.1f} ms, {steps} steps)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
