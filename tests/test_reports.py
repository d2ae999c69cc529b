"""Reports people read: the four report types (main job, OPE, multirun, sweep), rendered
from stored outputs of real runs, checked without a browser (always) and in headless
Chromium (``browser``; skipped, saying why, when Chromium is absent)."""

from __future__ import annotations

import pytest

from tests.reports import (browser_problems, chromium_missing, readability_problems,
                           render_all)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return render_all(tmp_path_factory.mktemp("reports"))


def test_every_report_reads_well_without_a_browser(reports):
    for kind, directory in reports.items():
        assert readability_problems(directory) == [], kind
    main = (reports["main"] / "report.html").read_text()
    assert "<strong>Value of knowing the latent persona</strong>" in main
    assert "<code>" in main and "<table>" in main
    sweep = (reports["sweep"] / "report.html").read_text()
    assert "Winner after re-running" in sweep and "{'" not in sweep     # no Python dicts
    for kind in ("multirun", "sweep"):
        assert "nan" not in (reports[kind] / "report.csv").read_text().lower()
        assert "nan" not in (reports[kind] / "report.html").read_text().lower()


def test_readability_checks_catch_what_they_look_for(reports, tmp_path):
    """A check that cannot fail is no check: raw Markdown, a wide figure and a page
    without the image rule are each reported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    page = (reports["ope"] / "report.html").read_text()
    (tmp_path / "report.html").write_text(
        page.replace("max-width:100%", "width:auto") + "<p>**raw** `code`</p>")
    fig = plt.figure(figsize=(14, 3))
    fig.savefig(tmp_path / "wide.png", dpi=100)
    plt.close(fig)
    problems = readability_problems(tmp_path)
    assert any("wide.png is 1400 px wide" in p for p in problems)
    assert any("overflow" in p for p in problems)
    assert any("'**'" in p for p in problems) and any("'`'" in p for p in problems)


@pytest.mark.browser
def test_every_report_fits_a_1280_px_window_in_chromium(reports):
    reason = chromium_missing()
    if reason:
        print(f"browser checks skipped: {reason}")
        pytest.skip(reason)
    assert browser_problems(reports) == []
