"""Seed 000's serial captioning loop vs xai-bridge's ``explain_caption``, side by side.

Both explain the captions of seed 000's workload -- four 224x224 images
(scikit-image's chelsea, astronaut, coffee and rocket), one caption each --
with shap's Partition explainer (300 evaluations per image, batches of 50,
the same masker) against a loopback Azure v3.1 server with a fixed
per-request latency (100 ms by default), and score captions with the same
scorer (``WordMatchScorer``; ``--scorer bart``: a tiny teacher-forced BART).
The server is Python's stock ``http.server.ThreadingHTTPServer`` with a
stock handler (HTTP/1.0, a connection per request, listen backlog 5) that
sleeps the latency and decodes every image with Pillow, in its own process:
what an outside measurement runs, not the tests' tuned server.

* **seed** -- seed 000's loop: every masked image is written to disk as PNG,
  read back and posted with ``requests.post``, one at a time, image after
  image, no cache. (The seed's own ``shap.models.TeacherForcingLogits`` no
  longer exists and ``shap.models.TeacherForcing`` fails on image maskers in
  shap 0.51, so the loop is re-created around a plain model function.)
* **xai-bridge, defaults** -- ``explain_caption(AzureVisionV31Captioner(url),
  images, "shap.Partition", scorer=scorer, ...)`` with every default: the four images explained
  together (their requests share the captioner's 64 in flight), BMP
  encoding in memory, de-duplication, an on-disk cache;
* **xai-bridge re-run, cache warm** -- the same call again: zero requests.

shap's Partition explainer asks for its 300 evaluations in ~10 sequential
batches (each expands the nodes the previous one chose), so at 100 ms per
request no client can go below ~1 s of waiting, and shap's own CPU time
(masking, partition tree) is paid on both sides: these bound the ratio.
Each xai-bridge row also prints where its time went (``Breakdown``).

Run::

    .venv/bin/python benchmarks/bench_caption.py [--latency 0.1] [--max-evals 300] [--images 4] [--json out.json]

Prints a table and a JSON line with the times and ratios. The default
masker is ``blur(128,128)`` (one of seed 000's options), whose cost is small;
with ``--masker inpaint_ns`` (the seed's default) OpenCV inpainting of every
masked image costs the same on both sides and bounds the ratio.
``--profile`` prints where the cache-warm re-run spends its CPU.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_arg, synchronize

KEY = "bench-key-not-a-secret"


PICTURES = ("chelsea", "astronaut", "coffee", "rocket")


def test_images(n: int = 4, size: int = 224) -> list[np.ndarray]:
    """scikit-image's pictures resized to ``size`` x ``size`` (seeded noise without scikit-image)."""
    out = []
    for i in range(n):
        try:
            from skimage import data

            img = getattr(data, PICTURES[i % len(PICTURES)])()
        except ImportError:  # pragma: no cover
            img = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)))
    return out


def _method_params(args: argparse.Namespace) -> dict[str, Any]:
    if args.method == "shap.Partition":
        return {"masker": args.masker, "batch_size": args.batch_size}
    return {"grid": 7, "baseline": 0}  # rise


def seed_serial(
    url: str, images: list[np.ndarray], scorer: Any, args: argparse.Namespace, workdir: Path
) -> list[np.ndarray]:
    """Seed 000's loop over its images: caption, then explain each; one request at a time."""
    out = []
    for i, image in enumerate(images):
        caption = _seed_caption(url, image, workdir / f"{i}.png")
        out.append(seed_one(url, image, scorer, scorer.tokenize(caption), args, workdir, i))
    return out


def _seed_caption(url: str, image: np.ndarray, path: Path) -> str:
    import requests

    Image.fromarray(image).save(path)
    headers = {"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/octet-stream"}
    params = {"visualFeatures": "Description", "language": "en"}
    response = requests.post(
        url + "/vision/v3.1/analyze", headers=headers, params=params, data=path.read_bytes(), timeout=30
    )
    return str(json.loads(response.content)["description"]["captions"][0]["text"])


def seed_one(
    url: str, image: np.ndarray, scorer: Any, reference: Any, args: argparse.Namespace, workdir: Path, index: int
) -> np.ndarray:
    """Seed 000's loop: save each masked image, post it, parse the caption; one at a time."""
    import requests
    import shap

    def get_caption(path_to_image: str) -> str:
        headers = {"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/octet-stream"}
        params = {"visualFeatures": "Description", "language": "en"}
        payload = open(path_to_image, "rb").read()
        response = requests.post(url + "/vision/v3.1/analyze", headers=headers, params=params, data=payload, timeout=30)
        results = json.loads(response.content)
        return results["description"]["captions"][0]["text"]

    counter = [0]

    def caption_one(masked: np.ndarray) -> str:
        path = workdir / f"{index}_{counter[0]}.png"
        Image.fromarray(np.clip(np.rint(masked), 0, 255).astype(np.uint8)).save(path)
        counter[0] += 1
        return get_caption(str(path))

    if args.method != "shap.Partition":  # the same serial loop, under another method
        from xai_bridge.captions import explain_caption

        [exp] = explain_caption(
            caption_one,
            image,
            scorer,
            method=args.method,
            max_evals=args.max_evals,
            captions=[reference.text],
            seed=0,
            **_method_params(args),
        )
        return exp.attributions[0]

    def f(x: np.ndarray) -> np.ndarray:
        return scorer.score(reference, [caption_one(masked) for masked in x]).astype(np.float64)

    masker = shap.maskers.Image(args.masker, image.shape)
    explainer = shap.explainers.Partition(f, masker)
    state = np.random.get_state()
    np.random.seed(0)
    try:
        out = explainer(
            image[None].astype(np.float64),
            max_evals=args.max_evals,
            batch_size=args.batch_size,
            fixed_context=None,
            silent=True,
        )
    finally:
        np.random.set_state(state)
    return np.asarray(out.values)[0].sum(axis=2).transpose(2, 0, 1)  # (T, H, W)


def bridge(
    url: str, images: list[np.ndarray], scorer: Any, args: argparse.Namespace, cache: Path | None
) -> tuple[list[np.ndarray], dict[str, int]]:
    """xai-bridge: explain_caption with the Azure v3.1 captioner, every setting at its default."""
    from xai_bridge.adapters.captioners import AzureVisionV31Captioner

    from xai_bridge.captions import explain_caption

    with AzureVisionV31Captioner(url, key=KEY, cache=cache) as captioner:
        if "budget" in inspect.signature(explain_caption).parameters:
            exps = explain_caption(
                captioner, images, args.method, scorer=scorer, budget=args.max_evals, seed=0, **_method_params(args)
            )
        else:  # the older release, for side-by-side runs of two versions
            exps = explain_caption(
                captioner, images, scorer, method=args.method, max_evals=args.max_evals, seed=0, **_method_params(args)
            )
        return [exp.attributions[0] for exp in exps], captioner.stats.snapshot()


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (Linux; 0 elsewhere)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True)).get("ListenOverflows", 0))
    return 0


class Breakdown:
    """Where a run's time goes: CPU seconds of encoding and scoring, shap's dependent rounds, dropped connects.

    Wraps (for the run only) the client's image encoder, the scorer and the
    caption model's ``predict``; counts the rounds of each image (``predict``
    calls that asked the captioner for new images: each waits at least one
    latency) and the kernel's listen-queue overflows (each costs the
    connection a 1 s SYN retransmission).
    """

    def __init__(self, scorer: Any, latency: float) -> None:
        self.scorer, self.latency = scorer, latency
        self.encode_s = self.score_s = self.cpu_s = 0.0
        self.drops = 0
        self.rounds: dict[int, int] = {}

    def __enter__(self) -> Breakdown:
        try:
            import xai_bridge.adapters.captioners._exchange as exchange
        except ImportError:  # the older release: the client was one module
            import xai_bridge.adapters.captioners.http as exchange  # type: ignore[no-redef]

        from xai_bridge.captions.model import CaptionScoreModel

        self._exchange, self._model = exchange, CaptionScoreModel
        self._encode, self._score, self._predict = exchange.encode_image, self.scorer.score, CaptionScoreModel.predict
        lock = threading.Lock()

        def timed(fn: Any, slot: str) -> Any:
            def call(*a: Any, **k: Any) -> Any:
                start = time.thread_time()
                try:
                    return fn(*a, **k)
                finally:
                    with lock:
                        setattr(self, slot, getattr(self, slot) + time.thread_time() - start)

            return call

        def predict(model: Any, images: np.ndarray) -> np.ndarray:
            before = len(model._image_captions)
            out = self._predict(model, images)
            if len(model._image_captions) > before:
                with lock:
                    self.rounds[id(model)] = self.rounds.get(id(model), 0) + 1
            return out

        exchange.encode_image = timed(self._encode, "encode_s")
        self.scorer.score = timed(self._score, "score_s")
        CaptionScoreModel.predict = predict  # type: ignore[method-assign]
        self._cpu, self._drops = time.process_time(), listen_overflows()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.process_time() - self._cpu
        self.drops = listen_overflows() - self._drops
        self._exchange.encode_image = self._encode
        self.scorer.score = self._score
        self._model.predict = self._predict  # type: ignore[method-assign]

    def row(self) -> dict[str, Any]:
        rounds = sorted(self.rounds.values())
        return {
            "process_cpu_s": round(self.cpu_s, 2),
            "encode_cpu_s": round(self.encode_s, 2),
            "scorer_cpu_s": round(self.score_s, 2),
            "rounds_per_image": rounds,
            "latency_floor_s": round(max(rounds, default=0) * self.latency, 2),
            "listen_overflows": self.drops,
        }


class _PlainHandler(BaseHTTPRequestHandler):
    """A stock handler (HTTP/1.0: one connection per request): sleep, decode the image, answer Azure v3.1."""

    latency = 0.1
    count: Any = None  # a multiprocessing.Value shared with the parent

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        from caption_server import rule_caption

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.count.get_lock():
            self.count.value += 1
        time.sleep(self.latency)
        if self.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            self.send_error(401)
            return
        with Image.open(io.BytesIO(body)) as im:
            image = np.asarray(im.convert("RGB"))
        caption = rule_caption(image)
        answer = {"description": {"tags": caption.split(), "captions": [{"text": caption, "confidence": 0.9}]}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(conn: Any, latency: float, count: Any) -> None:
    """Child process: a stock ``ThreadingHTTPServer``; answers 'stop' on the pipe."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    _PlainHandler.latency = latency
    _PlainHandler.count = count
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PlainHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    conn.send(f"http://{host}:{port}")
    conn.recv()
    server.shutdown()
    server.server_close()
    conn.send(True)


class RemoteServer:
    """A plain threaded HTTP server in its own process, like a real remote endpoint (its CPU is not ours).

    Python's stock ``http.server.ThreadingHTTPServer`` (listen backlog 5, a
    thread and a connection per request, HTTP/1.0) with a stock handler that
    sleeps ``latency`` seconds and decodes every image with Pillow: what an
    outside measurement would run, with none of the test server's tuning.
    """

    def __init__(self, latency: float) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._count = ctx.Value("l", 0)
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, latency, self._count), daemon=True)
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the loopback server did not start within 60 s")
        self.url = self._conn.recv()

    @property
    def requests(self) -> int:
        return int(self._count.value)

    def reset(self) -> None:
        with self._count.get_lock():
            self._count.value = 0

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
            self._conn.poll(10)
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--images", type=int, default=4, help="images explained (seed 000 had 4)")
    parser.add_argument(
        "--method",
        choices=["shap.Partition", "rise"],
        default="shap.Partition",
        help="shap.Partition (seed 000) or rise (all masks known up front)",
    )
    parser.add_argument("--batch-size", type=int, default=50, help="shap's batch size (the seed's)")
    parser.add_argument(
        "--masker",
        default="blur(128,128)",
        help="shap masker for both runs: 'blur(128,128)' (default), 'inpaint_ns' (seed 000's; "
        "its OpenCV inpainting costs ~30 ms per masked image on both sides)",
    )
    parser.add_argument(
        "--scorer",
        choices=["word", "bart"],
        default="word",
        help="word: WordMatchScorer (the outside measurement's); bart: a tiny teacher-forced BART",
    )
    parser.add_argument("--device", type=device_arg, default="cpu", help="where the scorer runs (cpu, cuda)")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed's serial loop (ratios then missing)")
    parser.add_argument("--profile", action="store_true", help="cProfile the cache-warm re-run (top 25 by own time)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import shap
    import torch

    torch.set_num_threads(2)
    from caption_server import rule_caption
    from test_caption_models import build_bart, build_tokenizer
    from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer, WordMatchScorer

    scorer: Any
    if args.scorer == "bart":
        tok = build_tokenizer()
        bart = build_bart(len(tok)).to(args.device)
        scorer = TeacherForcingScorer(bart, tok, output="log_odds")  # shap's TeacherForcing output
    else:
        scorer = WordMatchScorer()
    images = test_images(args.images)
    # warm-up outside the timings: numba compiles shap's partition code, torch its kernels
    warm = shap.explainers.Partition(lambda x: np.zeros((len(x), 2)), shap.maskers.Image(args.masker, (16, 16, 3)))
    warm(np.zeros((1, 16, 16, 3)), max_evals=20, batch_size=5, silent=True)
    reference = scorer.tokenize(rule_caption(images[0]))
    scorer.score(reference, [reference.text, "a dog"])
    rows: list[dict[str, Any]] = []
    with RemoteServer(args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "masked_images"
        workdir.mkdir()
        seed_maps = None
        if not args.no_seed:
            start = time.perf_counter()
            seed_maps = seed_serial(server.url, images, scorer, args, workdir)
            synchronize(args.device)
            rows.append(
                {
                    "run": "seed 000 serial loop",
                    "seconds": time.perf_counter() - start,
                    "requests": server.requests,
                    "files_written": len(os.listdir(workdir)),
                }
            )
        cache = Path(tmp) / "captions.sqlite"
        for name in ("xai-bridge, defaults (images together, 64 at once, BMP)", "xai-bridge re-run, cache warm"):
            server.reset()
            profiler = None
            if args.profile and "re-run" in name:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            start = time.perf_counter()
            with Breakdown(scorer, args.latency) as breakdown:
                maps, stats = bridge(server.url, images, scorer, args, cache)
                synchronize(args.device)
            seconds = time.perf_counter() - start
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            row: dict[str, Any] = {
                "run": name,
                "seconds": seconds,
                "requests": server.requests,
                "files_written": 0,
                "cache_hits": stats["cache_hits"],
                **breakdown.row(),
            }
            if seed_maps is not None:
                row["max_abs_diff_vs_seed"] = max(
                    float(np.abs(m - r).max()) for m, r in zip(maps, seed_maps, strict=True)
                )
            rows.append(row)
    base = rows[0]["seconds"] if seed_maps is not None else None
    for row in rows:
        row["speedup"] = base / row["seconds"] if base else None
    result = {
        "method": args.method,
        "images": args.images,
        "latency_s": args.latency,
        "max_evals": args.max_evals,
        "batch_size": args.batch_size,
        "masker": args.masker if args.method == "shap.Partition" else None,
        "device": args.device,
        "runs": rows,
        "speedup_default": rows[-2]["speedup"],
        "speedup_cached": rows[-1]["speedup"],
        "targets": {"default": 20.0, "cached": 50.0},
    }
    setting = (
        f"batch_size={args.batch_size}, masker {args.masker}"
        if args.method == "shap.Partition"
        else "one batch of masks"
    )
    print(
        f"\n{args.images} images, {args.method}, max_evals={args.max_evals}, {setting}, "
        f"server latency {args.latency * 1000:.0f} ms (targets: defaults >= 20x, cache warm >= 50x)\n"
    )
    print(f"{'run':56s} {'seconds':>8s} {'requests':>9s} {'files':>6s} {'speedup':>8s} {'max|diff|':>10s}")
    for row in rows:
        diff = row.get("max_abs_diff_vs_seed")
        speedup = "" if row["speedup"] is None else f"{row['speedup']:7.1f}x"
        print(
            f"{row['run']:56s} {row['seconds']:8.2f} {row['requests']:9d} {row['files_written']:6d} "
            f"{speedup:>8s} {'' if diff is None else f'{diff:10.2e}'}"
        )
    for row in rows[1:]:
        print(f"{row['run']}: " + ", ".join(f"{k} {row[k]}" for k in Breakdown(None, 0).row() if k in row))
    print("\n" + json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
