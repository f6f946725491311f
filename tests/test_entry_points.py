"""The five commands share one pattern: a typo'd key at any depth stops in one line naming the closest
real key, exit status 1, no traceback, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = {
    "train": ["trainer.max_step=30"],
    "eval": ["ckpt_path=x.ckpt", "trainer.max_step=30"],
    "generate": ["ckpt_path=x.ckpt", "paths.log_dirr=/tmp"],
    "predict": ["ckpt_path=x.ckpt", "input=x.txt", "paths.log_dirr=/tmp"],
    "export": ["ckpt_path=x.ckpt", "out=o", "paths.log_dirr=/tmp"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_typod_nested_key_names_the_closest_real_one(command, tmp_path):
    args = COMMANDS[command]
    script = f"from gptlab.{command} import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    wrong = args[-1].split("=")[0]
    right = {"trainer.max_step": "trainer.max_steps", "paths.log_dirr": "paths.log_dir"}[wrong]
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: gptlab-{command} has no setting '{wrong}' (nothing reads it); did you mean {right}? "
        f"(`gptlab-{command} --cfg job` prints every setting)"
    ]


def test_an_appended_key_no_constructor_takes_is_refused_and_one_it_takes_is_not():
    from gptlab.run.entry import refuse_unknown_keys

    with pytest.raises(
        SystemExit, match=r"no setting '\+trainer.max_step' .*did you mean trainer.max_steps\?"
    ):
        refuse_unknown_keys(["+trainer.max_step=30"], "train")
    refuse_unknown_keys(["+model.pretrained_hf=/some/dir", "-m", "trainer.max_steps=2,3"], "train")
