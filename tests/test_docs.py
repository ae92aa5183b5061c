"""Every fenced shell or Python block in README.md and docs/*.md runs here on tiny settings, or is marked.

A block that cannot run in CI is preceded, on the line just above its opening fence, by one of
``<!-- doc-test: skip gpu -->``, ``<!-- doc-test: skip network -->`` or ``<!-- doc-test: skip long -->``
(multi-minute reproduction commands). Other fences (``yaml``, ``text``, ...) are not run.

Python blocks run as a script in a fresh interpreter from a scratch directory (``configs/`` and ``tests/`` linked in).
Shell blocks run line by line (``\\`` continuations joined, ``#`` comments dropped, ``&&`` / ``;`` split), with these
documented substitutions so each stays within seconds:

- ``python -m framework fit|validate|test|predict ...`` runs with the config's ``# sweep-args:`` (the overrides
  tests/test_config_sweep.py uses) and ``--trainer.fast_dev_run=1`` appended; ``--help`` / ``--print_config`` run as
  written. ``--ckpt_path`` needs a trained checkpoint: such a line belongs in a block marked ``skip long``.
- ``python benchmarks/<name>.py ARGS``: the script's ``--help`` must list every ``--flag`` of ARGS (the benchmark
  itself takes minutes; its JSON results are in docs/results.md).
- ``make TARGET``: ``make -n TARGET`` (the target exists and expands).
- ``wandb SUB ARGS``: ``wandb SUB --help`` must list every ``--flag`` of ARGS.
- ``python -m pytest ARGS`` / ``pytest ARGS``: collection of tests/test_packaging.py with ARGS' options (they and
  the marker expressions parse; test paths are dropped).

``nice`` / ``timeout`` prefixes and ``VAR=value`` assignments are applied to the command they precede. Any other
command (``pip``, ``torchrun``, ``srun``, shell loops ...) fails the test unless its block is marked.
"""

from __future__ import annotations

import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
SKIP_REASONS = ("gpu", "network", "long")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*skip\s+(?P<reason>[a-z]+)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
PYTHON_LANGS = {"python", "py", "python3"}
PYTHONS = {"python", "python3", ".venv/bin/python", "$(VENV)/bin/python"}


@dataclass(frozen=True)
class DocBlock:
    """One fenced code block: file, 1-based line of its opening fence, language, text and skip reason (or None)."""

    path: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def kind(self) -> str | None:
        return "shell" if self.lang in SHELL_LANGS else "python" if self.lang in PYTHON_LANGS else None


class DocBlockError(AssertionError):
    """A block that does not run (or a command the doc test cannot run): names the block and the command."""


def extract_blocks(path: Path, text: str | None = None) -> tuple[list[DocBlock], list[str]]:
    """The fenced blocks of a markdown file and the problems of its ``doc-test`` markers."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, problems = [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("<!--") and "doc-test" in line:  # (prose may quote a marker in backticks)
            match = MARKER.match(line)
            if match is None or match["reason"] not in SKIP_REASONS:
                problems.append(f"{path.name}:{i + 1}: bad marker {line.strip()!r}; use <!-- doc-test: skip "
                                f"{'|'.join(SKIP_REASONS)} -->")
            elif i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
                problems.append(f"{path.name}:{i + 1}: a doc-test marker must be on the line just above a fence")
        opening = FENCE.match(line)
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        skip = marker["reason"] if marker and marker["reason"] in SKIP_REASONS else None
        blocks.append(DocBlock(path, i + 1, opening["lang"].lower(), "\n".join(body) + "\n", skip))
        i = j + 1
    return blocks, problems


def shell_commands(text: str) -> list[list[str]]:
    """Commands of a shell block as token lists: continuations joined, comments and prompts dropped, split on
    ``&&`` and ``;``."""
    joined, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        joined.append(line)
    commands = []
    for line in joined:
        stripped = line.strip()
        if stripped.startswith("$ "):
            stripped = stripped[2:]
        tokens = shlex.split(stripped, comments=True)
        current: list[str] = []
        for token in tokens:
            ends = token in ("&&", ";") or token.endswith(";")
            word = token.rstrip(";") if token not in ("&&", ";") else ""
            if word:
                current.append(word)
            if ends and current:
                commands.append(current)
                current = []
        if current:
            commands.append(current)
    return commands


def sweep_args(config: str) -> list[str]:
    """The ``# sweep-args:`` overrides of a config (what tests/test_config_sweep.py runs it with)."""
    path = REPO_ROOT / config
    if not path.is_file():
        return []
    args = []
    for line in path.read_text().splitlines():
        if line.strip().startswith("# sweep-args:"):
            args += shlex.split(line.split(":", 1)[1])
    return args


def _flags(tokens: list[str]) -> list[str]:
    """The ``--option`` names of a command line, up to a ``--`` (after which options belong to another program)."""
    tokens = tokens[:tokens.index("--")] if "--" in tokens else tokens
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise DocBlockError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def _framework_cli(args: list[str], cwd: Path) -> None:
    """``python -m framework ARGS`` in this process (one Lightning import for all blocks), tiny settings."""
    from framework.cli import main

    if any(a in ("-h", "--help", "--print_config") or a.startswith("--print_config=") for a in args):
        tiny = args
    elif any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in args):
        raise DocBlockError(f"`python -m framework {shlex.join(args)}` needs a trained checkpoint: "
                            "put it in a block marked <!-- doc-test: skip long -->")
    else:
        configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
        extra = [x for c in configs for x in sweep_args(c)]
        tiny = [*args, *extra, "--trainer.fast_dev_run=1"]
    old_cwd, old_argv = Path.cwd(), sys.argv
    out = io.StringIO()
    try:
        os.chdir(cwd)
        sys.argv = ["framework"]
        with redirect_stdout(out), redirect_stderr(out):
            main(tiny)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise DocBlockError(f"`python -m framework {shlex.join(tiny)}` exited {stop.code}:\n"
                                f"{out.getvalue()[-3000:]}") from None
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv


def _benchmark_help(script: str, args: list[str]) -> None:
    path = REPO_ROOT / script
    if not path.is_file():
        raise DocBlockError(f"benchmark script {script} does not exist")
    out = io.StringIO()
    old_argv = sys.argv
    try:
        sys.argv = [str(path), "--help"]
        with redirect_stdout(out), redirect_stderr(out), pytest.raises(SystemExit):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = old_argv
    missing = [f for f in _flags(args) if f not in out.getvalue()]
    if missing:
        raise DocBlockError(f"{script} does not accept {missing} (its --help lists no such option)")


def run_shell_command(tokens: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run (or check, per the module docstring) one documented shell command; DocBlockError if it fails."""
    tokens = list(tokens)
    while tokens:
        if re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
            key, value = tokens.pop(0).split("=", 1)
            env = {**env, key: value}
        elif tokens[0] in ("nice", "timeout"):  # `nice -n 10 CMD`, `timeout 600 CMD`: run CMD
            tokens.pop(0)
            while tokens and (tokens[0].startswith("-") or tokens[0].isdigit()):
                tokens.pop(0)
        else:
            break
    program, args = tokens[0], tokens[1:]
    if program in PYTHONS and args[:2] == ["-m", "framework"]:
        _framework_cli(args[2:], cwd)
    elif (program in PYTHONS and args[:2] == ["-m", "pytest"]) or program == "pytest":
        options = args[2:] if program in PYTHONS else args
        options = [a for a in options if not a.startswith("tests")]  # the paths: collection of one small file
        _run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *options,
              "tests/test_packaging.py"], REPO_ROOT, env)
    elif program in PYTHONS and args and args[0].startswith("benchmarks/") and args[0].endswith(".py"):
        _benchmark_help(args[0], args[1:])
    elif program == "make":
        targets = [a for a in args if "=" not in a and not a.startswith("-")]
        _run(["make", "-n", *targets], REPO_ROOT, env, timeout=60)
    elif program == "wandb":
        sub = [a for a in args if not a.startswith("-")][:1]
        help_text = _run([str(Path(sys.executable).with_name("wandb")), *sub, "--help"], cwd, env, timeout=120)
        missing = [f for f in _flags(args) if f not in help_text]
        if missing:
            raise DocBlockError(f"`wandb {' '.join(sub)}` does not accept {missing}")
    else:
        raise DocBlockError(f"`{shlex.join(tokens)}` cannot run in CI: mark its block with "
                            f"<!-- doc-test: skip gpu|network|long --> on the line just above the fence")


def _scratch(tmp_path: Path) -> Path:
    for name in ("configs", "tests", "benchmarks"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(REPO_ROOT / name)
    return tmp_path


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
            "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


def run_block(block: DocBlock, tmp_path: Path) -> None:
    cwd, env = _scratch(tmp_path), _env(tmp_path)
    if block.kind == "python":
        script = tmp_path / "doc_block.py"
        script.write_text(block.text)
        try:
            _run([sys.executable, str(script)], cwd, env, timeout=600)
        except DocBlockError as error:
            raise DocBlockError(f"python block {block.id}: {error}") from None
        return
    for tokens in shell_commands(block.text):
        try:
            run_shell_command(tokens, cwd, env)
        except DocBlockError as error:
            raise DocBlockError(f"shell block {block.id}: {error}") from None


def _all_blocks() -> list[DocBlock]:
    return [b for path in DOC_FILES for b in extract_blocks(path)[0] if b.kind is not None]


def test_markers_are_well_formed():
    problems = [p for path in DOC_FILES for p in extract_blocks(path)[1]]
    assert not problems, problems


@pytest.mark.slow
@pytest.mark.parametrize("block", _all_blocks(), ids=lambda b: b.id)
def test_doc_block_runs(block, tmp_path):
    if block.skip:
        pytest.skip(f"marked: needs {block.skip}")
    run_block(block, tmp_path)


# ----------------------------------------------------------------- the checker itself, on synthetic markdown

SAMPLE = """intro
<!-- doc-test: skip gpu -->
```bash
python -m pytest -m gpu
```

```python
print("hi")
```
<!-- doc-test: skip maybe -->
```bash
make demo
```
<!-- doc-test: skip long -->
some text
"""


def test_extractor_reads_markers_and_flags_bad_ones():
    blocks, problems = extract_blocks(REPO_ROOT / "SAMPLE.md", SAMPLE)
    assert [(b.line, b.lang, b.skip) for b in blocks] == [(3, "bash", "gpu"), (7, "python", None), (11, "bash", None)]
    assert blocks[1].text == 'print("hi")\n'
    assert len(problems) == 2
    assert "bad marker" in problems[0] and "just above a fence" in problems[1]


def test_shell_parsing():
    text = "# a comment\npython -m framework fit \\\n  --config x.yaml  # trailing\nmake a && make b; wandb sync x\n"
    assert shell_commands(text) == [["python", "-m", "framework", "fit", "--config", "x.yaml"], ["make", "a"],
                                    ["make", "b"], ["wandb", "sync", "x"]]


def test_unmarked_block_that_cannot_run_fails(tmp_path):
    block = DocBlock(REPO_ROOT / "X.md", 1, "bash", "pip install something\n", None)
    with pytest.raises(DocBlockError, match="cannot run in CI"):
        run_block(block, tmp_path)


def test_removed_wandb_flag_is_caught(tmp_path):
    """``wandb sync --sync-all`` (removed in wandb 0.31) was in the README."""
    import wandb

    block = DocBlock(REPO_ROOT / "X.md", 1, "bash", "wandb sync --no-such-flag-xyz outputs/wandb\n", None)
    with pytest.raises(DocBlockError, match="--no-such-flag-xyz"):
        run_block(block, tmp_path)
    major, minor = (int(x) for x in wandb.__version__.split(".")[:2])
    if (major, minor) >= (0, 31):
        bad = DocBlock(REPO_ROOT / "X.md", 1, "bash", "wandb sync --sync-all outputs/wandb\n", None)
        with pytest.raises(DocBlockError, match="--sync-all"):
            run_block(bad, tmp_path)


def test_failing_python_block_fails(tmp_path):
    block = DocBlock(REPO_ROOT / "X.md", 1, "python", "from framework.callbacks import AlphaPruning\n"
                     "AlphaPruning(target_sparsity=1.5)\n", None)
    with pytest.raises(DocBlockError, match="target_sparsity"):
        run_block(block, tmp_path)


@pytest.mark.slow
def test_readme_test_count_matches_the_suite():
    """The README's "~N tests" is within 5 % of what pytest collects (update the README when the suite grows)."""
    match = re.search(r"~([\d,]+) tests", (REPO_ROOT / "README.md").read_text())
    assert match, "README.md states the size of the suite as '~N tests'"
    claimed = int(match[1].replace(",", ""))
    out = _run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], REPO_ROOT,
               _env(REPO_ROOT), timeout=900)
    collected = int(re.search(r"(\d+) tests? collected", out)[1])
    assert abs(collected - claimed) <= 0.05 * collected, f"README says ~{claimed} tests, pytest collects {collected}"


WANDB_COMMAND = re.compile(r"\bwandb\s+(?P<sub>[a-z][a-z-]*)(?P<rest>[^`#)\n]*)")


def test_wandb_commands_anywhere_in_docs_use_existing_flags(tmp_path):
    """Every ``wandb <sub> --flag`` written in README.md or docs/*.md (blocks, comments, inline code) is accepted by
    the installed wandb (the README once suggested ``wandb sync --sync-all``, removed in wandb 0.31)."""
    uses: dict[str, set[str]] = {}
    for path in DOC_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in WANDB_COMMAND.finditer(line):
                flags = set(_flags(match["rest"].split()))
                if match["sub"] in {"sync", "login", "offline", "online", "clean", "artifact", "init", "status"}:
                    uses.setdefault(match["sub"], set()).update(flags)
    assert "sync" in uses, "the README documents `wandb sync`"
    for sub, flags in uses.items():
        help_text = _run([str(Path(sys.executable).with_name("wandb")), sub, "--help"], tmp_path, _env(tmp_path),
                         timeout=120)
        missing = sorted(f for f in flags if f not in help_text)
        assert not missing, f"`wandb {sub}` in the docs uses {missing}, which the installed wandb does not accept"
