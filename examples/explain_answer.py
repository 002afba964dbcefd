"""Which pixels make a vision-language model's answer? One map per answer token.

Against a local model folder (a Hugging Face ``BlipForQuestionAnswering``, LLaVA,
BLIP-2... saved with ``save_pretrained`` together with its processor; nothing is
downloaded) the answer is scored by the model's own language head, and a
gradient method can be asked for too::

    python examples/explain_answer.py ./blip-vqa-base dog.jpg "what animal is this?" \\
        --method builtin.Occlusion --out answer

Against an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama...)
the question is the prompt; masked images are answered by the endpoint and
scored by a local teacher-forcing language model (``--scorer``, a folder)::

    python examples/explain_answer.py http://localhost:11434/v1 dog.jpg "what animal is this?" \\
        --model llava --scorer ./distilbart-xsum-12-6 --max-evals 200

Remote answers are cached (``--cache``): a re-run pays nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import xai_bridge as xb


def load_local(folder: Path, max_new_tokens: int) -> Any:
    """A TransformersVLM from a local folder, offline."""
    from transformers import AutoConfig, AutoProcessor
    from xai_bridge.adapters.captioners.vlm import TransformersVLM

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    architecture = (config.architectures or [""])[0]
    if architecture == "BlipForQuestionAnswering":
        from transformers import BlipForQuestionAnswering as Auto
    else:
        from transformers import AutoModelForImageTextToText as Auto  # LLaVA, BLIP-2, ...
    model = Auto.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return TransformersVLM(model, processor, generate_kwargs={"max_new_tokens": max_new_tokens})


def main(argv: list[str] | None = None) -> list[xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a local model folder, or an OpenAI-compatible base URL (http...)")
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--method", default="shap.Partition")
    parser.add_argument("--max-evals", type=int, default=300, help="the method's evaluation budget")
    parser.add_argument("--model-name", "--model-id", dest="model_name", default="gpt-4o-mini", help="remote model")
    parser.add_argument("--scorer", help="remote only: a local seq2seq/causal LM folder scoring the answers")
    parser.add_argument("--key", help="remote only: API key (default $OPENAI_API_KEY)")
    parser.add_argument("--cache", default="auto", help="remote only: answer cache file ('auto': ~/.cache/xai-bridge)")
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--max-side", type=int, default=None, help="shrink the image first (pixels)")
    parser.add_argument("--out", type=Path, help="write <out>.png (one panel per token) and <out>.npz")
    args = parser.parse_args(argv)

    scorer: Any = None
    if args.model.startswith(("http://", "https://")):
        from xai_bridge.adapters.captioners import OpenAICaptioner

        if args.scorer is None:
            parser.error("--scorer: a remote model needs a local language model folder to score its answers")
        from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer

        scorer = TeacherForcingScorer.from_pretrained(args.scorer)
        vlm: Any = OpenAICaptioner(
            args.model, args.model_name, key=args.key, cache=None if args.cache == "none" else args.cache
        )
    else:
        vlm = load_local(Path(args.model), args.max_new_tokens)
    params: dict[str, Any] = {}
    if args.method in ("builtin.Occlusion", "occlusion"):
        params = {"window": 32, "stride": 16}
    try:
        [exp] = xb.explain_answer(
            vlm,
            args.image,
            args.method,
            question=args.question,
            scorer=scorer,
            budget=args.max_evals,
            max_side=args.max_side,
            **params,
        )
    finally:
        close = getattr(vlm, "close", None)
        if callable(close):
            close()
    print(f"Q: {exp.params['question']}")
    print(f"A: {exp.params['caption']}  ({exp.method}, {exp.n_model_evals} evaluations)")
    for name, score, amap in zip(exp.target_names[0], exp.scores[0], exp.attributions[0], strict=True):
        print(f"  {str(name)!r:>14}  score {score:+.3f}  map sum {amap.sum():+.4f}")
    if args.out is not None:
        from xai_bridge.viz.plot import caption_plot, figure_png

        args.out.with_suffix(".png").write_bytes(figure_png(caption_plot(exp)))
        exp.save(args.out.with_suffix(".npz"))
        print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.npz')}")
    return [exp]


if __name__ == "__main__":
    main()
