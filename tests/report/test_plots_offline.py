"""`dvc plots show` draws its page with no internet once `make setup` has installed the offline
template (gptpipe.report.plots_page); DVC's default page, whose scripts come from a CDN, does not.

The real `dvc plots show`, in a temporary git + DVC repository holding the `plots:` section of
the project's dvc.yaml (and its `vars`) over small made-up curves and a confusion matrix (no
training); both pages are opened in a real headless Chromium with networking off, and the
offline one must have drawn every plot and a screenshot that is not blank.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.browser import headless_chromium, ink
from helpers.dvcrepo import BIN, new_repository, run

from gptpipe.report import plots_page

REPO = Path(__file__).resolve().parents[2]
CDN = "cdn.jsdelivr.net"


def project_plots() -> dict[str, Any]:
    """dvc.yaml's `vars` and `plots:` sections, as the project has them."""
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    return {"vars": dvc_yaml["vars"], "plots": dvc_yaml["plots"]}


def write_data(root: Path, sections: dict[str, Any]) -> None:
    """A small file for every file the plots read: CSV curves with every field a plot takes
    from them, and a confusion matrix (actual / predicted rows) for the JSON one."""
    paths = sections["vars"][0]["paths"]
    fields: dict[str, set[str]] = {}
    for entry in sections["plots"]:
        (props,) = entry.values()
        for name, field in props["y"].items():
            path = re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], name)
            fields.setdefault(path, set()).update({props["x"], field})
    labels = ["code", "prose", "math"]
    for path, columns in fields.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".json":
            rows = [
                {"actual": a, "predicted": labels[(i + j) % 3]}
                for i, a in enumerate(labels)
                for j in range(4)
            ]
            target.write_text(json.dumps(rows))
            continue
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=sorted(columns), lineterminator="\n")
            writer.writeheader()
            for step in range(0, 200, 10):  # decaying curves, apart by their names' lengths
                values = {c: round(len(c) / 2.5 * 0.99**step, 4) for c in columns}
                writer.writerow({**values, "step": step})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the project's plots; DVC's default page written to default_plots/,
    then the offline template installed as `make setup` does and `dvc plots show` run."""
    root = tmp_path_factory.mktemp("plots")
    sections = project_plots()
    (root / "dvc.yaml").write_text(yaml.safe_dump(sections, sort_keys=False))
    write_data(root, sections)
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    new_repository(root, "plots")
    run(root, "dvc", "plots", "show", "-o", "default_plots")  # DVC's own page, no config yet
    # What `make setup` runs, from the repository's root.
    run(root, str(BIN / "python"), "-m", "gptpipe.report.plots_page")
    run(root, "dvc", "plots", "show")
    return root


def plot_count() -> int:
    return len(project_plots()["plots"])


def test_default_page_loads_vega_from_the_cdn(project: Path) -> None:
    page = (project / "default_plots" / "index.html").read_text()
    assert f'<script src="https://{CDN}/npm/vega@' in page
    assert "window.vegaEmbed" not in page


def test_offline_page_is_dvcs_page_with_the_scripts_inline(project: Path) -> None:
    default = (project / "default_plots" / "index.html").read_text()
    page = (project / "dvc_plots" / "index.html").read_text()
    assert "<script src" not in page and CDN not in page
    assert "<title>DVC Plot</title>" in page and "window.vegaEmbed" in page
    # The body, the plot divs, is DVC's own (the bundle's text holds "<body>" too: the last
    # "</head>" is the page's).
    body = page.rpartition("</head>")[2]
    assert body == default.rpartition("</head>")[2]
    assert body.count("vegaEmbed('#") == plot_count()
    # Nothing of it is for git: the template and config.local under .dvc/, and dvc_plots/.
    config = (project / ".dvc" / "config.local").read_text()
    assert re.search(rf"html_template = {re.escape(plots_page.TEMPLATE)}\s", config)
    assert (project / ".dvc" / plots_page.TEMPLATE).is_file()
    status = run(project, "git", "status", "--porcelain", "--untracked-files=all").stdout
    assert status.split() == ["??", "default_plots/index.html"], status


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with networking effectively off, so a page gets nothing that is not
    in its own file."""
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


# The area in CSS pixels of each plot div's drawing (vega's canvas or svg has class "marks";
# the actions menu's icon is an svg too, so any svg would not do); null while the page loads
# (chromedriver can return from `get` before the parser has reached the last div).
DRAWN = """
if (document.readyState !== 'complete') return null;
return Array.from(document.querySelectorAll('body > div[id]')).map((div) => {
    const marks = div.querySelector('.marks');
    if (!marks) return 0;
    const box = marks.getBoundingClientRect();
    return box.width * box.height;
});
"""


def open_page(driver: Any, page: Path, wait_s: float) -> tuple[list[float], list[dict], int]:
    """Open `page`; once loaded, wait up to `wait_s` more for every plot to be drawn. Returns
    the drawn areas, the browser's console log and the number of non-white pixels of a
    screenshot."""
    driver.get(page.as_uri())
    loaded = time.monotonic() + 30
    areas: list[float] | None = driver.execute_script(DRAWN)
    while areas is None and time.monotonic() < loaded:
        time.sleep(0.05)
        areas = driver.execute_script(DRAWN)
    assert areas is not None, f"{page} did not finish loading in 30 s"
    drawn = time.monotonic() + wait_s
    while not (areas and all(a > 0 for a in areas)) and time.monotonic() < drawn:
        time.sleep(0.05)
        areas = driver.execute_script(DRAWN)
    log = driver.get_log("browser")
    return areas, log, ink(driver.get_screenshot_as_png())


def test_default_page_stays_blank_offline(project: Path, browser: Any) -> None:
    """The check below can fail: DVC's own page draws nothing here (its scripts never come)."""
    areas, log, ink = open_page(browser, project / "default_plots" / "index.html", wait_s=0)
    assert areas == [0] * plot_count(), areas
    errors = " ".join(entry["message"] for entry in log if entry["level"] == "SEVERE")
    assert CDN in errors and "vegaEmbed is not defined" in errors, log
    assert ink < 100, ink


def test_offline_page_draws_every_plot(project: Path, browser: Any) -> None:
    areas, log, ink = open_page(browser, project / "dvc_plots" / "index.html", wait_s=20)
    assert len(areas) == plot_count() and all(a > 10_000 for a in areas), areas
    # Vega logs warnings of its own about DVC's specs (an empty hover layer's extent, the
    # Vega v5 that Vega-Lite 5 compiles for, run by Vega 6): errors only.
    assert [entry for entry in log if entry["level"] == "SEVERE"] == [], log
    assert ink > 20_000, ink


def test_install_into_a_folder_that_is_no_dvc_repository_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plots_page.main(["--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}: not a DVC repository" in err, err


@pytest.mark.parametrize("blocker", ["tmp", "config.local"])
def test_install_where_a_file_cannot_be_written_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blocker: str
) -> None:
    """.dvc/tmp a regular file (the template cannot go under it); .dvc/config.local a folder."""
    (tmp_path / ".dvc").mkdir()
    if blocker == "tmp":
        (tmp_path / ".dvc" / "tmp").write_text("")
    else:
        (tmp_path / ".dvc" / "config.local").mkdir()
    assert plots_page.main(["--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / ".dvc" / blocker) in err, err
    assert "Traceback" not in err
