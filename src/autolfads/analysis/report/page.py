"""The report page: its sections (title, notes, table, figures) and the self-contained HTML that
embeds every figure's PNG as a base64 data URI, so that the one file can be mailed.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["FigureFile", "Section", "render_html"]


class FigureFile(NamedTuple):
    """One figure of the report: its PNG file name in OUT/report/, its caption and its bytes."""

    name: str
    caption: str
    png: bytes


@dataclass
class Section:
    """One part of the page: a title, notes, an optional table and figures."""

    title: str
    notes: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)  # first row = header
    figures: list[FigureFile] = field(default_factory=list)


def render_html(out: Path, sections: Sequence[Section]) -> str:
    """The page: every section's notes, table and figures (PNGs embedded as data URIs)."""
    body = [_heading(out)]
    for section in sections:
        body.extend(_section_lines(section))
    return _PAGE.format(title=html.escape(f"autolfads report: {out.name}"), body="\n".join(body))


def _heading(out: Path) -> str:
    """The page's title line: the run folder and when the report was made."""
    when = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    return (
        f"<h1>autolfads report</h1><p class='where'>{html.escape(str(out.resolve()))} &middot; "
        f"made {when}</p>"
    )


def _section_lines(section: Section) -> list[str]:
    """The HTML lines of one section: heading, notes, table, figures."""
    lines = [f"<section><h2>{html.escape(section.title)}</h2>"]
    lines.extend(f"<p>{html.escape(note)}</p>" for note in section.notes)
    if section.table:
        lines.extend(_table_lines(section.table))
    lines.extend(_figure_html(figure) for figure in section.figures)
    lines.append("</section>")
    return lines


def _table_lines(table: list[list[str]]) -> list[str]:
    """The HTML lines of a table whose first row is the header."""
    header, *rows = table
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    lines = [f"<table><tr>{cells}</tr>"]
    lines.extend(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    lines.append("</table>")
    return lines


def _figure_html(figure: FigureFile) -> str:
    """A figure element with the PNG embedded as a data URI and the file name in the caption."""
    data = base64.b64encode(figure.png).decode("ascii")
    name = html.escape(figure.name)
    return (
        f"<figure><img src='data:image/png;base64,{data}' alt='{name}'>"
        f"<figcaption><b>{name}</b>: {html.escape(figure.caption)}</figcaption>"
        "</figure>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1250px; margin: 1em auto; padding: 0 1em;
  color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }}
.where {{ color: #666; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: .9em; color: #444; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .2em .6em; }}
td {{ text-align: right; font-family: monospace; }} td:first-child {{ text-align: left; }}
</style></head>
<body>
{body}
</body></html>
"""
