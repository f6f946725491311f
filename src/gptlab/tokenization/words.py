"""Word-level preprocessing of classification texts (分词, 去停用词): split into words, optionally drop
stopwords and lowercase, and join the words with single spaces for the tokenizer.

Chinese has no spaces between words: ``words="jieba"`` segments it with jieba (an optional extra, ``zh``;
it bundles its dictionary). ``whitespace`` splits on spaces, ``regex`` keeps the matches of ``pattern``
(words and punctuation marks by default), for scripts with spaces. Stopword lists are bundled
(``stopwords/en.txt``, ``stopwords/zh.txt``: give ``en`` or ``zh``) or read from files (one word a
line, ``#`` starts a comment); ``extra_stopwords`` adds words inline. Stopwords match case-insensitively.
The settings travel in a classifier checkpoint with the lists already read (:meth:`to_hparams`), so
gptlab-eval and gptlab-predict apply the same preprocessing without the files.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

WORD_SPLITS = ("none", "whitespace", "regex", "jieba")
STOPWORD_DIR = Path(__file__).parent / "stopwords"
DEFAULT_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"


def bundled_stopword_lists() -> list[str]:
    return sorted(p.stem for p in STOPWORD_DIR.glob("*.txt"))


def read_stopwords(source: str) -> set[str]:
    """The words of a bundled list's name or of a file, casefolded."""
    path = STOPWORD_DIR / f"{source}.txt" if source in bundled_stopword_lists() else Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"data.preprocessing.stopwords: {source!r} is neither a bundled list "
            f"({bundled_stopword_lists()}) nor a file; give a list name or the path of a file "
            "with one word a line"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip().casefold() for line in lines if line.strip() and not line.lstrip().startswith("#")}


@dataclass(frozen=True)
class WordPreprocessing:
    """How a text becomes words before tokenizing (all off by default: the text is left as it is)."""

    words: str = "none"
    pattern: str = DEFAULT_PATTERN
    lowercase: bool = False
    stopwords: Sequence[str] = ()
    extra_stopwords: Sequence[str] = ()
    _stopword_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.words not in WORD_SPLITS:
            raise ValueError(f"data.preprocessing.words={self.words!r} is not one of {WORD_SPLITS}")
        if self.words == "jieba" and importlib.util.find_spec("jieba") is None:
            raise ImportError(
                "data.preprocessing.words=jieba needs the jieba package (Chinese word segmentation): "
                "pip install -e '.[zh]' (make install includes it)"
            )
        if self.words == "regex":
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(
                    f"data.preprocessing.pattern={self.pattern!r} is not a regex: {err}"
                ) from None
        object.__setattr__(self, "stopwords", tuple(self.stopwords))
        object.__setattr__(self, "extra_stopwords", tuple(self.extra_stopwords))
        if (self.stopwords or self.extra_stopwords) and self.words == "none":
            raise ValueError(
                "data.preprocessing.stopwords removes words, so the text must be split into them: set "
                "data.preprocessing.words to whitespace, regex, or jieba (Chinese)"
            )
        stopwords = {w.casefold() for w in self.extra_stopwords}
        for source in self.stopwords:
            stopwords |= read_stopwords(source)
        object.__setattr__(self, "_stopword_set", frozenset(stopwords))

    @classmethod
    def from_any(cls, value: WordPreprocessing | Mapping | None) -> WordPreprocessing:
        """An instance, a mapping of its fields (a Hydra config node, a checkpoint's hparams) or None."""
        if value is None:
            return cls()
        if isinstance(value, WordPreprocessing):
            return value
        return cls(**dict(value))

    @property
    def active(self) -> bool:
        return self.words != "none" or self.lowercase

    def to_hparams(self) -> dict:
        """Primitive settings with the stopword lists read into ``extra_stopwords``: a checkpoint needs no
        file to apply them."""
        return {
            "words": self.words,
            "pattern": self.pattern,
            "lowercase": self.lowercase,
            "stopwords": [],
            "extra_stopwords": sorted(self._stopword_set),
        }

    def split(self, text: str) -> list[str]:
        if self.words == "whitespace":
            return text.split()
        if self.words == "regex":
            return re.findall(self.pattern, text)
        return [word for word in _jieba().lcut(text) if not word.isspace()]

    def __call__(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.words == "none":
            return text
        return " ".join(w for w in self.split(text) if w.casefold() not in self._stopword_set)


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict..." on every run
    return jieba
