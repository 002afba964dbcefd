"""Install hints on an install without torch: every method names the extra that brings what it really needs.

The blocked subprocess hides torch and torchvision from every import finder, as an install without them
would (``importlib.util.find_spec`` says None, ``import torch`` raises), then runs every registered method
on a numpy black box.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xai_bridge as xb
from xai_bridge.registry import MethodSpec, Registry, install_hint

HIDE = """
import sys
BLOCKED = {"torch", "torchvision"}
class _Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""

RUN_ALL = """
import json
import numpy as np
import xai_bridge as xb
image = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
def box(x):
    return np.stack([x[..., 0].mean((1, 2)), x[..., 2].mean((1, 2))], 1).astype(np.float32)
found = {}
for name, spec in xb.default_registry().specs.items():
    try:
        xb.explain(box, image, name, 0, **dict(spec.quick))
        found[name] = ["ran", ""]
    except xb.XaiBridgeError as exc:
        found[name] = [type(exc).__name__, str(exc)]
    except BaseException as exc:
        found[name] = ["raw " + type(exc).__name__, str(exc)]
print(json.dumps(found))
"""


@pytest.mark.slow
def test_every_method_on_an_install_without_torch_names_its_extra() -> None:
    done = subprocess.run([sys.executable, "-c", HIDE + RUN_ALL], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    raw = {name: res for name, res in found.items() if res[0].startswith("raw")}
    assert not raw, raw  # never a bare ModuleNotFoundError / AttributeError from a missing library
    missing = {name: msg for name, (kind, msg) in found.items() if kind == "LibraryNotInstalledError"}
    assert "builtin.RISE" in missing and "builtin.Saliency" in missing and "captum.IntegratedGradients" in missing
    for name, message in missing.items():
        assert "needs torch" in message or "torch" in message, (name, message)
        assert "pip install 'xai-bridge[" in message and "pip install ;" not in message, (name, message)
        assert not message.endswith("pip install "), (name, message)
    assert "pip install 'xai-bridge[torch]'" in missing["builtin.RISE"]
    assert "pip install 'xai-bridge[captum]'" in missing["captum.IntegratedGradients"]
    # the numpy methods still run: occlusion, and lime / shap's Partition where their libraries are installed
    assert found["builtin.Occlusion"][0] == "ran"
    registry = xb.default_registry()
    for name in ("lime.Lime", "shap.Partition"):
        if all(m not in ("torch", "torchvision") for m in registry.spec(name).requires):
            assert found[name][0] == "ran", found[name]


def test_hints_come_from_the_requirements_when_a_spec_names_no_extra() -> None:
    assert install_hint(["torch"]) == "pip install 'xai-bridge[torch]'"
    assert install_hint(["torch", "captum", "skimage"]) == "pip install 'xai-bridge[captum,lime,torch]'"
    assert install_hint(["cv2", "mylib"]) == "pip install 'xai-bridge[shap]' mylib"
    assert install_hint([]) != "pip install " and "pip install" not in install_hint([])
    spec = MethodSpec(name="third.Party", target="third_party_xb_nothere:run", requires=("torch", "third_party_lib"))
    assert spec.install_hint == "pip install 'xai-bridge[torch]' third_party_lib"
    named = MethodSpec(name="third.Named", target="x:y", requires=("torch",), extra="fake")
    assert named.install_hint == "pip install 'xai-bridge[fake]'"


def test_a_module_failing_on_a_missing_library_names_that_library() -> None:
    """A method module that imports a library its spec does not list: the hint names the library that failed."""
    registry = Registry([MethodSpec(name="third.Broken", target="xb_no_such_module_anywhere:run")], entry_points=False)
    with pytest.raises(xb.LibraryNotInstalledError, match=r"pip install xb_no_such_module_anywhere$"):
        registry.load("third.Broken")
