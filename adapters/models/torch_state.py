"""Save and restore everything an explainer may change on a torch module."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["model_guard", "hook_count"]

_HF_FLAG = "_output_capturing_hooks_installed"
_MISSING = object()

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


def hook_count(module: Any) -> int:
    """Total number of hooks registered on ``module`` and its submodules."""
    dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, d, {})) for m in module.modules() for d in dicts)


@contextmanager
def model_guard(module: Any, eval_mode: bool = True, freeze_params: bool = False) -> Iterator[Any]:
    """Run a block with ``module`` in eval mode and restore its state afterwards.

    Restored in ``finally`` (also when the block raises): every submodule's
    ``training`` flag, every parameter's ``requires_grad`` and ``.grad``, and
    the hook dictionaries of every submodule (hooks a library registered and
    did not remove are removed). Nothing else is touched.

    Args:
        module: the user's ``torch.nn.Module``.
        eval_mode: put the module in eval mode inside the block.
        freeze_params: set ``requires_grad=False`` on parameters inside the
            block (gradients w.r.t. inputs only: faster, and no ``.grad`` left).

    Yields:
        The module itself.
    """
    modules = list(module.modules())
    training = [m.training for m in modules]
    params = list(module.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    hooks = [{d: dict(getattr(m, d, {})) for d in _HOOK_DICTS} for m in modules]
    full_backward = [getattr(m, "_is_full_backward_hook", None) for m in modules]
    # transformers >= 5 installs output-capturing hooks on first forward and sets this flag;
    # removing the hooks without restoring the flag would silently break output_hidden_states.
    flags = [m.__dict__.get(_HF_FLAG, _MISSING) for m in modules]
    try:
        if eval_mode:
            module.eval()
        if freeze_params:
            for p in params:
                p.requires_grad_(False)
        yield module
    finally:
        for m, flag in zip(modules, training):
            m.training = flag
        for p, flag, grad in zip(params, requires, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for m, flag in zip(modules, full_backward):
            m._is_full_backward_hook = flag
        for m, flag in zip(modules, flags):
            if flag is _MISSING:
                m.__dict__.pop(_HF_FLAG, None)
            else:
                m.__dict__[_HF_FLAG] = flag
        for m, saved in zip(modules, hooks):
            for d, before in saved.items():
                current = getattr(m, d, None)
                if current is None:
                    continue
                for key in [k for k in current if k not in before]:
                    del current[key]
