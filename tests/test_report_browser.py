"""report.html of `python -m rewards.score`, rendered in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium): no script errors, nothing fetched from the network, every summary
section drawn, and the task and error filters applied to all of them.

Skipped, with the reason, only where no Chromium is installed (CI installs it: .ci/run).
"""

import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from rewards.score import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from headless_chromium import chromium, console_errors, missing  # noqa: E402

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no headless Chromium: {missing()}")

# (image, grey level, prompt): three text prompts (TextCount applies), three others, two unreadable rows.
# Two prompts are markup that would end or swallow the page's script elements if the embedded JSON let it through.
HOSTILE = "a light grey card <!--<script> & more"
ROWS = [("sign0.png", 30, 'a sign that reads "OPEN"'), ("sign1.png", 90, 'a sign that reads "SALE" and "NOW"'),
        ("sign2.png", 150, 'a sign that reads "EXIT"'), ("grey0.png", 60, "a grey card"),
        ("grey1.png", 120, "a grey card</script><b>"), ("grey2.png", 240, HOSTILE)]


def scored_output(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for name, value, prompt in ROWS:
        Image.new("RGB", (24, 16), (value,) * 3).save(images / name)
        lines.append({"image": name, "prompt": prompt})
    (images / "corrupt.png").write_bytes(b"not an image")
    lines += [{"image": "corrupt.png", "prompt": "x"}, {"image": "missing.png", "prompt": "y"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = str(tmp_path / "log")
    rewards = {"brightness": {"_component_": "tests.score_rewards.Brightness", "log": log},
               "textcount": {"_component_": "tests.score_rewards.TextCount", "log": log}}
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "rewards": rewards, "ensemble": {"weights": dict.fromkeys(rewards, 1.0), "normalize": "range"},
        "gating": {"default": ["brightness"], "needs_text": ["textcount"],
                   "rules": [{"name": "text", "keywords": ["sign"], "requires_text": True, "add": ["textcount"]}]}}))
    out = tmp_path / "out"
    assert main(["--images", str(images), "--prompts", str(manifest), "--config", str(config),
                 "--out", str(out)]) == 0
    return out / "report.html"


def count(driver, selector):
    return len(driver.find_elements("css selector", selector))


def test_report_renders_its_summary_in_headless_chromium(tmp_path):
    from selenium.webdriver.support.ui import Select

    report = scored_output(tmp_path)
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", text), "the report must not load anything"
    embedded = text[text.index("id='data'>"):]
    assert not re.search("[<>&]", embedded[len("id='data'>"):embedded.index("</script>")])  # all \u escaped
    with chromium() as driver:
        driver.get(report.as_uri())
        assert console_errors(driver) == []
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [u for u in fetched if not u.startswith("data:")] == []
        assert count(driver, "#histograms svg.hist") == 3  # brightness, textcount, total
        assert count(driver, "#histograms svg.hist rect") > 0
        captions = [e.text for e in driver.find_elements("css selector", "#histograms figcaption")]
        assert captions[0].startswith("brightness n=6") and captions[1].startswith("textcount n=3")
        assert count(driver, "#task-means tbody tr") == 3  # text, default, and the unreadable rows' (none)
        gates = driver.find_element("id", "gates").text
        assert "text 3 3 3" in gates and "default 3 3 0" in gates and "rule 'text': keyword 'sign'" in gates
        assert count(driver, "#extremes .extreme") == 3 and count(driver, "#extremes .best figure.thumb img") > 0
        assert count(driver, "#rows tbody tr") == 8
        assert driver.find_element("id", "counts").text == "8 of 8 images shown, 2 of them with errors."
        assert "a grey card</script><b>" in driver.find_element("id", "rows").text  # shown as text, not markup
        assert HOSTILE in driver.find_element("id", "rows").text

        Select(driver.find_element("id", "filter-task")).select_by_value("text")
        assert count(driver, "#rows tbody tr") == 3 and count(driver, "#task-means tbody tr") == 1
        assert driver.find_element("css selector", "#histograms figcaption").text.startswith("brightness n=3")
        Select(driver.find_element("id", "filter-task")).select_by_value("*")
        Select(driver.find_element("id", "filter-error")).select_by_value("any")
        assert count(driver, "#rows tbody tr") == 2
        assert "2 of 8 images shown" in driver.find_element("id", "counts").text
        Select(driver.find_element("id", "filter-error")).select_by_value("none")
        header = driver.find_elements("css selector", "#rows thead th")
        next(th for th in header if th.text == "brightness").click()  # ascending
        first = driver.find_element("css selector", "#rows tbody tr").text
        assert "sign0.png" in first
        assert console_errors(driver) == []
