"""Build data/shakespeare_next_line.jsonl: pick the true next line of a Shakespeare passage among four.

python data/make_next_line_task.py            (deterministic: the same file for the same text and seed)

Passages come from the held-out end of data/shakespeare_char.txt (its last 10% of UTF-8 bytes, the text
data=shakespeare validates on), so a model trained on that config never saw them. Each item's context is
a few whole lines ending in a line of verse; its choices are the line that follows and three verse lines
drawn from elsewhere in the held-out text, in shuffled order.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def verse(line: str) -> bool:
    """A line of verse: not blank and not a speaker's name ("ROMEO:")."""
    return len(line.strip()) >= 12 and not line.rstrip().endswith(":")


def build(text: str, items: int, seed: int, held_out: float, context_chars: int) -> list[dict]:
    data = text.encode("utf-8")
    start = data.index(b"\n", int(len(data) * (1 - held_out))) + 1  # from the first whole line
    lines = data[start:].decode("utf-8").splitlines(keepends=True)
    pool = [line for line in lines if verse(line)]
    rng = random.Random(seed)
    candidates = [i for i in range(1, len(lines)) if verse(lines[i]) and verse(lines[i - 1])]
    out = []
    for i in sorted(rng.sample(candidates, items)):
        context, j = "", i
        while j > 0 and len(context) + len(lines[j - 1]) <= context_chars:
            j -= 1
            context = lines[j] + context
        true = lines[i]
        distractors: list[str] = []
        while len(distractors) < 3:
            line = rng.choice(pool)
            if line != true and line not in distractors:
                distractors.append(line)
        choices = [true, *distractors]
        rng.shuffle(choices)
        out.append({"context": context, "choices": choices, "label": choices.index(true)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=HERE / "shakespeare_char.txt", type=Path)
    parser.add_argument("--out", default=HERE / "shakespeare_next_line.jsonl", type=Path)
    parser.add_argument("--items", default=200, type=int)
    parser.add_argument("--seed", default=1337, type=int)
    parser.add_argument("--held-out", default=0.1, type=float, help="the val_fraction of data=shakespeare")
    parser.add_argument("--context-chars", default=200, type=int, help="at most this many characters")
    args = parser.parse_args()
    items = build(
        args.text.read_text(encoding="utf-8"), args.items, args.seed, args.held_out, args.context_chars
    )
    with open(args.out, "w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{args.out}: {len(items)} items")


if __name__ == "__main__":
    main()
