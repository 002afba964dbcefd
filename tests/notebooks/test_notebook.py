"""A notebook run in a real Jupyter kernel (nbclient): no stderr cells, no stale bars, explain_many shown as HTML.

The notebook is built here (nbformat), executed from the repository root so
that the kernel imports the tiny seeded model of tests/conftest.py, then
converted to HTML (nbconvert) and screenshotted in headless chromium. Set
``XAI_BRIDGE_SCREENSHOTS=folder`` to keep the picture and look at it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CELLS = [
    "import sys; sys.path.insert(0, 'tests')\n"
    "import xai_bridge as xb\n"
    "from conftest import make_tiny_net, TINY_PREPROCESS, TINY_CLASSES\n"
    "from helpers import random_images\n"
    "model = xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)\n"
    "images = random_images((2, 32, 32, 3))",
    # a bar shown from the start (progress=True), moving per batch: it must be gone once the cell ends
    "exp = xb.explain(model, images, 'builtin.Occlusion', xb.top_k(2), window=4, stride=2, progress=True)\n"
    "exp.n_model_evals",
    "many = xb.explain_many(model, images, ['gradcam.GradCAM', ('builtin.RISE', {'n_masks': 60})], progress=True)\n"
    "many",
]


def _texts(output: dict) -> list[str]:
    """Every text an output holds (stream text, or each text mime type of display data)."""
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    data = output.get("data", {})
    return [str(v) for k, v in data.items() if k.startswith("text/")]


@pytest.mark.slow
@pytest.mark.parametrize("widgets", [True, False], ids=["ipywidgets", "no-ipywidgets"])
def test_a_notebook_shows_results_without_warnings_or_stale_bars(tmp_path, widgets) -> None:
    hide = [] if widgets else ["import sys; sys.modules['ipywidgets'] = None  # as if it were not installed"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in [*hide, *CELLS]])
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"], outputs
    assert not [o for o in outputs if o.get("output_type") == "error"]
    for text in (t for o in outputs for t in _texts(o)):
        assert not re.search(r"\d+%\||\d+/\d+ \[|evals?/s|TqdmWarning|IProgress", text), text  # no bar left
    cells = nb.cells[len(hide) :]
    for cell in cells[1:]:  # the bar was shown (a display of its own) and emptied when the call ended
        bars = [o for o in cell.outputs if o["output_type"] == "display_data"]
        assert [o["data"] for o in bars] == [{"text/plain": ""}], bars
    [count] = [o for o in cells[1].outputs if o["output_type"] == "execute_result"]
    assert int(count["data"]["text/plain"]) > 100
    [shown] = [o for o in cells[2].outputs if o["output_type"] == "execute_result"]
    page = shown["data"]["text/html"]
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == 2 * 3
    assert "gradcam.GradCAM" in page and "builtin.RISE" in page and "model evaluations" in page

    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    assert body.count("data:image/png;base64,") >= 6
    path = tmp_path / "notebook.html"
    path.write_text(body, encoding="utf-8")
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium: the HTML was checked, not drawn")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            view = browser.new_page(viewport={"width": 1100, "height": 900})
            view.goto(path.as_uri(), wait_until="load")
            drawn = view.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
            assert drawn >= 6
            view.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
        finally:
            browser.close()
    keep = os.environ.get("XAI_BRIDGE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "notebook.png", Path(keep) / f"notebook-{'widgets' if widgets else 'text'}.png")
