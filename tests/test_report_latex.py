"""LaTeX tables taller than a page: a ``longtable`` that breaks across pages (header repeated),
a float otherwise. The pdflatex check compiles a tall table and every committed table (skips
without pdflatex: Debian's texlive-latex-recommended)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pruning.report import (
    LATEX_TEXT_HEIGHT_PT,
    ReportTable,
    latex_height_pt,
    render_latex,
)


def table_of(rows: int, columns: int = 6) -> ReportTable:
    headers = ["Model"] + [f"Column {i}" for i in range(columns)]
    return ReportTable(
        spec_name="tall",
        group=None,
        title="A tall table",
        subtitle="data: synthetic",
        caption="Cells: ours (mean±std).",
        header_groups=[(h, []) for h in headers],
        rows=[[f"row {r}"] + [f"{90 + r / 100:.2f}±0.1{i}" for i in range(columns)] for r in range(rows)],
        records=pd.DataFrame(),
        key_columns=1,
    )


def test_a_table_taller_than_a_page_is_a_longtable_with_its_header_on_every_page() -> None:
    """The short-budget sweep (24 rows in 6 column parts) was a float 1,099 pt taller than the
    page: such a table is now one longtable per part, breaking across pages."""
    tall = table_of(80)
    assert latex_height_pt(tall) > LATEX_TEXT_HEIGHT_PT
    latex = render_latex(tall)
    assert r"\begin{table}" not in latex and latex.count(r"\begin{longtable}") == 1
    assert r"\endhead" in latex and r"\endfirsthead" in latex and r"\label{tab:tall}" in latex
    assert latex.count(r"\caption{") == 1 and "longtable" in latex.splitlines()[0]  # the package it needs
    assert all(line.isascii() for line in latex.splitlines())
    short = render_latex(table_of(5))
    assert r"\begin{table}[htbp]" in short and "longtable" not in short


def test_a_wide_and_tall_table_is_one_longtable_per_column_part() -> None:
    wide = table_of(60, columns=14)
    latex = render_latex(wide)
    parts = latex.count(r"\begin{longtable}")
    assert parts >= 2 and latex.count(r"\caption*{") == parts - 1  # one numbered caption, parts refer to it
    assert f"(part {parts} of {parts})" in latex


@pytest.mark.integration
def test_a_longtable_compiles_and_breaks_across_pages(tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-recommended)")
    (tmp_path / "tall.tex").write_text(render_latex(table_of(150, columns=14)))
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass[10pt]{article}\n\\usepackage[textwidth=5.5in,textheight=9in]{geometry}\n"
        "\\usepackage[T1]{fontenc}\n\\usepackage{booktabs,longtable}\n"
        "\\begin{document}\n\\input{tall.tex}\n\\end{document}\n"
    )
    for _ in range(2):  # longtable settles its column widths on the second run
        done = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-2000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log and "Float too large" not in log
    pages = int(log.split("Output written on doc.pdf (", 1)[1].split(" page", 1)[0])
    assert pages >= 4  # 150 rows in two parts: several pages, each part's header repeated
