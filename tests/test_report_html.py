"""prune-report --format html: one self-contained page, checked by parsing it and (integration
tier) in headless Chromium: it loads, every table and image is there, no console errors.

The browser test uses the system Chromium (Debian's ``chromium``: .ci/run installs it) through
Playwright; it skips where no Chromium is installed, unless PRUNE_LAB_REQUIRE_BROWSER=1 (CI).
PRUNE_LAB_SCREENSHOT=FILE keeps a full-page screenshot to look at.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pruning.report import HTML_NAME, build_tables, generate_reports, load_runs, load_specs
from tests.test_report import SPEC_DIR, results  # noqa: F401  (the fixture: synthetic runs, two budgets)

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class PageParser(HTMLParser):
    """Tables, images, ids, internal links and every external reference of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "table":
            self.tables += 1
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a" and (values.get("href") or "").startswith("#"):
            self.links.append(values["href"][1:])
        for name in ("src", "href"):
            value = values.get(name) or ""
            if value and not value.startswith(("#", "data:")):
                self.external.append(value)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


def write_page(root: Path, out: Path) -> tuple[Path, list]:
    names = ["rethinking_l1_cifar10", "sweep", "tas_cifar"]  # with runs (two budgets), a sweep, one without
    written = generate_reports(root, out, names=names, spec_dir=SPEC_DIR, formats=["html"])
    page = out / HTML_NAME
    assert written == [page]  # html alone: one file, no per-table files
    specs = load_specs(SPEC_DIR)
    runs = load_runs(root)
    tables = [t for name in names for t in build_tables(specs[name], runs)]
    return page, tables


def test_the_html_page_is_self_contained_and_holds_every_table_figure_and_command(
    results: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    page, tables = write_page(results, tmp_path / "tables")
    text = page.read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(text)
    notices = 'id="runs-not-in-tables"' in text  # the fixture's broken metrics.json is listed in a table of its own
    assert parser.tables == len(tables) + notices
    assert parser.external == []  # nothing fetched from anywhere: styles inline, images embedded, no script
    figures = [t for t in tables if t.group is not None and t.file_stem.startswith(("rethinking", "sweep"))]
    assert len(parser.images) >= len(figures) >= 2
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(parser.links) <= parser.ids  # every [cN] and contents link lands on its anchor
    for table in tables:
        assert f'id="{table.file_stem}"' in text
        assert table.subtitle.replace("'", "&#x27;") in text or table.subtitle in text  # data label and budget
        for number, command in enumerate(table.commands, start=1):
            assert f'id="{table.file_stem}-c{number}"' in text and command.replace("'", "&#x27;") in text
    assert "/tmp/" not in text and str(tmp_path) not in text  # no machine path on the page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.integration
def test_the_html_page_loads_in_headless_chromium_without_errors(results: Path, tmp_path: Path) -> None:  # noqa: F811
    executable = _chromium()
    if executable is None:
        if os.environ.get("PRUNE_LAB_REQUIRE_BROWSER") == "1":
            pytest.fail("PRUNE_LAB_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no Chromium installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path, tables = write_page(results, tmp_path / "tables")
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            page.goto(page_path.as_uri(), wait_until="load")
            assert page.title() == "prune-lab report"
            assert page.locator("section.report-table table").count() == len(tables)  # + the unfinished-runs list
            assert page.locator("section.report-table").count() == len(tables)
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            assert images and all(complete and width > 100 for complete, width in images), images
            # a [cN] link scrolls to its command
            link = page.locator("td a[href^='#']").first
            target = link.get_attribute("href")
            link.click()
            assert page.evaluate("location.hash") == target
            assert page.locator(f"[id='{target[1:]}']").is_visible()
            # at 1,400 px, each table's name column and the column after it are in view, also with
            # the table scrolled to its right end (the name column is sticky inside its box)
            page.set_viewport_size({"width": 1400, "height": 900})
            in_view = page.evaluate(
                """() => Array.from(document.querySelectorAll('.scroll')).map(box => {
                    const row = box.querySelector('tbody tr') || box.querySelector('thead tr');
                    const [name, next] = [row.children[0], row.children[1] || row.children[0]];
                    const headline = next.getBoundingClientRect().right <= 1400;
                    box.scrollLeft = box.scrollWidth;
                    const edge = box.getBoundingClientRect(), after = name.getBoundingClientRect();
                    return [after.left >= edge.left - 1 && after.right <= 1400, headline];
                })"""
            )
            assert in_view and all(name and headline for name, headline in in_view), in_view
            shot = os.environ.get("PRUNE_LAB_SCREENSHOT") or str(tmp_path / "report.png")
            page.screenshot(path=shot, full_page=True)
            assert Path(shot).stat().st_size > 10_000
        finally:
            browser.close()
    assert problems == []
    assert re.search(r"\d+ finished runs", page_path.read_text(encoding="utf-8"))


def test_run_records_name_runs_relative_to_the_results_root_not_by_machine_paths(tmp_path: Path, monkeypatch) -> None:
    from pruning.io import portable_path

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "results" / "runs" / "cifar10" / "r"
    assert portable_path(inside) == "results/runs/cifar10/r"  # inside the working directory
    elsewhere = Path("/scratch") / "prl"  # a results root outside it ($PRUNE_LAB_RESULTS=/scratch/prl)
    assert portable_path(elsewhere / "runs" / "x", elsewhere) == "prl/runs/x"
    assert portable_path("/srv/other/x", elsewhere) == "/srv/other/x"  # neither: as given


def test_contents_entries_name_their_data_and_budget(results: Path, tmp_path: Path) -> None:  # noqa: F811
    """The contents repeated one title for every budget group of a spec: each entry now says its
    data and budget, and no two entries read alike."""
    page, tables = write_page(results, tmp_path / "tables")
    nav = page.read_text(encoding="utf-8").split("<nav>", 1)[1].split("</nav>", 1)[0]
    entries = [re.sub(r"<[^>]+>", "", item) for item in re.findall(r"<li>(.*?)</li>", nav)]
    assert len(entries) == len(tables) >= 3
    assert len(set(entries)) == len(entries), entries
    with_runs = [t for t in tables if t.group is not None]
    assert len({t.title for t in with_runs}) < len(with_runs)  # one spec, two budgets: the case that repeated
    for table in with_runs:
        assert any(table.group.data_label in e and f"pretrain {table.group.pretrain_epochs} ep" in e for e in entries)


def test_wide_tables_keep_the_row_name_and_the_headline_in_view(results: Path, tmp_path: Path) -> None:  # noqa: F811
    """A sweep's accuracy columns were its last two, off-screen at 1,400 px: on the page they
    follow the row's name, which is one sticky row header (its key columns joined by ·) inside a
    box that scrolls sideways."""
    from pruning.report_html import STYLE, column_order

    page, tables = write_page(results, tmp_path / "tables")
    text = page.read_text(encoding="utf-8")
    sweep = next(t for t in tables if t.spec_name == "sweep" and t.group is not None)
    order = column_order(sweep)
    assert [sweep.headers[i] for i in order[sweep.key_columns : sweep.key_columns + 2]] == [
        "Unpruned top-1",
        "Final top-1",
    ]
    section = text.split(f'id="{sweep.file_stem}"', 1)[1].split("</table>", 1)[0]
    headers = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", section.split("</thead>", 1)[0])
    assert headers[:3] == ["Model · Method · Fine-tune · Ratio", "Unpruned top-1", "Final top-1"]
    body = section.split("<tbody>", 1)[1]
    assert body.count('<th class="key" scope="row">') == len(sweep.rows)
    assert re.search(r"th\.key:first-child, td\.key:first-child \{ position: sticky; left: 0;", STYLE)
    assert ".scroll { overflow-x: auto;" in STYLE
