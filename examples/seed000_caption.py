"""Seed 000: explain an image-captioning API with shap's Partition explainer.

Each image is captioned by a vision endpoint (Azure Computer Vision v3.1, as
in the seed; or Azure AI Vision 4.0, an OpenAI-compatible server such as vLLM
or Ollama, or a Hugging Face endpoint). Its masked versions are captioned too,
and a language model scores how likely the ORIGINAL caption stays given each
masked image's caption (teacher forcing, as the seed did with distilbart):
one heatmap per caption token.

Unlike the seed, requests go out concurrently, are retried on 429/5xx with
backoff, never write masked images to disk, and are cached on disk, so a
re-run costs nothing. The key is read from an environment variable.

Example::

    export AZURE_VISION_KEY=...
    python examples/seed000_caption.py --endpoint https://<name>.cognitiveservices.azure.com \\
        --images 1.jpg 2.jpg --scorer sshleifer/distilbart-xsum-12-6 --out results/

    # a local OpenAI-compatible server (no key):
    python examples/seed000_caption.py --api openai --endpoint http://localhost:11434/v1 --model llava \\
        --images cat.jpg --scorer ./distilbart-local

Nothing runs or connects on import.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

APIS = ("azure-v3.1", "azure-v4.0", "openai", "hf")
KEY_ENVS = {
    "azure-v3.1": "AZURE_VISION_KEY",
    "azure-v4.0": "AZURE_VISION_KEY",
    "openai": "OPENAI_API_KEY",
    "hf": "HF_TOKEN",
}


def make_captioner(args: argparse.Namespace) -> Any:
    """The remote captioner for ``--api`` (the key comes from ``--key-env``)."""
    from xai_bridge.adapters import captioners

    common = {
        "key_env": args.key_env or KEY_ENVS[args.api],
        "max_concurrency": args.concurrency,
        "cache": args.cache or "auto",
    }
    if args.api == "azure-v3.1":
        return captioners.AzureVisionV31Captioner(args.endpoint, **common)
    if args.api == "azure-v4.0":
        return captioners.AzureVision40Captioner(args.endpoint, **common)
    if args.api == "openai":
        return captioners.OpenAICaptioner(args.endpoint, args.model or "gpt-4o-mini", **common)
    return captioners.HFInferenceCaptioner(args.model or args.endpoint, base_url=args.endpoint, **common)


def main(argv: list[str] | None = None) -> list[Any]:
    """Parse arguments, explain every image, save one ``.npz`` (and ``.png`` with ``--plot``) per image."""
    parser = argparse.ArgumentParser(description="Explain image captions (seed 000).")
    parser.add_argument("--endpoint", required=True, help="API endpoint or base URL")
    parser.add_argument("--api", choices=APIS, default="azure-v3.1")
    parser.add_argument("--model", default=None, help="model name (openai) or model id (hf)")
    parser.add_argument("--key-env", default=None, help="environment variable holding the key")
    parser.add_argument("--images", nargs="+", required=True, help="image files")
    parser.add_argument(
        "--scorer",
        default="sshleifer/distilbart-xsum-12-6",
        help="seq2seq or causal LM (local path or hub id) scoring the caption tokens",
    )
    parser.add_argument("--method", default="shap.Partition", help="shap.Partition, lime, rise, builtin.Occlusion")
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--masker", default="inpaint_ns", help="shap masker: inpaint_ns, inpaint_telea, blur(k,k)")
    parser.add_argument(
        "--regions",
        type=int,
        default=0,
        help="explain over about this many semantic regions (SLIC superpixels merged by colour) instead of "
        "shap's axis-aligned halves and quarters (the improvement the seed names); 0: shap's own partition",
    )
    parser.add_argument("--max-side", type=int, default=500, help="shrink larger images first (the seed's 500)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--cache", default=None, help="sqlite cache file (default ~/.cache/xai-bridge)")
    parser.add_argument("--out", type=Path, default=Path("caption_explanations"))
    parser.add_argument("--plot", action="store_true", help="also save shap.image_plot figures")
    args = parser.parse_args(argv)

    from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer

    from xai_bridge.captions import explain_caption

    scorer = TeacherForcingScorer.from_pretrained(args.scorer)
    method_params: dict[str, Any] = {"masker": args.masker} if args.method == "shap.Partition" else {}
    if args.regions and args.method == "shap.Partition":
        import xai_bridge as xb

        method_params["partition"] = xb.Segmentation("slic", {"n_segments": args.regions})
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with make_captioner(args) as captioner:
        for path in args.images:
            [exp] = explain_caption(
                captioner,
                path,
                args.method,
                scorer=scorer,
                budget=args.max_evals,
                max_side=args.max_side,
                **method_params,
            )
            saved = exp.save(args.out / f"{Path(path).stem}.npz")
            print(
                f"{path}: {exp.params['caption']!r} -> {saved} ({exp.n_model_evals} evaluations, {exp.seconds:.1f} s)"
            )
            if args.plot:
                _plot(exp, args.out / f"{Path(path).stem}.png")
            results.append(exp)
        print(f"requests: {captioner.stats.snapshot()}")
    return results


def _plot(exp: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    shap.image_plot(exp.to_shap(), show=False)
    plt.savefig(path, bbox_inches="tight")
    plt.close("all")


if __name__ == "__main__":
    main()
