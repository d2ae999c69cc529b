"""The README's commands, for the tests that run them as written.

A test names a README command line by a fragment of it (``command("agent=sb3_ppo")``; a
final ``$`` anchors the fragment at the line's end); its
placeholders (``outputs/<date>/<time>/policy``) are filled with what the test made, and
overrides the test needs are appended after the line (Hydra takes a key's last value: a
budget shrunk for the suite, a run directory under ``tmp_path``) — the line itself is the
README's. ``tests/test_readme.py`` checks that every command line of the README is run by
some test this way, or says why not.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON = ".venv/bin/python"


def lines() -> list[str]:
    """Every command line of the README's ``bash`` blocks, comments and ``&`` dropped."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip().removesuffix("&").strip()
            if line:
                out.append(line)
    return out


def matches(fragment: str, text: str) -> bool:
    """``fragment`` is in the line ``text`` (at its end, if the fragment ends with ``$``)."""
    return text.endswith(fragment[:-1]) if fragment.endswith("$") else fragment in text


def line(fragment: str) -> str:
    """The one README command line that ``fragment`` matches (``matches``)."""
    found = [x for x in lines() if matches(fragment, x)]
    assert len(found) == 1, f"{fragment!r} is in {len(found)} README command lines: {found}"
    return found[0]


def lines_with(fragment: str) -> list[str]:
    """Every README command line that contains ``fragment``, in the README's order (a
    sequence a test runs as written, such as the registry's)."""
    return [x for x in lines() if fragment in x]


def command(fragment: str, fill: Mapping[str, str | Path] | None = None,
            extra: Sequence[str] = ()) -> list[str]:
    """``argv`` of the README line containing ``fragment``: its placeholders replaced by
    ``fill``, the README's ``.venv/bin/python`` by this interpreter, ``extra`` appended."""
    text = line(fragment)
    for placeholder, value in (fill or {}).items():
        assert placeholder in text, f"{placeholder!r} is not in the README line {text!r}"
        text = text.replace(placeholder, str(value))
    words = shlex.split(text)
    if words[0] == PYTHON:
        words[0] = sys.executable
    return words + list(extra)


def overrides(fragment: str, fill: Mapping[str, str | Path] | None = None,
              extra: Sequence[str] = ()) -> list[str]:
    """The Hydra overrides of a ``python -m experiments.<app>`` README line (what follows the
    module), as ``command`` fills and extends them — for a test that composes in-process."""
    words = command(fragment, fill, extra)
    assert words[1] == "-m" and words[2].startswith("experiments."), words
    return words[3:]
