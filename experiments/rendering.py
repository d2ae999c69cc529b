"""Every report as one model, rendered twice: Markdown, and HTML from that Markdown.

A report is a list of blocks — ``("h1" | "h2" | "h3", text)``, ``("p", markdown text)``,
``("table", (header, rows))``, ``("img", file name)``. ``render_markdown`` writes them as
CommonMark with GitHub's tables; ``render_html`` renders that Markdown with markdown-it-py
(raw HTML in the text is escaped, not passed through) into a page whose images never
overflow it. ``human`` formats the values reports quote — floats to four significant
figures, mappings as ``key = value`` pairs — and ``save_figure`` writes a PNG at most
``MAX_FIGURE_PX`` wide.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Block", "render_markdown", "render_html", "write_reports", "human",
           "save_figure", "short_label", "fairness_blocks", "MAX_FIGURE_PX", "CSS"]

Block = tuple[str, Any]

#: the widest PNG a report embeds (a 1280 px window shows it whole beside its margins)
MAX_FIGURE_PX = 1200

CSS = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;"
       "line-height:1.45}img{max-width:100%;height:auto}table{border-collapse:collapse;"
       "margin:1em 0;display:block;overflow-x:auto}td,th{border:1px solid #ccc;"
       "padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
       "code{background:#f3f3f3;padding:0 3px;border-radius:3px}")


def number(x: float | None, fmt: str = ".4f", missing: str = "—") -> str:
    """A number in a report's table: ``format(x, fmt)``, or ``missing`` where there is none
    (``None`` or NaN: an undefined estimate, a seed without an evaluation)."""
    return missing if x is None or x != x else format(x, fmt)


def human(value: Any, digits: int = 4) -> str:
    """``value`` as a person reads it: a float to ``digits`` significant figures (``nan``
    and ``inf`` as words), a mapping as ``key = value`` pairs, a list item by item."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "undefined"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} = {human(v, digits)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(human(v, digits) for v in value) + "]"
    return str(value)


def short_label(label: str) -> str:
    """A policy label for a plot: a bundle path shortened to its last two parts
    (``<run>/policy``), a baseline's name as it is."""
    parts = Path(label).parts
    return "/".join(parts[-2:]) if len(parts) > 2 or label.startswith("/") else label


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown (CommonMark + GitHub tables)."""
    out = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + x, ""]
        elif kind == "p":
            out += [x, ""]
        elif kind == "img":
            out += [f"![{x}]({x})", ""]
        elif kind == "table":
            head, rows = x
            out += ["| " + " | ".join(map(_cell, head)) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(map(_cell, r)) + " |" for r in rows] + [""]
        else:
            raise ValueError(f"report block kind {kind!r}; valid: h1, h2, h3, p, table, img")
    return "\n".join(out)


def render_html(blocks: list[Block], title: str) -> str:
    """The blocks' Markdown rendered by markdown-it-py into a standalone HTML page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(
        render_markdown(blocks))
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}"
            "</body></html>\n")


def write_reports(directory: Path, blocks: list[Block]) -> Path:
    """``report.md`` and ``report.html`` of ``blocks`` in ``directory``; the Markdown's path."""
    title = next((x for kind, x in blocks if kind == "h1"), "report")
    (directory / "report.md").write_text(render_markdown(blocks))
    (directory / "report.html").write_text(render_html(blocks, title))
    return directory / "report.md"


def save_figure(fig: Any, path: Path, dpi: float = 110) -> Path:
    """Save a matplotlib figure as a PNG at most ``MAX_FIGURE_PX`` wide (the resolution is
    lowered for a wide figure), and close it."""
    import matplotlib.pyplot as plt

    width = fig.get_figwidth()
    fig.savefig(path, dpi=min(dpi, math.floor(MAX_FIGURE_PX / width)))
    plt.close(fig)
    return path


def fairness_blocks(fairness: dict[str, Any], metric: str, min_size: int = 100
                    ) -> list[Block]:
    """A report's fairness section: ``metric`` per demographic group for each policy, the
    parity with its interval, the alert (``experiments.final_eval.group_fairness``)."""
    names = list(fairness)
    groups = sorted({g for f in fairness.values() for g in f["groups"]})
    small = [f"{n}: " + ", ".join(f"{g} ({k})" for g, k in sorted(f["insufficient"].items()))
             for n, f in fairness.items() if f["insufficient"]]
    if not groups:
        return [("h3", f"Fairness: {metric} by demographic group"),
                ("p", "Too few users in every group to score parity — "
                      f"{'; '.join(small)} (each needs {min_size}).")]
    rows = [[g, *[number(fairness[n]["groups"][g]["mean"], ".3f")
                  if g in fairness[n]["groups"] else "too few" for n in names]]
            for g in groups]
    rows.append(["parity", *[f"{fairness[n]['measure']} {number(fairness[n]['value'], '.3f')} "
                             f"[{number(fairness[n]['low'], '.3f')}, "
                             f"{number(fairness[n]['high'], '.3f')}]"
                             + (" **alert**" if fairness[n]["alert"] else "")
                             for n in names]])
    return [("h3", f"Fairness: {metric} by demographic group"),
            ("table", (["group", *names], rows)),
            ("p", "Parity: the lowest group's mean over the highest's (the difference where "
                  "a group's mean is ≤ 0) with a 95% bootstrap interval; **alert** when the "
                  "interval lies below 0.9 (the write-ups' guardrail; target 0.95)."
                  + (f" Too few users to score (under {min_size}) — {'; '.join(small)}."
                     if small else ""))]
