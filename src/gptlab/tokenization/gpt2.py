"""GPT-2's own vocabulary, read from local files in any of the layouts it is published in."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import tokenizers as hf

from gptlab.tokenization.base import END_OF_TEXT
from gptlab.tokenization.bpe import ByteLevelBPE
from gptlab.tokenization.byte_level import (
    VocabularyFileError,
    byte_level_bpe,
    parse_merges,
    read_merges_txt,
)

# The file layouts a GPT-2 vocabulary directory may use, in the order they are tried.
GPT2_LAYOUTS = (
    ("encoder.json", "vocab.bpe"),  # OpenAI's original release
    ("vocab.json", "merges.txt"),  # Hugging Face's slow-tokenizer files
    ("tokenizer.json",),  # Hugging Face's single-file format
)


def has_gpt2_vocabulary(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds one of the GPT-2 vocabulary layouts GPT2Tokenizer reads."""
    directory = Path(directory).expanduser()
    return any(all((directory / name).is_file() for name in layout) for layout in GPT2_LAYOUTS)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VocabularyFileError(
            f"{file} is not valid UTF-8 JSON ({err}); restore the original file"
        ) from None


def _vocab_and_merges_from_hf_json(file: Path) -> tuple[Any, list[tuple[str, str]]]:
    state = _read_json(file)
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise VocabularyFileError(f"{file} does not hold a BPE model; GPT-2 needs a byte-level BPE")
    # Only vocab and merges are read back, so options that change how merges apply cannot be honoured.
    if (
        model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or model.get("ignore_merges")
    ):
        raise VocabularyFileError(
            f"{file} uses BPE options GPT-2 does not (subword prefix/suffix or ignore_merges)"
        )
    try:
        merges = parse_merges(model.get("merges", []))
    except VocabularyFileError as err:
        raise VocabularyFileError(f"{file}: {err}") from None
    return model.get("vocab"), merges


def _check_gpt2_vocabulary(
    vocab: Any, merges: list[tuple[str, str]], vocab_file: Path, merges_file: Path
) -> dict[str, int]:
    """Reject files that would give wrong ids: HF's BPE silently drops symbols missing from its vocabulary."""
    if not isinstance(vocab, dict):
        raise VocabularyFileError(
            f"{vocab_file} must hold a JSON object mapping token -> id, found {type(vocab).__name__}"
        )
    missing = [ch for ch in hf.pre_tokenizers.ByteLevel.alphabet() if ch not in vocab]
    if missing:
        raise VocabularyFileError(
            f"{vocab_file} lacks {len(missing)} of the 256 byte-level symbols (e.g. {missing[0]!r}): "
            "it is not a byte-level BPE vocabulary"
        )
    ids = list(vocab.values())
    if any(type(i) is not int for i in ids) or sorted(ids) != list(range(len(ids))):
        raise VocabularyFileError(
            f"{vocab_file}: token ids must be the integers 0..{len(vocab) - 1}, each used once"
        )
    if END_OF_TEXT not in vocab:
        raise VocabularyFileError(f"{vocab_file} has no {END_OF_TEXT!r} token (GPT-2 has it as id 50256)")
    for rank, (left, right) in enumerate(merges, start=1):
        for token in (left, right, left + right):
            if token not in vocab:
                raise VocabularyFileError(
                    f"{merges_file}: merge {rank} ({left!r} {right!r}) needs {token!r}, which is not in "
                    f"the vocabulary of {vocab_file.name}; use vocabulary and merges from one release"
                )
    return vocab


def read_gpt2_vocabulary(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The checked vocabulary and merges of the first GPT-2 layout ``directory`` holds."""
    hint = "set tokenizer.path to a directory holding GPT-2's files (the repo bundles data/gpt2)"
    if not directory.exists():
        raise FileNotFoundError(f"GPT-2 vocabulary directory '{directory}' does not exist; {hint}")
    if not directory.is_dir():
        raise NotADirectoryError(f"GPT-2 vocabulary path '{directory}' is not a directory; {hint}")
    for layout in GPT2_LAYOUTS:
        files = [directory / name for name in layout]
        if not all(file.is_file() for file in files):
            continue
        if len(files) == 1:
            vocab, merges = _vocab_and_merges_from_hf_json(files[0])
            return _check_gpt2_vocabulary(vocab, merges, files[0], files[0]), merges
        vocab_file, merges_file = files
        merges = read_merges_txt(merges_file)
        return _check_gpt2_vocabulary(_read_json(vocab_file), merges, vocab_file, merges_file), merges
    wanted = "; ".join(" + ".join(layout) for layout in GPT2_LAYOUTS)
    present = sorted(p.name for p in directory.iterdir())
    raise FileNotFoundError(
        f"no GPT-2 vocabulary in '{directory}': looked for {wanted}; found {present or 'nothing'}. {hint}"
    )


class GPT2Tokenizer(ByteLevelBPE):
    """GPT-2's byte-level BPE (50,257 tokens) read from local files; ids match OpenAI's exactly.

    ``path`` is a directory holding ``encoder.json`` + ``vocab.bpe`` (OpenAI), ``vocab.json`` +
    ``merges.txt`` or ``tokenizer.json`` (Hugging Face). Nothing is downloaded. The built tokenizer is
    kept as Hugging Face JSON in the state dict, so a checkpoint needs the files no more. Encoding goes
    through ``tiktoken`` with identical ids (see ``fast_bpe``).
    """

    kind = "gpt2"
    encoder_name = "gptlab-gpt2"

    def __init__(self, path: str) -> None:
        vocab, merges = read_gpt2_vocabulary(Path(path).expanduser())
        self._attach(byte_level_bpe(vocab, merges))
        # Hash what was read, not the bytes on disk, so the layouts of one vocabulary share a cache key.
        canonical = json.dumps([sorted(vocab.items(), key=lambda item: item[1]), merges], ensure_ascii=False)
        self.vocab_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_hash": self.vocab_hash}

    def state_dict(self) -> dict[str, Any]:
        return {"vocab_hash": self.vocab_hash, "hf_tokenizer": self.trained.to_str()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> GPT2Tokenizer:
        tokenizer = cls.__new__(cls)  # no files to read: the state holds the built tokenizer
        tokenizer._attach(hf.Tokenizer.from_str(state["hf_tokenizer"]))
        tokenizer.vocab_hash = state["vocab_hash"]
        return tokenizer
