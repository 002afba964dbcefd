"""captum's LRP leaves state on every layer; :func:`lrp_guard` puts it back and names unsupported layers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from xai_bridge.errors import MethodNotApplicableError

__all__ = ["lrp_guard"]

#: What captum's LRP sets on every layer (``activations`` holds the layer's input tensors).
_LRP_LAYER_ATTRS = ("rule", "activations", "activation")


@contextmanager
def lrp_guard(net: Any, _x: Any = None) -> Iterator[None]:
    """Put back what captum's LRP leaves on the layers, also when it raises; name a layer it has no rule for.

    LRP sets ``rule`` (and deletes rules the user set), and ``activations``, a
    dict holding each layer's input tensors, on every layer; on a rule it sets
    relevance dicts holding gradients and hook handles. Each layer attribute
    is restored to what it was (absent ones removed) and a user's rule gets its
    own attributes back, so no tensor of the run stays referenced.
    """
    missing = object()
    layers = [(m, {k: vars(m).get(k, missing) for k in _LRP_LAYER_ATTRS}) for m in net.modules()]
    rules = [
        (rule, dict(vars(rule)))
        for _, saved in layers
        if (rule := saved["rule"]) is not missing and rule is not None and hasattr(rule, "__dict__")
    ]
    try:
        yield
    except TypeError as exc:
        if "no rule defined" not in str(exc):
            raise
        found = re.search(r"<class '([\w.]+)'>", str(exc))
        layer = found.group(1) if found else str(exc)
        raise MethodNotApplicableError(
            f"model: captum.LRP has no propagation rule for layer type {layer.rsplit('.', 1)[-1]} ({layer}); "
            "set a captum rule on those layers (layer.rule = EpsilonRule() etc.) or use another gradient "
            "method, e.g. captum.IntegratedGradients"
        ) from None
    finally:
        for layer_module, saved in layers:
            state = vars(layer_module)
            for key, value in saved.items():
                if value is missing:
                    state.pop(key, None)
                else:
                    state[key] = value
        for rule, attrs in rules:
            vars(rule).clear()
            vars(rule).update(attrs)
