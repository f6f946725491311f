"""Files written whole or not at all, with the permissions any other file of the user gets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def umask() -> int:
    """The process umask (reading it means setting it: it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False, newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing and, once the block ends without error, sync
    and rename it over ``path``: a kill mid-write leaves the previous file whole, or no file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the finished file gets what open() would have given it
        os.fchmod(fd, 0o666 & ~umask())
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable_dir(path: str | os.PathLike, setting: str) -> None:
    """Refuse a directory that cannot be created or written in, naming the setting that gave it. The
    nearest existing directory is tried by making (and removing) a directory in it: ``os.access`` says yes
    to root anywhere, /proc included."""
    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    why = None
    if not existing.is_dir():
        why = "is a file, not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = "is not writable"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".gptlab-write-check-"))
        except OSError as err:
            why = f"does not take new directories ({err.strerror})"
    if why:
        raise PermissionError(
            f"{setting}: cannot write in '{path}': '{existing}' {why}; set {setting} to a directory you "
            "can write in"
        )
