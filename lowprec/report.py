"""Reports a person reads: ``report.md`` and a self-contained ``report.html`` from sections of figures and tables.

Contract
--------
``write_report(out_dir, title, sections, meta)`` writes ``out_dir/report.md`` and ``out_dir/report.html``
and returns ``(md, html)``.

* A report is a title, a ``meta`` block (key -> value strings: run id, lab version, seed, command, ...)
  and ``sections``; a section is a title, text (paragraphs separated by blank lines; Markdown is kept
  as is in report.md and shown as plain text in report.html) and items, each a ``Figure`` or a ``Table``.
* Every item carries a ``caption`` (what it shows) and a ``source`` (where its numbers come from: the
  study, the store, the data set); both must be non-empty. Figures and tables are numbered in order.
* report.md links each figure by its path relative to ``out_dir`` (so the figures must stay beside it);
  report.html embeds each PNG as a base64 ``data:`` URI and each table as an HTML table, with inline
  CSS and no script or external reference: the one file is the whole report.
* Bad input (a figure that is not an existing PNG file, an empty caption or source, an item that is
  neither Figure nor Table) is a ValueError / TypeError before anything is written.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.7em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f3f3f3; border-bottom: 2px solid #ccc; }
table.meta th { background: none; font-weight: 600; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { font-size: 14px; color: #333; margin: .3em 0 1em; }
.source { display: block; color: #666; font-size: 13px; }
.tablewrap { overflow-x: auto; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG figure, what it shows (caption) and where its data comes from (source)."""

    path: Path
    caption: str
    source: str


@dataclass(frozen=True)
class Table:
    """A table, what it shows (caption) and where its data comes from (source)."""

    frame: pd.DataFrame
    caption: str
    source: str


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    items: tuple[Figure | Table, ...]


def write_report(out_dir: Path, title: str, sections: Sequence[Section],
                 meta: Mapping[str, str]) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    _check(title, sections, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    _write_atomic(md_path, _markdown(out_dir, title, sections, meta))
    _write_atomic(html_path, _html(title, sections, meta))
    return md_path, html_path


# ---- checks --------------------------------------------------------------------------------------
def _check(title: str, sections: Sequence[Section], meta: Mapping[str, str]) -> None:
    if not isinstance(title, str) or not title.strip():
        raise ValueError("the report needs a title")
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"meta maps str to str; {k!r}: {v!r} is not")
    for s in sections:
        if not isinstance(s, Section):
            raise TypeError(f"sections hold Section objects, got {type(s).__name__}")
        for item in s.items:
            where = f"section {s.title!r}"
            if not isinstance(item, (Figure, Table)):
                raise TypeError(f"{where}: items are Figure or Table, got {type(item).__name__}")
            if not item.caption.strip() or not item.source.strip():
                raise ValueError(f"{where}: every figure and table needs a caption and a source")
            if isinstance(item, Figure):
                path = Path(item.path)
                if not path.is_file():
                    raise ValueError(f"{where}: figure {path} does not exist")
                with path.open("rb") as f:
                    if f.read(8) != _PNG_MAGIC:
                        raise ValueError(f"{where}: figure {path} is not a PNG file")
            elif not isinstance(item.frame, pd.DataFrame):
                raise TypeError(f"{where}: a Table holds a pandas DataFrame, got {type(item.frame).__name__}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- shared formatting ---------------------------------------------------------------------------
def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _numbered(sections: Sequence[Section]) -> list[list[tuple[str, Figure | Table]]]:
    """Per section, (label, item) with figures and tables numbered separately through the report."""
    counts = {Figure: 0, Table: 0}
    out = []
    for s in sections:
        labelled = []
        for item in s.items:
            counts[type(item)] += 1
            labelled.append((f"{type(item).__name__} {counts[type(item)]}", item))
        out.append(labelled)
    return out


# ---- Markdown ------------------------------------------------------------------------------------
def _md_table(frame: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    cols = [esc(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(_cell(v)) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _markdown(out_dir: Path, title: str, sections: Sequence[Section], meta: Mapping[str, str]) -> str:
    parts = [f"# {title}", ""]
    parts += [f"- **{k}**: {v}" for k, v in meta.items()]
    for s, labelled in zip(sections, _numbered(sections)):
        parts += ["", f"## {s.title}", ""]
        if s.text.strip():
            parts += [s.text.strip(), ""]
        for label, item in labelled:
            if isinstance(item, Figure):
                rel = Path(os.path.relpath(Path(item.path).resolve(), out_dir.resolve())).as_posix()
                parts += [f"![{label}]({rel})", ""]
            else:
                parts += [_md_table(item.frame), ""]
            parts += [f"*{label}.* {item.caption}  ", f"Source: {item.source}", ""]
    return "\n".join(parts).rstrip() + "\n"


# ---- HTML ----------------------------------------------------------------------------------------
def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{html.escape(_cell(v))}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{html.escape(_cell(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _caption(label: str, item: Figure | Table) -> str:
    return (f"<b>{label}.</b> {html.escape(item.caption)}"
            f'<span class="source">Source: {html.escape(item.source)}</span>')


def _html(title: str, sections: Sequence[Section], meta: Mapping[str, str]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if meta:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in meta.items())
        parts.append(f'<table class="meta"><tbody>{rows}</tbody></table>')
    for s, labelled in zip(sections, _numbered(sections)):
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p.strip())}</p>" for p in s.text.split("\n\n") if p.strip()]
        for label, item in labelled:
            if isinstance(item, Figure):
                data = base64.b64encode(Path(item.path).read_bytes()).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(label)}: '
                             f'{html.escape(item.caption)}"><figcaption>{_caption(label, item)}</figcaption></figure>')
            else:
                parts.append(f'<div class="tablewrap">{_html_table(item.frame)}</div>'
                             f'<p class="caption">{_caption(label, item)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
