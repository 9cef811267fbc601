"""The study dashboard: a self-contained page, rebuilt from a study directory, and what a reader sees in a real
headless Chromium."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import study_tables
from browser import chromium, require_chromium
from dashboards import build
from scaling.analysis.results import write_table

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_a_study_without_analysis_axes_builds_a_small_offline_page_that_says_what_is_absent(tmp_path):
    table = study_tables.table(models=("w16", "w8"), sizes=(300, 3000), sources=("scratch", "medical"), seeds=2,
                               noise=0.01, failed=1)
    write_table(table, tmp_path)
    from scaling.analysis import analyse

    analyse(table, tmp_path, seed=0, log=lambda _: None)
    result = subprocess.run([sys.executable, "-m", "dashboards", "build", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "dashboard.html").read_text()
    assert len(page.encode()) < 3e6
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)  # every script inlined, nothing fetched
    assert "no target-size axis" in page and "failed-0" in page  # the absent axis; the failed trial in provenance


def test_building_from_a_directory_that_is_no_study_names_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dashboards", "build", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"{tmp_path} holds no results.parquet" in result.stderr


POINTS = "return document.querySelectorAll('#view-model g.mark-symbol.role-mark path').length"


@pytest.mark.slow
def test_the_smoke_study_dashboard_in_a_real_browser(smoke_study):
    require_chromium()
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, result = smoke_study
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = out / "dashboard.html"
    rebuilt = build(out, out / "rebuilt.html")  # python -m dashboards build gives the same page
    assert rebuilt.stat().st_size == pytest.approx(page.stat().st_size, rel=0.01)
    with chromium() as browser:
        browser.get(page.as_uri())
        WebDriverWait(browser, 120).until(lambda b: b.execute_script("return document.body.dataset.ready"))
        assert browser.execute_script("return document.body.dataset.ready") == "true"
        # the page opens with the answer the study printed last, then what its grid lacks, then the views
        sections = [e.get_attribute("id") or e.text for e in browser.find_elements(
            "css selector", "body > section, body > div#filters, body > h2")]
        assert sections[:3] == ["answer", "lacks", "filters"], sections
        answer = json.loads((out / "summary.json").read_text())["answer"]
        assert browser.find_element("css selector", "#answer pre").text.splitlines() == answer
        views = browser.find_elements("css selector", "div.view")
        assert views and all(v.find_elements("css selector", "svg g.mark-symbol") for v in views)
        rows = lambda: len(browser.find_elements("css selector", "#trials tbody tr"))  # noqa: E731
        points = lambda: browser.execute_script(POINTS)  # noqa: E731
        assert rows() == points() == 2  # the smoke study's two trials, scratch and medical
        link = browser.find_element("css selector", "#trials tbody a").get_attribute("href")
        assert re.search(r"/#/experiments/\d+/runs/[0-9a-f]{32}$", link)
        Select(browser.find_element("id", "filter-source")).select_by_visible_text("medical")
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.filtered"))
        assert rows() == points() == 1
        assert "no target-size axis" in browser.find_element("tag name", "body").text
        shot = out / "dashboard.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    assert shot.stat().st_size > 10_000
