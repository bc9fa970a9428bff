"""``prune-report --format html``: every table of the report on one self-contained page.

One file (``<out>/report.html``), no external resource: the style sheet is inline, each figure
is an embedded PNG (``data:`` URI), there is no script. Per table: its title, the data label and
budget, the cell notation, the table (cells ``ours (paper, Δ)``; a ``[cN]`` cell links to the
command that fills it), its figure, the numbered commands and the footnotes (paper, sources).
Tables with runs come first; tables without runs follow, with the commands that fill them.

The page is checked in headless Chromium by ``tests/test_report_html.py`` (it loads, every table
and image is present, no console errors).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pruning.paper import UNVERIFIED_MARK

if TYPE_CHECKING:  # annotations only: report.py imports this module, never the other way at run time
    from pruning.report import ReportTable

STYLE = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --head: #f3f5f9; --accent: #2357a4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1400px; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 2.2rem 0 .3rem; border-top: 1px solid var(--line); padding-top: 1.2rem; }
nav ol { columns: 2; column-gap: 2rem; padding-left: 1.2rem; }
nav li { break-inside: avoid; margin-bottom: .2rem; }
.muted, .budget { color: var(--muted); }
.budget { font-weight: 600; }
.scroll { overflow-x: auto; margin: .6rem 0; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; white-space: nowrap; }
th { background: var(--head); text-align: right; position: sticky; top: 0; }
td { text-align: right; }
th.key, td.key { text-align: left; }
td.key { font-weight: 600; }
/* the row's name stays in view while a wide table scrolls sideways inside its box */
th.key:first-child, td.key:first-child { position: sticky; left: 0; z-index: 1; background: #fff;
       white-space: normal; min-width: 9rem; max-width: 22rem; box-shadow: inset -1px 0 0 var(--line); }
th.key:first-child { background: var(--head); z-index: 2; }
td.empty { color: var(--muted); }
a { color: var(--accent); }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f5f6f8;
       padding: .05rem .25rem; border-radius: 3px; }
ul.commands { list-style: none; padding-left: 0; }
ul.commands li { margin-bottom: .25rem; padding-left: 2.6rem; text-indent: -2.6rem; overflow-wrap: anywhere; }
ul.commands b { display: inline-block; width: 2.4rem; text-indent: 0; color: var(--muted); }
li:target, li:target code { background: #fff3c4; }
figure { margin: .8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.notes { color: var(--muted); font-size: 12.5px; white-space: pre-line; }
.badge { display: inline-block; font-size: 11px; padding: 0 .4rem; border-radius: 8px; background: #e8eefb;
         color: var(--accent); margin-left: .4rem; vertical-align: middle; }
"""

_COMMAND_REF = re.compile(r"\[c(\d+)\]")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def _cell(table: ReportTable, text: str) -> str:
    """One cell: ``[cN]`` links to command N of the table, ≈ gets its meaning as a tooltip."""
    escaped = html.escape(str(text), quote=False)
    escaped = _COMMAND_REF.sub(
        lambda m: (
            f'<a href="#{table.file_stem}-c{m.group(1)}" title="not run yet: command c{m.group(1)}">[c{m.group(1)}]</a>'
        ),
        escaped,
    )
    if "≈" in escaped:
        escaped = escaped.replace("≈", '<span title="measured speed-up within the timing noise">≈</span>')
    if UNVERIFIED_MARK in escaped:
        escaped = escaped.replace(UNVERIFIED_MARK, '<span title="paper value not yet checked">†</span>')
    return escaped


HEADLINE_HEADERS = ("Unpruned top-1", "Final top-1")  # a sweep's accuracy: shown right after the row's name


def column_order(table: ReportTable) -> list[int]:
    """The page's column order: the row's name (the key columns), then a sweep's accuracy
    columns (``HEADLINE_HEADERS``, last in the markdown), then the rest as in the markdown. A
    paper table's headline already follows its name."""
    keys = list(range(table.key_columns))
    lead = [i for i, h in enumerate(table.headers) if i >= table.key_columns and h in HEADLINE_HEADERS]
    return keys + lead + [i for i in range(table.key_columns, len(table.headers)) if i not in lead]


def _table_html(table: ReportTable) -> str:
    """The table in a box that scrolls sideways; the key columns are one sticky row header (the
    row's name, its parts joined by ``·``), so the name and the headline beside it stay in view."""
    order = column_order(table)
    keys = [i for i in order if i < table.key_columns]
    values = [i for i in order if i >= table.key_columns]
    head = ""
    if keys:
        head += f'<th class="key" scope="col">{html.escape(" · ".join(table.headers[i] for i in keys))}</th>'
    head += "".join(f'<th scope="col">{html.escape(table.headers[i])}</th>' for i in values)
    body = []
    for row in table.rows:
        cells = []
        if keys:
            name = " · ".join(_cell(table, row[i]) for i in keys if str(row[i]))
            cells.append(f'<th class="key" scope="row">{name}</th>')
        for i in values:
            text = row[i]
            attr = ' class="empty"' if str(text).startswith("[c") or text in ("", "—", "n/i") else ""
            cells.append(f"<td{attr}>{_cell(table, text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _section(table: ReportTable, png: bytes | None) -> str:
    parts = [
        f'<section id="{table.file_stem}" class="report-table">',
        f"<h2>{html.escape(table.title)}"
        + ("" if table.group is not None else '<span class="badge">no runs yet</span>')
        + "</h2>",
        f'<p class="budget">{html.escape(table.subtitle)}</p>',
        f"<p>{_inline(table.caption)}</p>",
        _table_html(table),
    ]
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(table.title)}: figure">'
            f"<figcaption class=muted>{html.escape(table.subtitle)}</figcaption></figure>"
        )
    if table.commands:
        items = "".join(
            f'<li id="{table.file_stem}-c{i}"><b>c{i}</b><code>{html.escape(command)}</code></li>'
            for i, command in enumerate(table.commands, start=1)
        )
        parts.append(f'<p>Commands that fill the empty cells:</p><ul class="commands">{items}</ul>')
    notes = [note for note in table.footnotes if not note.startswith("![")]  # the figure is embedded above
    if notes:
        parts.append(f'<div class="notes">{_inline(chr(10).join(notes))}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def contents_note(table: ReportTable) -> str:
    """What tells a table apart from the others of its spec in the contents: its data and budget
    (``MNIST (5k subset), pretrain 6 ep, train subset 4000``), or that it has no runs yet."""
    group = table.group
    if group is None:
        return "no runs yet"
    epochs = "?" if group.pretrain_epochs is None else group.pretrain_epochs
    subset = "full training set" if group.train_subset is None else f"train subset {group.train_subset}"
    return f"{group.data_label}, pretrain {epochs} ep, {subset}"


def render_html(tables: Sequence[ReportTable], pngs: dict[str, bytes], results_label: str, runs: int) -> str:
    """The page: a contents list, then every table (those with runs first). ``pngs``: each
    table's figure by ``file_stem``; ``results_label``: how the results root is named on the
    page (a path relative to where prune-report ran, never the machine's absolute path)."""
    ordered = [t for t in tables if t.group is not None] + [t for t in tables if t.group is None]
    contents = "".join(
        f'<li><a href="#{t.file_stem}">{html.escape(t.title)}</a>'
        f' <span class="muted">— {html.escape(contents_note(t))}</span></li>'
        for t in ordered
    )
    sections = "\n".join(_section(t, pngs.get(t.file_stem)) for t in ordered)
    with_runs = sum(t.group is not None for t in tables)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>prune-lab report</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>prune-lab report</h1>
<p class="muted">{runs} finished runs under <code>{html.escape(results_label)}</code>; {with_runs} tables with runs,
{len(tables) - with_runs} without. Every number comes from a run's metrics.json; paper values carry their
source (footnotes; † not yet checked). Regenerate: <code>prune-report --format html</code>.</p>
</header>
<nav><h2>Tables</h2><ol>{contents}</ol></nav>
<main>
{sections}
</main>
</body>
</html>
"""
