"""Tokenizers behind one interface: fit on a corpus (when they learn), encode, decode, save as JSON.

A tokenizer's whole state is a JSON-able dict, so it travels inside every checkpoint and sampling needs
nothing but the checkpoint.

Everywhere, ``<|endoftext|>`` is a reserved id that only the data pipeline inserts between documents:
``encode`` never produces it, and the literal string in a text is encoded as ordinary characters, so a
corpus cannot forge document boundaries. ``decode`` turns the id back into the string.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import tokenizers as hf

from gptlab.tokenization.fast_bpe import BPEEncoder

END_OF_TEXT = "<|endoftext|>"
NUM_BYTES = 256


class UnknownCharactersError(ValueError):
    """Text holds characters a character-level vocabulary does not have."""


class VocabularyFileError(ValueError):
    """A GPT-2 vocabulary directory is missing files or holds files that contradict each other."""


class Tokenizer(ABC):
    """The interface every tokenizer implements."""

    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Tokenizer._registry[cls.kind] = cls

    @property
    def needs_fit(self) -> bool:
        """True while the tokenizer must still learn its vocabulary from a corpus."""
        return False

    def fit(self, texts: Iterable[str]) -> None:  # noqa: B027 - most tokenizers learn nothing
        """Learn the vocabulary from ``texts`` (no-op for tokenizers with a fixed vocabulary)."""

    def spec(self) -> dict[str, Any]:
        """What the tokenizer was asked to be (not what it learned): part of the token cache key."""
        return {"kind": self.kind}

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eot_id(self) -> int:
        """Id of the end-of-text token that separates documents."""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; the byte-level BPE tokenizers do it in parallel, in native code."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer; JSON-able primitives only."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Tokenizer: ...

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.state_dict()}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> Tokenizer:
        state = json.loads(text)
        kind = state.pop("kind")
        if kind not in Tokenizer._registry:
            raise ValueError(f"unknown tokenizer kind {kind!r}; known: {sorted(Tokenizer._registry)}")
        return Tokenizer._registry[kind].from_state_dict(state)


class CharTokenizer(Tokenizer):
    """One id per character seen in the corpus (any Unicode: Chinese, emoji, ...), plus end-of-text."""

    kind = "char"

    def __init__(self, chars: Sequence[str] | None = None) -> None:
        self.chars: list[str] = list(chars) if chars is not None else []
        self._ids = {ch: i for i, ch in enumerate(self.chars)}

    @property
    def needs_fit(self) -> bool:
        return not self.chars

    def fit(self, texts: Iterable[str]) -> None:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise ValueError("cannot build a character vocabulary from an empty corpus")
        self.__init__(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def eot_id(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError:
            missing = sorted({ch for ch in text if ch not in self._ids})
            raise UnknownCharactersError(
                f"text contains {len(missing)} character(s) missing from the character vocabulary: "
                f"{missing!r}. Remove them, or train on a corpus that contains them."
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        eot = self.eot_id
        return "".join(END_OF_TEXT if i == eot else self.chars[i] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["chars"])


class ByteTokenizer(Tokenizer):
    """The 256 UTF-8 byte values plus end-of-text (id 256): any text, no training."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES + 1

    @property
    def eot_id(self) -> int:
        return NUM_BYTES

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        # Split at end-of-text ids; a sampled sequence may stop inside a multi-byte character, which
        # decodes to U+FFFD rather than failing.
        pieces: list[str] = []
        chunk: list[int] = []
        for i in ids:
            if i == NUM_BYTES:
                pieces.extend((bytes(chunk).decode("utf-8", errors="replace"), END_OF_TEXT))
                chunk = []
            elif 0 <= i < NUM_BYTES:
                chunk.append(i)
            else:
                raise ValueError(f"id {i} is outside the byte vocabulary (0..{NUM_BYTES})")
        pieces.append(bytes(chunk).decode("utf-8", errors="replace"))
        return "".join(pieces)

    def state_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ByteTokenizer:
        return cls()


def _byte_level(model: hf.models.Model) -> hf.Tokenizer:
    """A Hugging Face tokenizer with GPT-2's byte-level pre-tokenizer and decoder around ``model``.

    No normalizer and no prefix space, so every string (Chinese, emoji, control characters) round-trips
    byte for byte.
    """
    tokenizer = hf.Tokenizer(model)
    tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = hf.decoders.ByteLevel()
    return tokenizer


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained on the corpus (Hugging Face ``tokenizers``): never an unknown token.

    ``<|endoftext|>`` takes id 0 of the learned vocabulary; the rest are the 256 byte symbols and the
    learned merges, at most ``vocab_size`` in all (fewer when the corpus runs out of pairs occurring at
    least ``min_frequency`` times). Encoding goes through ``tiktoken`` with identical ids when it can
    (see ``fast_bpe``); the state stays the Hugging Face JSON.
    """

    kind = "bpe"

    def __init__(self, vocab_size: int = 4096, min_frequency: int = 2) -> None:
        minimum = NUM_BYTES + 1
        if vocab_size < minimum:
            raise ValueError(
                f"BPE vocab_size {vocab_size} is too small: the byte alphabet plus {END_OF_TEXT} alone "
                f"take {minimum} ids; set tokenizer.vocab_size={minimum} or more (e.g. 4096)"
            )
        if min_frequency < 0:
            raise ValueError(f"BPE min_frequency must be >= 0, got {min_frequency}")
        self.requested_vocab_size = vocab_size
        self.min_frequency = min_frequency
        self._encoder: BPEEncoder | None = None

    @property
    def needs_fit(self) -> bool:
        return self._encoder is None

    def fit(self, texts: Iterable[str]) -> None:
        seen_text = False

        def stream() -> Iterator[str]:
            # Hand the documents over one by one so a large corpus is never held in memory at once.
            nonlocal seen_text
            for text in texts:
                seen_text = seen_text or bool(text)
                yield text

        trainer = hf.trainers.BpeTrainer(
            vocab_size=self.requested_vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer = _byte_level(hf.models.BPE())
        tokenizer.train_from_iterator(stream(), trainer=trainer)
        if not seen_text:
            raise ValueError("cannot train a BPE vocabulary on an empty corpus")
        # The trainer registers <|endoftext|> as an "added token", which HF would cut out of any text
        # containing the literal string; keep it only as a vocabulary entry (see the module docstring).
        state = json.loads(tokenizer.to_str())
        state["added_tokens"] = []
        self._encoder = BPEEncoder(hf.Tokenizer.from_str(json.dumps(state)), END_OF_TEXT, "gptlab-bpe")

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.requested_vocab_size,
            "min_frequency": self.min_frequency,
        }

    @property
    def encoder(self) -> BPEEncoder:
        if self._encoder is None:
            raise RuntimeError("the BPE tokenizer has not been trained yet; call fit(texts) first")
        return self._encoder

    @property
    def trained(self) -> hf.Tokenizer:
        return self.encoder.hf

    @property
    def vocab_size(self) -> int:
        return self.trained.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self.trained.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.encode_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.trained.decode(list(ids), skip_special_tokens=False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.requested_vocab_size,
            "min_frequency": self.min_frequency,
            "hf_tokenizer": None if self._encoder is None else self.trained.to_str(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BPETokenizer:
        tokenizer = cls(state["vocab_size"], state["min_frequency"])
        if state["hf_tokenizer"] is not None:
            tokenizer._encoder = BPEEncoder(
                hf.Tokenizer.from_str(state["hf_tokenizer"]), END_OF_TEXT, "gptlab-bpe"
            )
        return tokenizer


# The file layouts a GPT-2 vocabulary directory may use, in the order they are tried.
GPT2_LAYOUTS = (
    ("encoder.json", "vocab.bpe"),  # OpenAI's original release
    ("vocab.json", "merges.txt"),  # Hugging Face's slow-tokenizer files
    ("tokenizer.json",),  # Hugging Face's single-file format
)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VocabularyFileError(
            f"{file} is not valid UTF-8 JSON ({err}); restore the original file"
        ) from None


def _read_merges_txt(file: Path) -> list[tuple[str, str]]:
    """Merges in rank order from vocab.bpe / merges.txt: an optional '#version' line, then 'left right'."""
    merges = []
    # Split on "\n" only: str.splitlines would also break at exotic separators such as U+0085.
    for number, line in enumerate(file.read_text(encoding="utf-8").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise VocabularyFileError(f"{file} line {number}: expected 'left right', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


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
    merges = []
    for merge in model.get("merges", []):
        # tokenizers < 0.20 writes "left right"; newer versions write ["left", "right"].
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise VocabularyFileError(f"{file}: malformed merge {merge!r}")
        merges.append((parts[0], parts[1]))
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


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE (50,257 tokens) read from local files; ids match OpenAI's exactly.

    ``path`` is a directory holding ``encoder.json`` + ``vocab.bpe`` (OpenAI), ``vocab.json`` +
    ``merges.txt`` or ``tokenizer.json`` (Hugging Face). Nothing is downloaded. The built tokenizer is
    kept as Hugging Face JSON in the state dict, so a checkpoint needs the files no more. Encoding goes
    through ``tiktoken`` with identical ids (see ``fast_bpe``).
    """

    kind = "gpt2"

    def __init__(self, path: str) -> None:
        directory = Path(path).expanduser()
        vocab, merges = self._load(directory)
        self.encoder = BPEEncoder(_byte_level(hf.models.BPE(vocab, merges)), END_OF_TEXT, "gptlab-gpt2")
        # Hash what was read, not the bytes on disk, so the layouts of one vocabulary share a cache key.
        canonical = json.dumps([sorted(vocab.items(), key=lambda item: item[1]), merges], ensure_ascii=False)
        self.vocab_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    @staticmethod
    def _load(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
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
            merges = _read_merges_txt(merges_file)
            return _check_gpt2_vocabulary(_read_json(vocab_file), merges, vocab_file, merges_file), merges
        wanted = "; ".join(" + ".join(layout) for layout in GPT2_LAYOUTS)
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"no GPT-2 vocabulary in '{directory}': looked for {wanted}; found {present or 'nothing'}. {hint}"
        )

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_hash": self.vocab_hash}

    @property
    def vocab_size(self) -> int:
        return self.encoder.hf.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self.encoder.hf.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.encode_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoder.hf.decode(list(ids), skip_special_tokens=False)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab_hash": self.vocab_hash, "hf_tokenizer": self.encoder.hf.to_str()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> GPT2Tokenizer:
        tokenizer = cls.__new__(cls)  # no files to read: the state holds the built tokenizer
        tokenizer.encoder = BPEEncoder(
            hf.Tokenizer.from_str(state["hf_tokenizer"]), END_OF_TEXT, "gptlab-gpt2"
        )
        tokenizer.vocab_hash = state["vocab_hash"]
        return tokenizer
