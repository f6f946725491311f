"""Peak memory of corpus preparation with tokenizer=bpe, and the tokenizer's quality, by data.fit_sample_mb.

    python benchmarks/bpe_fit_memory.py                      # 200 MB corpus, samples of 10/25/50/100 MB
    python benchmarks/bpe_fit_memory.py --samples 25 100     # some sample sizes only
    python benchmarks/bpe_fit_memory.py --lightning          # also in a process holding torch (gptlab-train)
    python benchmarks/bpe_fit_memory.py --smoke              # a 4 MB corpus (about a minute)

The corpus (written to a temporary directory, never kept): 200 gzipped JSONL files of about 1 MB of text
each, records of a few paragraphs drawn at random from data/shakespeare_char.txt and
data/austen_novel.jsonl, with 1% of the ASCII characters replaced at random (as in
benchmarks/data_pipeline.py), so the number of distinct words keeps growing with the text as in a real
corpus rather than stopping at the two books' vocabulary. A held-out file (another seed, not in the
corpus) measures quality: UTF-8 bytes per token of the fitted tokenizer (higher is better, vocabulary
4096 throughout).

Each preparation runs `build_token_cache` as `data=corpus tokenizer=bpe` does (val_fraction 0.05) in a
fresh process; its peak RSS (VmHWM) is taken once the fit is done and once the encoding is done.
Results go to benchmarks/results/bpe_fit_memory.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from data_pipeline import substitute_letters  # benchmarks/ is this script's own directory on sys.path

from gptlab import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DATA = PROJECT_ROOT / "data"
MB = 1_000_000


def paragraphs() -> list[str]:
    shakespeare = (DATA / "shakespeare_char.txt").read_text(encoding="utf-8").split("\n\n")
    with open(DATA / "austen_novel.jsonl", encoding="utf-8") as lines:
        austen = [json.loads(line)["text"] for line in lines]
    return [p for p in shakespeare + austen if p.strip()]


def write_file(path: Path, pool: list[str], megabytes: float, seed: int) -> None:
    """Records of 1-8 random paragraphs with 1% of ASCII characters replaced, ``megabytes`` of text."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    records, size = [], 0
    while size < megabytes * MB:
        data = substitute_letters("\n\n".join(rng.choices(pool, k=rng.randint(1, 8))).encode(), noise)
        records.append(json.dumps({"text": data.decode()}))
        size += len(data)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        out.write("\n".join(records) + "\n")


def write_corpus(directory: Path, files: int, file_mb: float) -> list[Path]:
    pool = paragraphs()
    paths = [directory / f"part{index:03d}.jsonl.gz" for index in range(files)]
    for index, path in enumerate(paths):
        write_file(path, pool, file_mb, seed=index)
    return paths


def prepare(
    files: list[str], cache_dir: str, vocab_size: int, fit_sample_mb: float | None, lightning: bool
) -> dict:
    """One preparation, in the child process started by ``measure``."""
    if lightning:  # as in gptlab-train, whose process holds torch and Lightning before prepare_data
        import lightning  # noqa: F401

    from gptlab.data import encoding
    from gptlab.data.cache import build_token_cache
    from gptlab.tokenization import BPETokenizer

    def peak_mb() -> float:
        # VmHWM: this process's own peak; ru_maxrss starts from the parent's RSS at fork (Linux).
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # pragma: no cover

    phases = {"baseline_rss_mb": peak_mb()}
    fit = encoding._fit

    def fit_and_measure(*args):
        fit(*args)
        phases["fit_peak_rss_mb"] = peak_mb()

    encoding._fit = fit_and_measure
    entry = build_token_cache(
        files, BPETokenizer(vocab_size), cache_dir, fit_sample_mb=fit_sample_mb, split=(0.05, 0.0)
    )
    meta = entry.meta
    return {
        **phases,
        "peak_rss_mb": peak_mb(),
        "fit_seconds": meta["fit_seconds"],
        "encode_seconds": meta["encode_seconds"],
        "num_tokens": meta["num_tokens"],
        "tokenizer": str(entry.directory / "tokenizer.json"),
    }


def measure(
    files: list[Path], cache_dir: Path, vocab_size: int, fit_sample_mb: float | None, lightning: bool
) -> dict:
    args = json.dumps([[str(f) for f in files], str(cache_dir), vocab_size, fit_sample_mb, lightning])
    child = subprocess.run(
        [sys.executable, __file__, "--child", args], capture_output=True, text=True, check=False
    )
    if child.returncode:
        raise RuntimeError(f"preparation failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def bytes_per_token(tokenizer_json: str, held_out: Path) -> tuple[float, int]:
    from gptlab.tokenization import Tokenizer

    tokenizer = Tokenizer.from_json(Path(tokenizer_json).read_text(encoding="utf-8"))
    with gzip.open(held_out, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    tokens = sum(map(len, tokenizer.encode_batch(texts)))
    return sum(len(t.encode()) for t in texts) / tokens, tokenizer.vocab_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=float, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--file-mb", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument(
        "--lightning",
        action="store_true",
        help="measure each sample a second time in a process that imported Lightning (and torch) first, "
        "as gptlab-train's has",
    )
    parser.add_argument("--smoke", action="store_true", help="8 files of 0.5 MB, samples of 1 and 2 MB")
    parser.add_argument("--out", type=Path, default=RESULTS / "bpe_fit_memory.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(prepare(*json.loads(args.child))))
        return
    if args.smoke:
        args.files, args.file_mb, args.samples = 8, 0.5, [1, 2]

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = write_corpus(scratch, args.files, args.file_mb)
        held_out = scratch / "held_out.jsonl.gz"
        write_file(held_out, paragraphs(), min(5.0, args.file_mb * 5), seed=10_000)
        for sample in args.samples:
            for lightning in (False, True) if args.lightning else (False,):
                cache = scratch / f"cache{sample}-{lightning}"
                result = measure(files, cache, args.vocab_size, sample, lightning)
                result["bytes_per_token"], result["vocab_size"] = bytes_per_token(
                    result.pop("tokenizer"), held_out
                )
                rows.append({"fit_sample_mb": sample, "lightning": lightning, **result})
                print(json.dumps(rows[-1]), flush=True)

    reference = rows[-1]["bytes_per_token"]
    corpus_mb = args.files * args.file_mb
    print(
        f"\n{corpus_mb:.0f} MB corpus ({args.files} gzipped JSONL files), BPE vocab {args.vocab_size}; "
        "RSS in MB; bytes/token on the held-out file, against the last row's"
    )
    header = ("sample MB", "Lightning", "baseline", "after fit", "peak", "bytes/token", "vs last", "tokens")
    print(" | ".join(header))
    for row in rows:
        print(
            f"{row['fit_sample_mb']:g} | {'yes' if row['lightning'] else 'no'} | "
            f"{row['baseline_rss_mb']:.0f} | {row['fit_peak_rss_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
            f"{row['bytes_per_token']:.4f} | "
            f"{100 * (row['bytes_per_token'] / reference - 1):+.2f}% | {row['num_tokens']:,}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus_mb": corpus_mb, "rows": rows}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
