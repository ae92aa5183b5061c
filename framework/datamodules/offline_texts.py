"""Real English prose available offline, from files shipped with CPython and with SciPy (no downloads).

- "python_docs": the Python documentation topics (`pydoc_data.topics`, CPython stdlib), prose paragraphs only.
- "idle_guide": the IDLE user guide (`idlelib/help.html`, CPython stdlib), text of its <p>/<li>/<dd> elements.
- "licenses": the licence texts bundled with SciPy's wheel (`scipy-*.dist-info/LICENSE.txt`: BSD, GPL-3.0 with the
  GCC runtime exception, LGPL-2.1, ...), re-flowed into paragraphs.
"""

from __future__ import annotations

import html.parser
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

TEXT_SOURCES = ("python_docs", "idle_guide", "licenses")


def _english_enough(text: str) -> bool:
    """Prose filter: long enough, mostly letters and spaces (drops code, tables and headings)."""
    if len(text) < 80 or re.fullmatch(r"[*=\-~^]+", text.replace(" ", "")):
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters / len(text) > 0.85


def _python_docs() -> list[str]:
    import pydoc_data.topics

    paragraphs = []
    for name in sorted(pydoc_data.topics.topics):
        for block in re.split(r"\n\s*\n", pydoc_data.topics.topics[name]):
            lines = block.splitlines()
            if not lines or any(line.startswith((" ", "\t")) for line in lines):
                continue  # indented blocks are code, grammar or tables
            text = " ".join(line.strip() for line in lines)
            if _english_enough(text):
                paragraphs.append(text)
    return paragraphs


class _BlockText(html.parser.HTMLParser):
    """Collects the text of <p>, <li> and <dd> elements (tags inside them are flattened)."""

    BLOCKS = ("p", "li", "dd")

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._depth = 0
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS:
            if self._depth == 0:
                self._buf = []
            self._depth += 1

    def handle_endtag(self, tag):
        if tag in self.BLOCKS and self._depth > 0:
            self._depth -= 1
            if self._depth == 0:
                self.blocks.append(" ".join("".join(self._buf).split()))

    def handle_data(self, data):
        if self._depth > 0:
            self._buf.append(data)


def _idle_guide() -> list[str]:
    import idlelib

    path = Path(idlelib.__file__).parent / "help.html"
    if not path.is_file():
        raise ValueError(f"the IDLE user guide is missing from this Python install ({path})")
    parser = _BlockText()
    parser.feed(path.read_text(encoding="utf-8"))
    return [b.replace("\u00b6", "").strip() for b in parser.blocks if _english_enough(b.replace("\u00b6", ""))]


def _licenses() -> list[str]:
    try:
        files = metadata.files("scipy") or []
    except metadata.PackageNotFoundError:
        raise ValueError("text source 'licenses' needs SciPy installed (its wheel bundles the licence texts)") from None
    found = [f for f in files if f.name == "LICENSE.txt" and f.parent.name.endswith(".dist-info")]
    if not found:
        raise ValueError("SciPy's dist-info has no LICENSE.txt; use another text source")
    raw = Path(found[0].locate()).read_text(encoding="utf-8")
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        text = " ".join(line.strip() for line in block.splitlines())
        if _english_enough(text):
            paragraphs.append(text)
    return paragraphs


@lru_cache(maxsize=None)
def source_paragraphs(name: str) -> tuple[str, ...]:
    """Prose paragraphs of one offline text source (see `TEXT_SOURCES`)."""
    readers = {"python_docs": _python_docs, "idle_guide": _idle_guide, "licenses": _licenses}
    if name not in readers:
        raise ValueError(f"text source must be one of {TEXT_SOURCES}, got {name!r}")
    paragraphs = tuple(readers[name]())
    if not paragraphs:
        raise ValueError(f"text source {name!r} yielded no prose paragraphs")
    return paragraphs
