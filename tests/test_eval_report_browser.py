"""The HTML report in a real headless Chromium: self-contained, plots shown, items sortable and filterable.

Needs Chromium from Debian (``apt-get install chromium``) and Playwright for Python. docs/eval-report.png is
the summaries example's report, taken with :func:`screenshot`::

    aigc eval run examples/eval/summaries.toml -o /tmp/summaries.html
    python -c "from tests.test_eval_report_browser import screenshot as s; \
               s('/tmp/summaries.html', 'docs/eval-report.png', width=1600, height=2600)"
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("sacrebleu")
playwright = pytest.importorskip("playwright.sync_api")

from tests.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_batch_job import run_cli, use_server  # noqa: E402
from tests.test_eval_run import SUITE, reply_for, write_suite  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium: apt-get install chromium")


@pytest.fixture
def report_file(monkeypatch, tmp_path, capsys):
    with FakeOpenAIServer(reply=reply_for) as server:
        use_server(monkeypatch, server)
        suite = write_suite(tmp_path, SUITE)
        html = tmp_path / "report.html"
        code, out, err = run_cli(capsys, "eval", "run", suite, "--json", "-o", html)
        assert code == 0, err
        return html, json.loads(out)


def test_the_html_report_in_headless_chromium(report_file, tmp_path):
    html, report = report_file
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        fetched = []
        page.on("request", lambda request: fetched.append(request.url))
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.as_uri())
        assert page.title() == "aigc eval: news"
        assert page.locator("#summary tr").count() == 1 + len(report["candidates"])
        good_row = page.locator("#summary tr", has_text="good-model")
        assert good_row.locator("td.best").count() >= 4  # ROUGE-1, ROUGE-2, ROUGE-L, chrF: marked best
        for plot in ("#plot-cost", "#plot-items"):
            assert page.eval_on_selector(plot, "img => img.complete && img.naturalWidth > 300")
        rows = page.locator("#items tbody tr")
        assert rows.count() == len(report["items"])
        assert page.locator("#shown").inner_text() == f"{len(report['items'])} of {len(report['items'])} items"

        page.select_option("#sort", "weak")  # weakest items of the weak candidate first
        scores = {i["id"]: i["candidates"]["weak"]["scores"]["rouge1"] for i in report["items"]}
        assert rows.first.get_attribute("data-id") == min(scores, key=scores.get)
        assert page.locator("#items tbody tr:first-child td.low").count() == 1

        page.fill("#filter", "library")
        assert page.locator("#shown").inner_text() == f"1 of {len(report['items'])} items"
        assert page.locator("#items tbody tr:visible").get_attribute("data-id") == "library"
        page.fill("#filter", "")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors
    assert all(url.startswith(("file:", "data:")) for url in fetched)  # self-contained: nothing fetched
    assert shot.stat().st_size > 50_000


def screenshot(html: str | Path, png: str | Path, width: int = 1400, height: int | None = None) -> None:
    """A screenshot of a report in headless Chromium: the whole page, or its top ``height`` pixels."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(Path(html).resolve().as_uri())
        clip = None if height is None else {"x": 0, "y": 0, "width": width, "height": height}
        page.screenshot(path=str(png), full_page=True, clip=clip)
        browser.close()
