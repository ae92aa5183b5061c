"""One clear line for configuration errors, instead of jsonargparse's nested union diagnostics and full usage."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["FrameworkArgumentParser", "condense_error", "report_error"]

# Lines of jsonargparse's diagnostics that only describe the alternatives that were *not* meant
# (every class-typed argument is ``Optional[...]``) or repeat the raw value.
_NOISE = (
    re.compile(r"^Expected a <class 'NoneType'>"),
    re.compile(r"^Given value type:"),
    re.compile(r"^Given value:"),
    re.compile(r"^Subtypes:"),
    re.compile(r"^Errors:$"),
    re.compile(r"^Does not validate against any of the Union subtypes"),
    re.compile(r"^- Expected a <class 'NoneType'>"),
    # The generic list of what a subclass-typed value may look like, appended to a constructor's own message.
    re.compile(r"^Not a valid subclass of \S+"),
    re.compile(r"^Subclass types expect one of:"),
    re.compile(r"^a class path \(str\)$"),
    re.compile(r"^a dict with class_path entry$"),
    re.compile(r"^a dict without class_path but with init_args entry"),
    re.compile(r"^a dict with parameters accepted by the base class"),
)


def condense_error(message: str) -> str:
    """Keep the informative lines of a jsonargparse error message, joined into one line."""
    kept = []
    for raw in message.replace('\\"', '"').splitlines():
        line = raw.strip().lstrip("- ").strip()
        if not line or any(p.search(line) or p.search(raw.strip()) for p in _NOISE):
            continue
        kept.append(line)
    text = " ".join(kept) if kept else message.strip()
    # Union errors from instantiation embed the same text once more inside a quoted repr.
    text = re.sub(r"\s*Given value: Namespace\(.*$", "", text)
    return text


def report_error(message: str, *, prog: str) -> NoReturn:
    """Write ``error: <one line>`` and a ``--help`` tip to stderr and exit with status 2 (argparse's usage error)."""
    sys.stderr.write(f"error: {condense_error(message)}\n")
    sys.stderr.write(f"tip: for the accepted options run: {prog} --help\n")
    raise SystemExit(2)


class FrameworkArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one line naming the key or value, plus a ``--help`` tip."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        report_error(message, prog=parser.prog.replace(" [options]", ""))
