"""Checks and fixes of the raw command line before jsonargparse sees it, for messages a newcomer understands.

- ``--config FILE`` given *before* the subcommand (``python -m framework --config x.yaml fit``) is moved after it:
  jsonargparse would otherwise read the file at the top level and reject every key ("not accepted before
  subcommand"). A file whose top level is keyed by subcommands (``fit: {...}``) stays where it is.
- A config file that is empty (or only comments), is not a mapping, or is not valid YAML is reported with its path
  (and the line and column of a syntax error) instead of ``Unexpected config:`` or ``"<unicode string>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["SUBCOMMANDS", "CommandLineError", "check_config_file", "config_paths", "prepare_args"]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_CONFIG_FLAGS = ("--config", "-c")


class CommandLineError(ValueError):
    """A problem with the command line or a config file it names; the message names the flag or file."""


def _config_flag(token: str) -> tuple[str | None, bool]:
    """``(value, takes_next)`` if ``token`` is a config flag: ``--config=F`` -> ``("F", False)``, ``--config`` ->
    ``(None, True)``; ``(None, False)`` otherwise."""
    for flag in _CONFIG_FLAGS:
        if token == flag:
            return None, True
        if token.startswith(flag + "="):
            return token.split("=", 1)[1], False
    return None, False


def config_paths(args: Sequence[str]) -> list[str]:
    """The config files named on the command line, in order."""
    paths = []
    for i, token in enumerate(args):
        value, takes_next = _config_flag(token)
        if takes_next and i + 1 < len(args):
            paths.append(args[i + 1])
        elif value is not None:
            paths.append(value)
    return paths


def check_config_file(path: str) -> dict | None:
    """Load ``path`` as YAML and return its mapping; ``None`` if the file is missing (jsonargparse reports that).

    Raises:
        CommandLineError: the file is unreadable, empty, not YAML, or not a mapping of options.
    """
    import yaml

    file = Path(path)
    if path == "-" or not file.is_file():
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandLineError(f"config file {path} cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CommandLineError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        raise CommandLineError(f"config file {path} is empty (or only comments); it needs options such as "
                               "'model:', 'data:' and 'trainer:' (see configs/ for examples)")
    if not isinstance(data, dict):
        raise CommandLineError(f"config file {path} must be a mapping of options (e.g. 'model: ...'), "
                               f"got a {type(data).__name__}")
    return data


def prepare_args(args: Sequence[str]) -> list[str]:
    """Check the config files of ``args`` and move ``--config FILE`` given before the subcommand after it."""
    args = [str(a) for a in args]
    for path in config_paths(args):
        check_config_file(path)
    subcommand = next((i for i, token in enumerate(args) if token in SUBCOMMANDS), None)
    if subcommand is None:
        return args
    before, after = args[:subcommand], args[subcommand + 1:]
    kept, moved = [], []
    i = 0
    while i < len(before):
        token = before[i]
        value, takes_next = _config_flag(token)
        path = before[i + 1] if takes_next and i + 1 < len(before) else value
        span = 2 if takes_next else 1
        if path is not None:
            data = check_config_file(path)
            keyed_by_subcommand = data is not None and any(key in SUBCOMMANDS for key in data)
            (kept if keyed_by_subcommand else moved).extend(before[i:i + span])
            i += span
            continue
        kept.append(token)
        i += 1
    return [*kept, args[subcommand], *moved, *after]
