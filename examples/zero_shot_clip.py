"""Why does CLIP pick this prompt? Grad-CAM, Integrated Gradients and LIME on a zero-shot classifier.

Any local CLIP-style model folder works: a Hugging Face ``CLIPModel`` /
``SiglipModel`` saved with ``save_pretrained`` (with its processor), or an
open_clip ``local-dir`` folder (``open_clip_config.json`` + weights). Nothing is
downloaded. The prompts are the classes; the best one on the image is explained
unless ``--target`` names another.

    python examples/zero_shot_clip.py ./clip-vit-base-patch32 cat.jpg \\
        --prompts "a photo of a cat" "a photo of a dog" --out zero_shot
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import xai_bridge as xb

METHODS: dict[str, dict[str, Any]] = {
    "gradcam.GradCAM": {},
    "captum.IntegratedGradients": {"n_steps": 32},
    "lime": {"num_samples": 500},
}
QUICK: dict[str, dict[str, Any]] = {
    "gradcam.GradCAM": {},
    "captum.IntegratedGradients": {"n_steps": 8},
    "lime": {"num_samples": 32},
}


def load(folder: Path, prompts: list[str]) -> xb.ZeroShotModel:
    """A ZeroShotModel from a local folder (Hugging Face or open_clip), offline."""
    if (folder / "open_clip_config.json").is_file():
        import open_clip  # type: ignore[import-untyped]

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        return xb.ZeroShotModel(model.eval(), prompts, processor=preprocess, tokenizer=tokenizer)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return xb.ZeroShotModel(model, prompts, processor=processor)


def heat(image: np.ndarray, attribution: np.ndarray) -> Image.Image:
    """The positive part of a map in red over the image (one explicit normalisation for every method)."""
    m = xb.normalize(attribution, xb.Norm.POSITIVE)
    out = image.astype(np.float32)
    out[..., 0] = out[..., 0] * (1 - m) + 255 * m
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="local model folder (Hugging Face or open_clip local-dir)")
    parser.add_argument("image", help="image file")
    parser.add_argument("--prompts", nargs="+", default=["a photo of a cat", "a photo of a dog", "a photo of a car"])
    parser.add_argument("--target", default=None, help="prompt to explain (default: the best one)")
    parser.add_argument("--out", type=Path, default=Path("zero_shot"))
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke test)")
    args = parser.parse_args(argv)
    model = load(args.model, args.prompts)
    image = xb.load_images(args.image)
    scores = model.predict(image)[0]
    for prompt, score in sorted(zip(args.prompts, scores, strict=True), key=lambda p: -p[1]):
        print(f"{score:8.3f}  {prompt}")
    target: Any = args.target if args.target is not None else int(np.argmax(scores))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, params in (QUICK if args.quick else METHODS).items():
        exp = xb.explain(model, image, name, targets=target, seed=0, **params)
        heat(image[0], exp.attributions[0, 0]).save(args.out / f"{name}.png")
        layer = f" layer={exp.params['layer']}" if "layer" in exp.params else ""
        print(f"{name:28s} {exp.target_names[0, 0]!s:28s}{layer} {exp.seconds:.2f}s")
        results[name] = exp
    return results


if __name__ == "__main__":
    main()
