"""The report: Markdown with relative figure links, a self-contained HTML whose figures load in a browser."""

import base64
import re
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lowprec.report import Figure, Section, Table, write_report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


def _png(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([1, 2, 3], [1, 4, 9], marker="o")
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


@pytest.fixture
def report(tmp_path):
    figs = tmp_path / "run" / "figures"
    figs.mkdir(parents=True)
    sections = [
        Section("Claims", "What the lab measured.\n\nSecond paragraph with <b>markup</b> & a | pipe.",
                (Table(pd.DataFrame({"claim": ["FP8 a|b"], "measured": [0.0123456], "n": [3]}),
                       "the claims table", "store study 'claims'"),)),
        Section("Accumulation", "",
                (Figure(_png(figs / "a.png"), "error vs K", "store study 'accum_error_vs_k'"),
                 Figure(_png(figs / "b.png"), "SNR per format", "synthetic activations"))),
    ]
    md, html = write_report(tmp_path / "run", "Lab report", sections, {"run": "r1", "lab version": "0.1.0"})
    return md, html


def test_markdown_links_figures_relatively_and_captions_everything(report):
    md, _ = report
    text = md.read_text()
    assert "![Figure 1](figures/a.png)" in text and "![Figure 2](figures/b.png)" in text
    assert "*Figure 2.* SNR per format" in text and "Source: synthetic activations" in text
    assert "*Table 1.* the claims table" in text and "| FP8 a\\|b | 0.01235 | 3 |" in text
    assert text.index("## Claims") < text.index("## Accumulation") and "- **run**: r1" in text


def test_html_is_self_contained(report, tmp_path):
    _, html = report
    text = html.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == (tmp_path / "run" / "figures" / "a.png").read_bytes()
    assert not re.search(r'(src|href)="(?!data:)', text) and "<script" not in text
    assert "&lt;b&gt;markup&lt;/b&gt; &amp; a | pipe" in text
    assert text.count("<figcaption>") == 2 and "Source: store study &#x27;accum_error_vs_k&#x27;" in text


def test_bad_items_are_refused_before_writing(tmp_path):
    out = tmp_path / "out"
    txt = tmp_path / "x.txt"
    txt.write_text("not a png")
    for items, match in [((Figure(tmp_path / "missing.png", "c", "s"),), "does not exist"),
                         ((Figure(txt, "c", "s"),), "not a PNG"),
                         ((Table(pd.DataFrame({"a": [1]}), "c", " "),), "caption and a source"),
                         (("text",), "Figure or Table")]:
        with pytest.raises((ValueError, TypeError), match=match):
            write_report(out, "t", [Section("s", "", items)], {})
    assert not out.exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium on this machine")
def test_every_figure_loads_in_headless_chromium(report, tmp_path):
    """The report plus one deliberately broken image (the negative control) goes to Chromium; a script
    added to this copy counts the images that decoded, and the DOM dump carries the count."""
    _, html = report
    probe = html.read_text().replace("</body>", """<img id="broken" src="data:image/png;base64,AAAA">
<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.id || 'report');
  document.body.setAttribute('data-loaded', ok.length + '/' + imgs.length + ':' + ok.join(','));
});</script></body>""")
    page = tmp_path / "probe.html"
    page.write_text(probe)
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert re.search(r'data-loaded="2/3:report,report"', dom), dom[-500:]
