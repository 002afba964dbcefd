"""shap.Partition on a detector trained in the test: most of the positive mass inside the detected box."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("shap")
pytest.importorskip("cv2")
from tiny_detector import SquareDetector, square_image, train_square_net  # noqa: E402

import xai_bridge as xb  # noqa: E402


@pytest.fixture(scope="module")
def trained() -> SquareDetector:
    return SquareDetector(train_square_net())


@pytest.mark.slow  # training the detector and importing shap: ~10 s on a busy machine
@pytest.mark.parametrize("corner", [(10, 24), (2, 2)])  # the other localisation tests' square, and one at a corner
def test_shap_partition_localises_the_detected_square(trained: SquareDetector, corner: tuple[int, int]) -> None:
    """Known ground truth: the square's box (11% of the image) holds most of the positive Owen mass.

    The detector's default masker (a blur twice the image's size: its mean
    colour) hides the square entirely, so the fully masked image scores 0
    and the values add up to the detection's similarity with itself: its score.
    """
    img = square_image(np.random.default_rng(5), *corner)
    [exp] = xb.explain(trained, img, "shap.Partition", targets=xb.top_k(1), max_evals=300)
    x0, y0, x1, y1 = (int(v) for v in exp.extras["boxes"][0, 0])
    assert abs(y0 - corner[0]) <= 4 and abs(x0 - corner[1]) <= 4  # the detector found the square
    assert exp.params["masker"]["kind"] == "blur" and exp.params["masker"]["blur_kernel"] == [96, 96]
    assert exp.base_scores[0, 0] == pytest.approx(0.0, abs=1e-3)
    amap = exp.attributions[0, 0]
    assert amap.sum() == pytest.approx(exp.scores[0, 0] - exp.base_scores[0, 0], abs=1e-3)  # efficiency
    positive = np.maximum(amap, 0)
    assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.5
