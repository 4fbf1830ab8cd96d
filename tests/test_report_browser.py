"""Open a report in headless Chromium (skipped where it is not installed): it loads without console errors and
every figure decodes in the browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import report_fixture as fx
from latprof.report import build_report

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None) or shutil.which("chromium")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# Test-only probe appended to a copy of the page: counts decoded images and records script errors.
PROBE = """<script>
window.__errors = 0;
window.addEventListener('error', () => { window.__errors += 1; }, true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-probe', ok + '/' + imgs.length + '/' + window.__errors);
});
</script>"""


@pytest.mark.slow  # a real headless browser (~6 s)
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    html = build_report([fx.full_fixture(tmp_path)], tmp_path / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', done.stdout)
    assert m, done.stdout[-2000:]
    decoded, total, errors = map(int, m.groups())
    assert total >= 8 and decoded == total
    assert errors == 0
    dom = done.stdout
    assert dom.index('class="matrix"') < dom.index('id="environment"')  # the verdict matrix leads the page
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", done.stderr)
