"""Native libraries that must be loaded in a certain order.

TensorFlow 2.20+ and triton (which torchvision and ``torch._dynamo`` import)
crash the interpreter with a segmentation fault when triton is loaded after
TensorFlow (tensorflow/tensorflow#124205). TensorFlow comes in through the
user's Keras model or through libraries that import it when installed
(Quantus), so every adapter that can lead to either calls
:func:`triton_before_tensorflow` first. Standard library only.
"""

from __future__ import annotations

__all__ = ["triton_before_tensorflow"]


def triton_before_tensorflow() -> None:
    """Load triton (when installed and not loaded yet) so that loading it after TensorFlow cannot crash.

    When TensorFlow is already loaded, triton is loaded with ``RTLD_DEEPBIND``
    so that its symbols do not clash. A failed import is left to torch to
    report.
    """
    import importlib.util
    import os
    import sys

    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    flags = sys.getdlopenflags()
    if "tensorflow" in sys.modules and deepbind is not None:
        sys.setdlopenflags(os.RTLD_NOW | deepbind)
    try:
        import triton  # type: ignore[import-untyped]  # noqa: F401
    except Exception:  # torch reports a broken triton itself, when it needs it
        pass
    finally:
        sys.setdlopenflags(flags)
