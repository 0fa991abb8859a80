"""The report in a real browser: every embedded figure is drawn and the page raises no JavaScript error.

Needs Debian's chromium (headless). The page itself counts the plots plotly drew and the errors it
caught (see analysis/report.py); --dump-dom gives back the <body> with those counts.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from helpers import find_chromium, headless, make_run

from analysis.report import write_report


def test_report_draws_every_figure_without_errors(tmp_path):
    chromium = find_chromium()
    report = write_report(make_run(tmp_path / "run"))
    done = headless(chromium, "--dump-dom", report.as_uri())
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, f"no <body> in chromium's output: {done.stderr[-2000:]}"
    values = dict(re.findall(r'data-(figures|errors|expected)="(\d+)"', body.group(0)))
    assert set(values) == {"figures", "errors", "expected"}, body.group(0)
    assert int(values["errors"]) == 0
    assert int(values["figures"]) == int(values["expected"]) > 0

    folder = Path(os.environ.get("SEGKD_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "report_screenshot.png"
    headless(chromium, f"--screenshot={shot}", "--window-size=1400,4000", report.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000
    if folder != tmp_path:
        shutil.copy(shot, folder / shot.name)
    print(f"screenshot: {folder / shot.name}")


def test_export_writes_markdown_tables_and_pngs(tmp_path, monkeypatch):
    find_chromium()  # Kaleido drives the same browser
    import analysis.report
    from analysis.report import FIGURES, main

    # Kaleido takes seconds a figure: three show the export; every figure is drawn in the browser
    # by test_report_draws_every_figure_without_errors.
    monkeypatch.setattr(analysis.report, "FIGURES", FIGURES[:3])
    folder = tmp_path / "export"
    assert main([str(make_run(tmp_path / "run")), "--export", str(folder)]) == 0
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert len(pngs) == 3 and "hp_acc_against_var.png" in pngs
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    tables_md = (folder / "tables.md").read_text()
    assert "| variant |" in tables_md and "| sd |" in tables_md
    assert "0.600 ± 0.248" in tables_md  # the baseline's miou_img with its interval, as in the HTML
    assert "| sd | s1 | b1 | val | 3 |" in tables_md  # the paired comparison: on validation, 3 seeds
