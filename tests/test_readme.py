"""Every command in the READMEs is checked against the code, so the guides cannot drift from it.

What is checked, for README.md, README.zh-CN.md and notebooks/README.md:

- Every line of every ```bash block is a command this test recognises, or the test fails and asks to be
  taught the new command (no silent skips). Inline `code` that starts with a command word is a command too.
- ``gptlab-<entry> ...`` (also ``.venv/bin/gptlab-<entry>``, ``python -m gptlab.<entry>``, and inside
  ``srun`` and ``torchrun ... -m gptlab.train``): its overrides are composed with the entry point's config
  (placeholders such as ``<ckpt>`` replaced from PLACEHOLDERS; each value of a sweep composed), so a key,
  group, experiment or search space that does not exist fails here. The slow test RUNS a representative
  command of each kind with tiny settings (RUNS below), in order, in a scratch directory.
- ``make <target>``: the target exists (``make -n``); ``torchrun``: its options parse with torch's own
  argument parser; ``pytest <file>``, ``python benchmarks/<script>`` (or ``data/<script>``): the file
  exists; ``pip install -e '.[extras]'``: the extras exist in pyproject.toml; ``tensorboard``,
  ``jupyter``: the program is installed in the environment. NOT_RUN lists what is never executed here and why.
- Inline config keys (``model.backbone.dropout``, ``data=corpus``, ``top_k=1``, ...): the key exists in
  a composed config, the group option is a file in configs/, a ``+key`` is one the config lacks.
- The experiment and trainer tables list exactly the files of configs/experiment and configs/trainer,
  the target list of ``make help`` is the Makefile's, and the project layout names every tracked module,
  test and notebook.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab import CONFIG_DIR, PROJECT_ROOT
from gptlab.run.hydra import compose_config
from tests.conftest import CHINESE, ENGLISH, TINY_OVERRIDES

READMES = [
    PROJECT_ROOT / "README.md",
    PROJECT_ROOT / "README.zh-CN.md",
    PROJECT_ROOT / "notebooks" / "README.md",
]
ENTRIES = {"train", "generate", "eval", "predict", "export"}
VENV_BIN = Path(sys.executable).parent

# Placeholders in README commands and what they stand for when composing (any string does) and when
# running (the value is looked up at run time in the scratch directory, see Workspace.placeholder).
PLACEHOLDERS = {
    "<time>": "time",  # a run directory's name under logs/train/runs/
    "<ckpt>": "ckpt",  # a checkpoint: a language model's for generate/export, a classifier's for eval/predict
    "<language-model ckpt>": "lm_ckpt",
    "<partition>": "partition",
    "<FLOP/s>": "flops",
    "<wheel index>": "index",
    "...": "ellipsis",  # `ckpt_path=...`, `ARGS="..."`
}
# Names in inline code that look like config keys but are not gptlab's (generic examples, Python arguments).
NOT_CONFIG_KEYS = {"x.y": "the generic example in Troubleshooting", "weights_only": "torch.load's argument"}
# Commands of the READMEs that this test never executes, and why (they are composed / checked above).
NOT_RUN = {
    "make train / test / install / austen / bench": "minutes to hours; `make -n` checks each target exists",
    "make tensorboard, tensorboard --logdir, jupyter lab": "servers that never end; the program must exist",
    "mlflow ui, wandb sync, optuna-dashboard": "a server, an upload; mlflow and wandb must be installed, the "
    "dashboard's study URL must be a sweep's optuna.db",
    "pip install ...": "installs from the network; the extras named must exist in pyproject.toml",
    "torchrun ... -m gptlab.train": "needs several machines or GPUs; tests/test_distributed.py runs two "
    "nodes on loopback",
    "srun / sbatch": "needs a SLURM cluster; the gptlab-train command inside is composed",
    "gptlab-train -m ... / hparams_search=...": "sweeps take minutes; tests/test_sweeps.py runs a grid and "
    "Optuna sweep (slow)",
    "trainer=gpu / ddp / fsdp / mps, device=cuda, precision=16-mixed": "need GPUs; composed here, and "
    "tests/test_distributed.py runs them where GPUs exist",
    "trainer=ddp_sim, model.compile=true": "tens of seconds each; tests/test_train.py and "
    "tests/test_fault_tolerance.py run them (slow)",
    "model/backbone=gpt2-*, experiment=gpt2_classify": "large models or a local Hugging Face directory; "
    "tests/test_hf.py builds them",
}


# --------------------------------------------------------------------------------------------------
# Reading the READMEs


@dataclass(frozen=True)
class Command:
    text: str  # as written (continuations joined, comment stripped, whitespace collapsed)
    where: str  # file:line

    def argv(self, values: Callable[[str, str], str] | None = None) -> list[str]:
        """The command's words as the shell would pass them, placeholders substituted."""
        return shlex.split(substitute(self.text, values))


def substitute(text: str, values: Callable[[str, str], str] | None = None) -> str:
    values = values or (lambda name, _: f"PLACEHOLDER-{name}")

    def replace(match: re.Match) -> str:
        token = match.group(0)
        assert token in PLACEHOLDERS, f"unknown placeholder {token!r}: add it to PLACEHOLDERS in {__file__}"
        return values(PLACEHOLDERS[token], text)

    text = re.sub(r"<[^<>=\s][^<>=]*>", replace, text)
    return re.sub(r"(?<=[=\"])\.\.\.(?=[\s\"]|$)", replace, text)


def strip_comment(line: str) -> str:
    """The line without its shell comment (a # that starts a word, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if opening:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            yield opening.group(1), i + 2, lines[i + 1 : end]
            i = end
        i += 1


def bash_commands(path: Path) -> list[Command]:
    commands = []
    for language, start, lines in fenced_blocks(path.read_text(encoding="utf-8")):
        if language != "bash":
            continue
        pending, first = "", None
        for number, line in enumerate(lines, start):
            if first is None:
                first = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = " ".join(strip_comment(pending + line).split())
            if text:
                commands.append(Command(text, f"{path.name}:{first}"))
            pending, first = "", None
    return commands


def prose(path: Path) -> str:
    """The file without its fenced blocks."""
    text = path.read_text(encoding="utf-8")
    for _, _, lines in fenced_blocks(text):
        text = text.replace("\n".join(lines), "")
    return text


def inline_code(path: Path) -> list[str]:
    return [span.strip() for span in re.findall(r"`([^`\n]+)`", prose(path))]


COMMAND_WORDS = (
    "gptlab-",
    ".venv/bin/",
    "make ",
    "python ",
    "pip ",
    "pytest ",
    "torchrun ",
    "srun ",
    "sbatch ",
    "tensorboard ",
    "jupyter ",
    "source ",
    "mlflow ",
    "wandb ",
    "optuna-dashboard ",
)


def inline_commands(path: Path) -> list[Command]:
    return [
        Command(" ".join(span.split()), f"{path.name} (inline)")
        for span in inline_code(path)
        if span.startswith(COMMAND_WORDS)
    ]


def all_commands() -> list[Command]:
    return [c for readme in READMES for c in (*bash_commands(readme), *inline_commands(readme))]


# --------------------------------------------------------------------------------------------------
# Understanding a command


@dataclass
class EntryCall:
    entry: str  # train, generate, ...
    overrides: list[str]
    multirun: bool


def entry_call(argv: list[str]) -> EntryCall | None:
    """The gptlab entry point a command line runs, with its overrides; None if it runs none."""
    while argv and re.match(r"^[A-Z_]+=", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    if not argv:
        return None
    program = argv[0]
    if program == "srun":
        return entry_call(argv[1:])
    if program == "torchrun" or program.endswith("/torchrun"):
        return entry_call(["python", *argv[argv.index("-m") :]]) if "-m" in argv else None
    name = Path(program).name
    if name.startswith("gptlab-"):
        entry, args = name.removeprefix("gptlab-"), argv[1:]
    elif name.startswith("python") and argv[1:3] and argv[1] == "-m" and argv[2].startswith("gptlab."):
        entry, args = argv[2].removeprefix("gptlab."), argv[3:]
    else:
        return None
    assert entry in ENTRIES, f"unknown entry point gptlab-{entry}"
    overrides, multirun, i = [], False, 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in ("--cfg", "-c"):
            assert args[i + 1] in ("job", "hydra", "all"), f"--cfg takes job, hydra or all, not {args[i + 1]}"
            i += 1
        elif arg.startswith("-"):
            raise AssertionError(
                f"flag {arg!r} is not understood by this test; teach it (and check Hydra has it)"
            )
        else:
            overrides.append(arg)
        i += 1
    return EntryCall(entry, overrides, multirun)


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each sweep (the other sweeps at their first value)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = {}
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_interval_sweep():  # Optuna's interval(low, high): composed at both ends
            key = text.split("=", 1)[0]
            sweeps[text] = [f"{key}={override.value().start}", f"{key}={override.value().end}"]
        elif override.is_sweep_override():
            key = text.split("=", 1)[0]
            sweeps[text] = [f"{key}={value}" for value in override.sweep_string_iterator()]
    if not sweeps:
        return [overrides]
    first = [sweeps[o][0] if o in sweeps else o for o in overrides]
    variants = [first]
    for text, values in sweeps.items():
        for value in values[1:]:
            variants.append([value if o == text else f for o, f in zip(overrides, first, strict=True)])
    return variants


@cache
def composed(entry: str, overrides: tuple[str, ...]) -> DictConfig:
    return compose_config(*overrides, config_name=entry, keep_hydra=True)


def check_composes(command: Command) -> EntryCall | None:
    call = entry_call(command.argv())
    if call is None:
        return None
    for variant in sweep_variants(call.overrides):
        try:
            cfg = composed(call.entry, tuple(variant))
        except Exception as error:
            raise AssertionError(f"{command.where}: `{command.text}` does not compose: {error}") from error
        search = OmegaConf.select(cfg, "hydra.sweeper.params")
        for key in search or {}:  # an Optuna search space names keys that must exist
            assert OmegaConf.select(cfg, key) is not None, (
                f"{command.where}: searched key {key} not in config"
            )
    return call


def make_targets() -> set[str]:
    done = subprocess.run(["make", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return set(re.findall(r"^\s+make (\S+)", done.stdout, re.MULTILINE))


def check_other(command: Command) -> str:
    """Check a command that runs no gptlab entry point; return what was checked."""
    argv = command.argv()
    program = Path(argv[0]).name
    if program == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a] or ["help"]
        for target in targets:
            done = subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True, text=True)
            assert done.returncode == 0, f"{command.where}: `{command.text}`: {done.stderr.strip()}"
        return "make target exists"
    if program == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(argv[1:])
        assert args.module and args.training_script == "gptlab.train", command.text
        assert (VENV_BIN / "torchrun").exists() or shutil.which("torchrun"), "torchrun is not installed"
        return "torchrun options parse"
    if program in ("pytest",) or argv[1:3] == ["-m", "pytest"]:
        files = [a for a in argv if a.endswith(".py")]
        assert files and all((PROJECT_ROOT / f).is_file() for f in files), command.text
        return "test file exists"
    if program.startswith("python"):
        script = argv[1]
        assert script.startswith(("benchmarks/", "data/")) and (PROJECT_ROOT / script).is_file(), command.text
        return "script exists"
    if program == "pip":
        assert argv[1] == "install", command.text
        pyproject = (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
        section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
        extras = re.findall(r"^(\w+) = \[", section, re.MULTILINE)
        for arg in argv[2:]:
            if match := re.match(r"^\.\[(.*)\]$", arg):
                assert set(match.group(1).split(",")) <= set(extras), f"{command.text}: unknown extra"
        return "extras exist (not installed)"
    if program in ("mlflow", "wandb"):  # the UI server and the upload need a browser or the network
        assert (VENV_BIN / program).exists(), f"{program} is not installed (the {program} extra)"
        return "program exists (not started)"
    if program == "optuna-dashboard":
        assert argv[1].startswith("sqlite:///logs/") and argv[1].endswith("/optuna.db"), command.text
        return "the study file's URL (the dashboard is installed by its own pip command)"
    if program in ("tensorboard", "jupyter"):
        assert (VENV_BIN / program).exists() or program == "jupyter", f"{program} is not installed"
        return "program exists (not started)"
    if program in ("source", "sbatch"):
        return "not run"
    raise AssertionError(
        f"{command.where}: `{command.text}` is a command this test does not know; teach tests/test_readme.py "
        "how to check it (and list it in NOT_RUN if it cannot run here)"
    )


# --------------------------------------------------------------------------------------------------
# Fast checks: every command composes or is checked


def test_readmes_have_commands():
    commands = all_commands()
    assert len([c for c in commands if c.where.startswith("README.zh-CN")]) >= 8
    assert len(commands) >= 60


def test_every_readme_command_is_recognised_and_composes():
    kinds: dict[str, int] = {}
    for command in all_commands():
        kind = "composed" if check_composes(command) is not None else check_other(command)
        kinds[kind] = kinds.get(kind, 0) + 1
    print(kinds)
    assert kinds["composed"] >= 50


def test_torchrun_and_slurm_commands_share_one_run_directory(monkeypatch):
    """What the README promises about run directories under torchrun and SLURM."""
    torchrun = next(c for c in all_commands() if c.text.startswith("torchrun "))
    rdzv_id = re.search(r"--rdzv-id=(\S+)", torchrun.text).group(1)
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", rdzv_id)
    call = entry_call(torchrun.argv())
    run_dir = composed(call.entry, tuple(call.overrides)).hydra.run.dir
    assert Path(run_dir).name == f"torchrun-{rdzv_id}" and Path(run_dir).parent.name == "runs"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    srun = next(c for c in all_commands() if c.text.startswith("srun "))
    call = entry_call(srun.argv())
    assert "trainer=ddp" in call.overrides
    without_name = [o for o in call.overrides if not o.startswith(("run_name=", "ckpt_path="))]
    run_dir = compose_config(*without_name, keep_hydra=True).hydra.run.dir
    assert Path(run_dir).name == "slurm-4242"


def flat_keys(node, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from flat_keys(value, f"{prefix}{key}.")


@cache
def known_keys() -> frozenset[str]:
    """Every key of the configs the READMEs' commands compose, plus those of a few more choices."""
    calls = [entry_call(c.argv()) for c in all_commands()]
    pairs = [(c.entry, tuple(v)) for c in calls if c for v in sweep_variants(c.overrides)]
    pairs += [
        ("train", ()),
        ("train", ("data=corpus",)),
        ("train", ("tokenizer=bpe",)),
        ("train", ("tokenizer=gpt2",)),
        ("train", ("trainer=fsdp",)),
        ("train", ("experiment=gpt2_classify",)),
        ("train", ("hparams_search=shakespeare_optuna", "hydra/launcher=slurm")),
        ("train", ("logger=many_loggers",)),
        ("train", ("model/optimizer=muon", "model/scheduler=wsd")),  # the speedrun switches' keys
        *((entry, ()) for entry in sorted(ENTRIES - {"train"})),
    ]
    keys = set()
    for entry, overrides in pairs:
        keys |= set(flat_keys(OmegaConf.to_container(composed(entry, overrides), resolve=False)))
    return frozenset(keys)


GROUPS = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*") if p.is_dir()}


def check_key(token: str, where: str) -> None:
    token = token.strip("'\"")
    key, _, value = token.partition("=")
    plus = key.startswith("+")
    key = key.lstrip("+")
    if key in NOT_CONFIG_KEYS:
        return
    if key in GROUPS:
        if value and value not in ("null", "...") and not value.startswith("<"):
            assert (CONFIG_DIR / key / f"{value}.yaml").is_file(), f"{where}: no config {key}/{value}.yaml"
        return
    if plus:
        default = set(flat_keys(OmegaConf.to_container(composed("train", ()), resolve=False)))
        assert key not in default, f"{where}: `+{key}` adds a key the config already has; drop the +"
        return
    assert key in known_keys(), f"{where}: `{token}` names a config key that no composed config has"


KEY = re.compile(r"^\+?[a-z_]+(?:[./][a-z_0-9]+)*(?:=(?!=)\S*)?$")
FILE_NAME = re.compile(r"\.(json|safetensors|txt|bin|yaml|ckpt|csv|tsv|jsonl|py|md|ipynb|toml)$")
DOTTED = re.compile(r"^\+?(model|data|trainer|callbacks|tokenizer|logger|hydra|paths)\.")


def test_config_keys_named_in_the_prose_exist():
    checked, problems = 0, []
    for readme in READMES:
        for span in inline_code(readme):
            if span.startswith(COMMAND_WORDS) or "*" in span:
                continue
            tokens = [t.strip("'\"") for t in span.split()]
            if not all(KEY.match(t) and not FILE_NAME.search(t) for t in tokens):
                continue
            for token in tokens:
                if DOTTED.match(token) or "=" in token:
                    try:
                        check_key(token, f"{readme.name}: `{span}`")
                    except AssertionError as error:
                        problems.append(str(error).splitlines()[0])
                    checked += 1
    assert not problems, "\n".join(problems)
    assert checked > 100


def table_rows(text: str, header: str) -> list[str]:
    """The first cells of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


def test_experiment_and_trainer_tables_list_every_config():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    experiments = {re.sub(r"`", "", row) for row in table_rows(text, "`experiment=`")}
    assert experiments == {p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")}
    trainers = set()
    for row in table_rows(text, "`trainer=`"):
        trainers |= set(re.findall(r"`(\w+)`", row))
    assert trainers == {p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml")}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_sections_and_files_resolve():
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", prose(readme), re.MULTILINE)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("#"):
                assert target[1:] in anchors, f"{readme.name}: no section for the link {target}"
            elif not target.startswith("http"):
                assert (readme.parent / target.split("#")[0]).exists(), f"{readme.name}: no file {target}"


def test_make_help_targets_are_the_ones_the_readme_lists():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"`make help` lists every target: `([^`]+)`", text).group(1).split()
    assert {*listed, "help"} == make_targets()


def test_project_layout_names_every_tracked_module_test_and_notebook():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Project layout") :]
    files = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    wanted = [
        f
        for f in files
        if re.match(r"^(src/(gptlab|hydra_plugins)/.*\.py|tests/.*\.py|notebooks/.*\.ipynb)$", f)
    ]
    wanted += [str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "tests").glob("test_*.py")]
    missing = sorted({f for f in wanted if Path(f).stem not in layout and Path(f).name not in layout})
    assert not missing, f"the project layout in README.md does not mention {missing}"
    roots = [
        PROJECT_ROOT / d for d in ("src/gptlab", "src/hydra_plugins", "tests", "notebooks", "benchmarks")
    ]
    for name in re.findall(r"[\w/]+\.(?:py|ipynb)\b", layout):
        found = any((root / name).is_file() or list(root.glob(f"**/{name}")) for root in roots)
        assert found, f"the project layout names {name}, which does not exist"


# --------------------------------------------------------------------------------------------------
# Slow: run a representative command of each kind with tiny settings


def steps(n: int) -> list[str]:
    """Train n steps, validating (and writing last.ckpt) every 2, without the test stage."""
    return [
        f"trainer.max_steps={n}",
        "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0",
        "test=false",
    ]


QUIET = [*TINY_OVERRIDES, "callbacks.throughput=null"]
CLASSIFIER = [o for o in TINY_OVERRIDES if not o.startswith("callbacks.text_sampler")]
FDR = ["debug=fdr"]


@dataclass
class Run:
    command: str  # exactly as the README writes it (after joining and stripping the comment)
    extra: list[str]  # tiny settings, applied after the README's overrides


RUNS = [
    # pretraining and resume
    Run("gptlab-train debug=fdr", [*QUIET]),
    Run("gptlab-train run_name=first", [*QUIET, *steps(4)]),
    Run("gptlab-train run_name=first ckpt_path=last", [*QUIET, *steps(6)]),  # resumes at step 4
    Run(
        'gptlab-generate ckpt_path=<ckpt> prompt="ROMEO:" max_new_tokens=500 temperature=0.8 top_k=200 '
        "seed=1337 num_samples=3",
        ["max_new_tokens=8"],
    ),
    Run("gptlab-export ckpt_path=<ckpt> format=hf out=exports/my-gpt2", []),
    Run("gptlab-export ckpt_path=<ckpt> format=safetensors out=exports/my-model", []),
    Run("gptlab-eval ckpt_path=<language-model ckpt> data=shakespeare", ["+trainer.limit_test_batches=2"]),
    # your own corpus: every format and path form
    Run("gptlab-train data=corpus data.path=my_corpus.txt", [*QUIET, *FDR]),
    Run(
        "gptlab-train data=corpus data.path=my_corpus/ tokenizer=bpe",
        [*QUIET, *FDR, "tokenizer.vocab_size=300"],
    ),
    Run("gptlab-train data=corpus 'data.path=my_corpus/**/*.txt'", [*QUIET, *FDR]),
    Run(
        "gptlab-train data=corpus 'data.path=[books/,extra/*.jsonl.gz]' data.text_field=content",
        [*QUIET, *FDR],
    ),
    # classification: one file, separate files, other columns, fine-tuning, eval, predict
    Run(
        "gptlab-train experiment=austen_scratch data.path=texts.csv data.val_fraction=0.1 "
        "data.test_fraction=0.1",
        [*CLASSIFIER, *steps(2), "test=true"],
    ),
    Run(
        "gptlab-train experiment=austen_scratch data.path=null data.train_path=train.csv "
        "data.val_path=val.csv data.test_path=test.csv",
        [*CLASSIFIER, *FDR],
    ),
    Run(
        "gptlab-train experiment=austen_scratch data.path=reviews.csv data.text_field=review "
        "data.label_field=sentiment",
        [*CLASSIFIER, *FDR],
    ),
    Run(
        "gptlab-train experiment=austen_finetune data.path=texts.jsonl "
        "model.pretrained=logs/train/runs/<time>/checkpoints/last.ckpt model.backbone.block_size=64",
        [*CLASSIFIER, *FDR],
    ),
    Run("gptlab-eval ckpt_path=<ckpt> data.path=texts.csv", []),
    Run("gptlab-eval ckpt_path=<ckpt> data.path=null data.test_path=test.csv data.label_field=sentiment", []),
    Run("gptlab-predict ckpt_path=<ckpt> input=new_texts.csv text_field=review output=preds.csv", []),
    # Chinese, last: "<time>" is the latest language-model run, and the fine-tuning above needs an English one
    Run(
        "gptlab-train data=corpus data.path=chinese.txt tokenizer=char model.backbone.block_size=128",
        [*QUIET, *steps(2)],
    ),
    Run(
        "gptlab-generate ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt 'prompt=\"春天\"' "
        "max_new_tokens=200",
        ["max_new_tokens=8"],
    ),
]


class Workspace:
    """A scratch directory standing in for the checkout: the READMEs' relative paths resolve in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lm_run: Path | None = None  # the latest language-model run
        self.classifier_run: Path | None = None
        self.last_run: Path | None = None
        self.write_inputs()

    def write_inputs(self) -> None:
        root = self.root
        (root / "my_corpus.txt").write_text((ENGLISH + CHINESE) * 30, encoding="utf-8")
        (root / "my_corpus" / "sub").mkdir(parents=True)
        (root / "my_corpus" / "plays.txt").write_text(ENGLISH * 20, encoding="utf-8")
        (root / "my_corpus" / "sub" / "poems.txt").write_text(CHINESE * 20, encoding="utf-8")
        (root / "books").mkdir()
        (root / "books" / "one.txt").write_text(ENGLISH * 20, encoding="utf-8")
        (root / "extra").mkdir()
        with gzip.open(root / "extra" / "news.jsonl.gz", "wt", encoding="utf-8") as file:
            for _ in range(20):
                file.write(json.dumps({"content": CHINESE, "source": "web"}, ensure_ascii=False) + "\n")
        (root / "chinese.txt").write_text(("春天来了，" + CHINESE) * 30, encoding="utf-8")
        good = ["What a lovely day.", "A delightful evening.", "Such a kind letter.", "Charming company."]
        bad = ["Dreadful, simply dreadful.", "A tedious dinner.", "Such a rude remark.", "Wretched weather."]
        rows = [(f"{text} {i}", label) for i in range(10) for label, texts in (("pos", good), ("neg", bad))
                for text in texts]  # fmt: skip
        self.write_csv("texts.csv", ["text", "label"], rows)
        self.write_csv("train.csv", ["text", "label"], rows)
        self.write_csv("val.csv", ["text", "label"], rows[:16])
        self.write_csv(
            "test.csv", ["text", "label", "sentiment"], [(t, label, label) for t, label in rows[:16]]
        )
        self.write_csv("reviews.csv", ["review", "sentiment"], rows)
        self.write_csv("new_texts.csv", ["review"], [("What a kind letter.",), ("A rude, wretched day.",)])
        # fine-tuned from a pretraining on my_corpus.txt, which has no digits (more than 0.5% of the
        # training text missing from its vocabulary stops the run: data.unknown_chars)
        with (root / "texts.jsonl").open("w", encoding="utf-8") as file:
            for text, label in rows:
                file.write(json.dumps({"text": text.rstrip("0123456789 "), "label": label}) + "\n")

    def write_csv(self, name: str, header: list[str], rows: list[tuple]) -> None:
        with (self.root / name).open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows([header, *rows])

    def placeholder(self, name: str, command: str) -> str:
        classifier = command.startswith(("gptlab-eval", "gptlab-predict")) and "language-model" not in command
        checkpoints = {
            "time": lambda: self.lm_run.name,
            "lm_ckpt": lambda: str(self.lm_run / "checkpoints" / "last.ckpt"),
            "ckpt": lambda: str(
                next((self.classifier_run / "checkpoints").glob("best-*.ckpt"))
                if classifier
                else self.lm_run / "checkpoints" / "last.ckpt"
            ),
        }
        assert name in checkpoints, f"no run-time value for placeholder {name}"
        return checkpoints[name]()

    def run(self, command: Command, extra: list[str]) -> object:
        from gptlab.eval import evaluate
        from gptlab.export import export
        from gptlab.generate import generate
        from gptlab.predict import predict
        from gptlab.train import train

        call = entry_call(command.argv(self.placeholder))
        paths = [f"paths.log_dir={self.root / 'logs'}", f"paths.cache_dir={self.root / 'cache'}"]
        cfg = compose_config(*call.overrides, *extra, *paths, config_name=call.entry, keep_hydra=True)
        run_dir = Path(cfg.hydra.run.dir)
        with open_dict(cfg):
            del cfg.hydra
            cfg.paths.output_dir = str(run_dir)
        functions = {
            "train": train,
            "generate": generate,
            "eval": evaluate,
            "predict": predict,
            "export": export,
        }
        result = functions[call.entry](cfg)
        if call.entry == "train":
            self.last_run = run_dir
            # `<time>` names a run of logs/train/runs/ (debug=fdr runs go to logs/debug/runs/)
            if run_dir.parent == self.root / "logs" / "train" / "runs":
                if cfg.model._target_.endswith("GPTClassifier"):
                    self.classifier_run = run_dir
                else:
                    self.lm_run = run_dir
        return result


@pytest.mark.slow
def test_readme_commands_run_with_tiny_settings(tmp_path, monkeypatch):
    commands = {c.text: c for c in all_commands()}
    missing = [run.command for run in RUNS if run.command not in commands]
    assert not missing, f"these commands of RUNS are no longer in the READMEs: {missing}"
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path)
    for run in RUNS:
        command = commands[run.command]
        try:
            result = ws.run(command, run.extra)
        except Exception as error:
            raise AssertionError(
                f"{command.where}: `{command.text}` failed with tiny settings: {error}"
            ) from error
        text = command.text
        if text.startswith("gptlab-train") and "debug=fdr" not in [
            *text.split(),
            *run.extra,
        ]:  # fdr saves none
            assert (ws.last_run / "checkpoints" / "last.ckpt").is_file(), text
        if "ckpt_path=last" in text:  # resumed in the same directory, up to the new max_steps
            assert ws.last_run.name == "first" and len(list(ws.last_run.parent.iterdir())) == 1
            state = torch.load(ws.last_run / "checkpoints" / "last.ckpt", weights_only=True)
            assert state["global_step"] == 6
        if text.startswith("gptlab-generate"):
            prompt = "ROMEO:" if "ROMEO" in text else "春天"
            assert len(result) == (3 if "num_samples=3" in text else 1) and result[0].startswith(prompt)
        if text.startswith("gptlab-export"):
            assert result and all(Path(f).is_file() for f in result)
        if text.startswith("gptlab-eval"):
            assert "test/loss" in result
        if text.startswith("gptlab-predict"):
            with Path("preds.csv").open(encoding="utf-8") as file:
                rows = list(csv.DictReader(file))
            assert len(rows) == 2 and {row["label"] for row in rows} <= {"pos", "neg"}
