"""Marked sections of the Markdown docs: the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``, which a script rewrites (``replace_section``) and a test reads back
(``read_section``), leaving every other byte of the file as it was."""
from __future__ import annotations

import os
from typing import Optional


def markers(name: str) -> tuple:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(path: str, name: str, body: str, heading: Optional[str] = None) -> None:
    """Put ``body`` between the ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers of
    the Markdown file ``path``, leaving every other byte of the file as it was. If the markers
    are missing: with ``heading``, append ``heading`` and a new marked section at the end;
    without, raise ValueError."""
    begin, end = markers(name)
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        text = text[:i] + block + text[j + len(end):]
    elif heading is not None:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + f"{heading}\n{block}\n"
    else:
        raise ValueError(f"{path} lacks the section markers {begin} ... {end}")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_section(path: str, name: str) -> Optional[str]:
    """The body of section NAME of ``path`` (None if it has no such section)."""
    begin, end = markers(name)
    with open(path) as f:
        text = f.read()
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    return text[i + len(begin):j].strip("\n") if i >= 0 and j >= 0 else None
