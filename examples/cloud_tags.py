"""Why does a cloud vision API say "dog"? Its tags as a black-box classifier, with the cost known first.

Azure Computer Vision v3.1 (``analyze?visualFeatures=Tags``) or Azure AI Vision
4.0 (``imageanalysis:analyze?features=tags``): the outputs are the confidences
of the tags found on the unmasked image (a tag missing from a masked image's
answer scores 0). The number of paid calls is printed before anything is sent
(``--dry-run`` stops there); answers are cached, so a re-run pays nothing::

    export AZURE_VISION_KEY=...
    python examples/cloud_tags.py https://<name>.cognitiveservices.azure.com dog.jpg --tag dog \\
        --method shap.Partition --max-evals 200 --dry-run
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xai_bridge.adapters.captioners import AzureVision40Tagger, AzureVisionV31Tagger

import xai_bridge as xb


def main(argv: list[str] | None = None) -> xb.Explanation | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the resource endpoint (any host speaking the protocol)")
    parser.add_argument("image")
    parser.add_argument("--tag", help="the tag to explain (default: the most confident one)")
    parser.add_argument("--api", choices=("v3.1", "4.0"), default="4.0")
    parser.add_argument("--method", default="shap.Partition")
    parser.add_argument(
        "--budget", "--max-evals", type=int, default=200, help="model evaluations per image (the method's budget)"
    )
    parser.add_argument("--key", help="API key (default $AZURE_VISION_KEY)")
    parser.add_argument("--cache", default="auto", help="answer cache file ('auto': ~/.cache/xai-bridge; 'none')")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    parser.add_argument("--dry-run", action="store_true", help="print the paid calls and stop")
    parser.add_argument("--out", type=Path, help="write <out>.npz")
    args = parser.parse_args(argv)

    kind = AzureVisionV31Tagger if args.api == "v3.1" else AzureVision40Tagger
    cache = None if args.cache == "none" else args.cache
    params: dict[str, Any] = {}
    spec = xb.default_registry().spec(args.method)
    if spec.budget is not None:  # the method's own budget parameter (max_evals, num_samples, n_masks)
        params[spec.budget] = args.budget
    elif spec.name == "builtin.Occlusion":
        params.update(window=32, stride=16)
    with kind(args.endpoint, key=args.key, cache=cache, rate_limit=args.rate_limit) as tagger:
        model = xb.TagModel(tagger)
        targets: Any = args.tag if args.tag is not None else "top1"
        estimate = xb.estimate_calls(model, args.image, spec.name, targets, **params)
        if args.dry_run:
            return None
        exp = xb.explain(model, args.image, spec.name, targets, **params)
        print(f"tags on the image: {[str(name) for name in model.class_names or []]}")
        print(f"paid calls: {tagger.stats.requests} (estimated {estimate.calls})")
    print(
        f"{str(exp.target_names[0, 0])!r}: confidence {exp.scores[0, 0]:.3f}, {exp.method}, {exp.n_model_evals} evaluations"
    )
    if args.out is not None:
        exp.save(args.out.with_suffix(".npz"))
        print(f"wrote {args.out.with_suffix('.npz')}")
    return exp


if __name__ == "__main__":
    main()
