"""Write a generated section into a Markdown file between <!-- NAME:begin/end --> markers."""
from __future__ import annotations

import os


def replace_section(path: str, name: str, heading: str, body: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n{block}\n"
    with open(path, "w") as f:
        f.write(text)
