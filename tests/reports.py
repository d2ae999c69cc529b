"""The four report types rendered from stored outputs of real runs, and what makes a report
readable: checks with and without a browser (``tests/test_reports.py``; the screenshots
under ``docs/``: ``python -m tests.reports docs``)."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "reports"
#: the browser window the reports must fit
WINDOW = (1280, 900)


def png_width(path: Path) -> int:
    """A PNG's width in pixels, from its header (the IHDR chunk)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">I", head[16:20])[0]


def readability_problems(directory: Path) -> list[str]:
    """What keeps the report in ``directory`` from reading well without a browser: a PNG
    wider than ``MAX_FIGURE_PX``, images allowed to overflow the page, Markdown left
    unrendered (``**`` or a backtick) in the HTML."""
    from experiments.rendering import MAX_FIGURE_PX

    problems = [f"{p.name} is {png_width(p)} px wide (> {MAX_FIGURE_PX})"
                for p in sorted(directory.glob("*.png")) if png_width(p) > MAX_FIGURE_PX]
    page = (directory / "report.html").read_text()
    if "img{max-width:100%" not in page.replace(" ", ""):
        problems.append("report.html lets images overflow (no img {max-width: 100%})")
    for token in ("**", "`"):
        if token in page:
            at = page.index(token)
            problems.append(f"report.html holds a literal {token!r}: …{page[at - 40:at + 40]}…")
    return problems


def render_all(out: Path) -> dict[str, Path]:
    """Render the main job's, the OPE, a multirun's and a sweep's report into ``out`` from
    the stored outputs in ``tests/data/reports``; ``{kind: directory}``."""
    from experiments.evaluate import _write_report
    from experiments.report import write_report as compare
    from experiments.run_files import MetricsLog
    from experiments.train_report import write_report as training

    dirs = {kind: out / kind for kind in ("main", "ope", "multirun", "sweep")}
    for kind in ("main", "ope"):
        dirs[kind].mkdir(parents=True, exist_ok=True)
    main = json.loads((DATA / "main" / "summary.json").read_text())
    training(dirs["main"], main["populations"], main["meta"],
             MetricsLog(DATA / "main" / "metrics.jsonl").rows())
    _write_report(dirs["ope"], json.loads((DATA / "ope" / "summary.json").read_text()))
    # (the multirun's runs are stored as multirun_runs/: .gitignore skips multirun/ folders)
    for kind, stored in (("multirun", "multirun_runs"), ("sweep", "sweep")):
        shutil.copytree(DATA / stored, dirs[kind], dirs_exist_ok=True)
        compare(dirs[kind], reps=200)
    return dirs


def browser_problems(directories: dict[str, Path], screenshots: Path | None = None
                     ) -> list[str]:
    """Open each report in headless Chromium at ``WINDOW``: every image must load
    (``naturalWidth > 0``) and nothing may be wider than the window (``scrollWidth <=
    innerWidth``). With ``screenshots``, save ``report-<kind>.png`` there."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or ""
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    problems = []
    try:
        for kind, directory in directories.items():
            driver.get((directory / "report.html").resolve().as_uri())
            broken = driver.execute_script(
                "return Array.from(document.images).filter(i => !i.complete || "
                "i.naturalWidth === 0).map(i => i.getAttribute('src'))")
            problems += [f"{kind}: image {src} does not load" for src in broken]
            if not driver.execute_script("return document.images.length") and \
                    list(directory.glob("*.png")):
                problems.append(f"{kind}: the page shows none of its images")
            wide, inner = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            if wide > inner:
                problems.append(f"{kind}: the page is {wide} px wide in a {inner} px window")
            if screenshots is not None:
                _screenshot(driver, screenshots / f"report-{kind}.png")
    finally:
        driver.quit()
    return problems


def _screenshot(driver: object, path: Path, width: int = 640) -> None:
    """The window's first screen, scaled to ``width`` px (a small PNG for the README)."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot = shot.resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
    shot.quantize(colors=128).save(path, optimize=True)


def chromium_missing() -> str | None:
    """Why the browser checks cannot run here, or ``None``."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[dev]')"
    missing = [b for b in ("chromium", "chromedriver") if shutil.which(b) is None]
    if missing:
        return (f"{' and '.join(missing)} not found (make browser installs Debian's chromium "
                "and chromium-driver)")
    return None


if __name__ == "__main__":                  # python -m tests.reports docs
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    with tempfile.TemporaryDirectory() as tmp:
        found = browser_problems(render_all(Path(tmp)), screenshots=target)
    print("\n".join(found) or f"screenshots in {target}")
