"""The token cache as files on disk: permissions, lock files, unwritable and damaged directories."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gptlab.data import cache as cache_module
from gptlab.data.cache import CorruptCacheError, build_token_cache
from gptlab.data.datamodules import PretrainDataModule
from gptlab.run.dirs import LogDirUnwritable, run_directory
from gptlab.tokenization import CharTokenizer


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_cache_entries_get_the_permissions_of_any_directory_the_user_makes(corpus, tmp_path, mask):
    previous = os.umask(mask)
    try:
        cache = build_token_cache(corpus, CharTokenizer(), tmp_path / "cache")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(previous)
    assert cache.directory.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert cache.directory.stat().st_mode & 0o777 == 0o777 & ~mask


def test_no_lock_file_is_left_behind_and_concurrent_preparations_share_one_entry(corpus, tmp_path):
    results, errors = [], []

    def prepare():
        try:
            results.append(build_token_cache(corpus, CharTokenizer(), tmp_path / "cache").directory)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results[0].name]  # no .lock, no .tmp-


def test_a_lock_file_deleted_while_waiting_is_taken_again(tmp_path):
    lock = tmp_path / ".key.lock"
    order = []
    with cache_module._exclusive_lock(lock):
        waiter = threading.Thread(target=lambda: order.append(_hold(lock)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # it waits for this holder
        order.append("first done")
    waiter.join(timeout=10)
    assert order == ["first done", "second held"] and not lock.exists()


def _hold(lock: Path) -> str:
    with cache_module._exclusive_lock(lock):
        return "second held"


def test_a_damaged_cache_entry_is_named_for_deletion(corpus, tmp_path):
    data = PretrainDataModule(str(corpus), CharTokenizer(), block_size=8, cache_dir=str(tmp_path / "cache"))
    cache = build_token_cache(corpus, CharTokenizer(), tmp_path / "cache", split=data._split)
    with open(cache.tokens_path, "r+b") as tokens:
        tokens.truncate(100)  # a partial copy of the cache
    with pytest.raises(CorruptCacheError, match=rf"entry '{cache.directory}' is damaged .*tokens.bin has 100 "
                       rf"bytes.*\(rm -r '{cache.directory}'\) and the next run tokenizes"):  # fmt: skip
        data.setup("fit")
    (cache.directory / "meta.json").write_text("{not json")
    with pytest.raises(CorruptCacheError, match="is damaged .*JSONDecodeError"):
        data.setup("fit")


def test_unwritable_log_and_cache_directories_name_their_setting(corpus, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(LogDirUnwritable, match=r"paths.log_dir: cannot write in .*a_file' is a file, not a"):
        run_directory(str(blocker / "train" / "runs"))
    with pytest.raises(
        PermissionError, match=r"paths.cache_dir: cannot write in .*is a file, not a directory"
    ):
        build_token_cache(corpus, CharTokenizer(), blocker / "cache")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != read_only and real_access(p, mode))
    with pytest.raises(
        PermissionError, match=r"paths.cache_dir: .*read_only' is not writable; set paths.cache_dir"
    ):
        build_token_cache(corpus, CharTokenizer(), read_only / "cache")


# a sweep's -m after its overrides too, which Hydra's own parser refuses ("unrecognized arguments")
@pytest.mark.parametrize(
    "sweep", [[], ["-m", "seed=1,2"], ["seed=1,2", "-m"]], ids=["run", "sweep", "sweep, -m last"]
)
def test_an_unwritable_log_dir_stops_with_one_line_and_no_traceback(tmp_path, sweep):
    # /proc takes no new directories, even for root (for whom os.access says every directory is writable)
    command = [sys.executable, "-m", "gptlab.train", *sweep, "paths.log_dir=/proc/gptlab_logs",
               f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: paths.log_dir: cannot write in '/proc/gptlab_logs")
    assert line.endswith("set paths.log_dir to a directory you can write in")
    assert not (tmp_path / "cache").exists()
