"""Torch helpers every adapter shares: the model guard, seeding, swapped-children restore, forward counting.

:func:`model_guard` saves and restores everything an explainer may change on
a torch module; :func:`enter_run` is what each library run enters around it.

Concurrency: a guard changes shared state of the user's module (modes,
``requires_grad``, hooks), so two threads guarding modules that share any
submodule would save each other's temporary state and remove each other's
hooks. :func:`holding` makes one thread at a time own every submodule it
guards; the others wait (they are never refused). Lock order, to stay free of
deadlocks: modules first, then :data:`~xai_bridge._seeding.GLOBAL_RNG_LOCK`
(``explain`` holds its model for the whole run, see :func:`xai_bridge.models.explaining`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from xai_bridge import progress
from xai_bridge._load_order import triton_before_tensorflow
from xai_bridge._seeding import numpy_seeded

__all__ = [
    "ForwardCounter",
    "children_restored",
    "enter_run",
    "holding",
    "hook_count",
    "model_guard",
    "seeded",
    "weights_fingerprint",
]

triton_before_tensorflow()  # torch is loaded: before any TensorFlow, load triton (see _load_order)

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


class _Ownership:
    """Which thread owns which module (by ``id``), with a re-entrant depth; waiters sleep on one condition.

    A thread takes all the modules of a tree at once or waits, so two guards
    never hold half of each other's modules. Entries exist only while held
    (the holder keeps the modules alive, so their ids cannot be reused).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._owners: dict[int, list[int]] = {}  # id(module) -> [thread ident, depth]

    @contextmanager
    def hold(self, modules: Iterable[Any]) -> Iterator[None]:
        held = list(modules)  # referenced until released: the ids stay unique
        keys = {id(m) for m in held}
        me = threading.get_ident()
        with self._changed:
            while any(self._owners.get(k, (me,))[0] != me for k in keys):
                self._changed.wait()
            for k in keys:
                self._owners.setdefault(k, [me, 0])[1] += 1
        try:
            yield
        finally:
            with self._changed:
                for k in keys:
                    entry = self._owners[k]
                    entry[1] -= 1
                    if not entry[1]:
                        del self._owners[k]
                self._changed.notify_all()


_OWNERSHIP = _Ownership()


_ROOTS = threading.local()  # per thread: id(root module) -> depth of holding(root) blocks


@contextmanager
def holding(module: Any) -> Iterator[None]:
    """Context manager: this thread alone guards ``module`` and every submodule inside (re-entrant).

    Another thread guarding any of those modules (the same model, a second
    wrapper around it, or a model sharing a backbone) waits until the block ends.
    Inside a block of this thread on the same ``module`` it costs nothing: the
    outer block holds the tree already (an explanation nests three, and
    walking 274 modules each time was ~1 ms of a 40 ms Saliency call).
    """
    roots: dict[int, int] = _ROOTS.__dict__.setdefault("depth", {})
    key = id(module)
    if roots.get(key):
        roots[key] += 1
        try:
            yield
        finally:
            roots[key] -= 1
        return
    with _OWNERSHIP.hold(module.modules()):
        roots[key] = 1
        try:
            yield
        finally:
            del roots[key]


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
    did not remove are removed). Nothing else is touched. The calling thread
    holds every submodule for the block (see :func:`holding`), so concurrent
    guards on the same modules run one after the other.

    Args:
        module: the user's ``torch.nn.Module``.
        eval_mode: put the module in eval mode inside the block.
        freeze_params: set ``requires_grad=False`` on parameters inside the
            block (gradients w.r.t. inputs only: faster, and no ``.grad`` left).

    Yields:
        The module itself.
    """
    modules = list(module.modules())
    # inside this thread's holding(module) block the tree is held already
    held = nullcontext() if getattr(_ROOTS, "depth", {}).get(id(module)) else _OWNERSHIP.hold(modules)
    with held, _guarded(module, modules, eval_mode, freeze_params):
        yield module


@contextmanager
def _guarded(module: Any, modules: list[Any], eval_mode: bool, freeze_params: bool) -> Iterator[None]:
    """The save / restore of :func:`model_guard`, run while the modules are held."""
    # One pass over the module tree; plain attributes are read and written through __dict__
    # (nn.Module.__setattr__ is slow, and this runs around every explanation).
    from torch.utils.hooks import RemovableHandle

    # Hook dicts are keyed by handle ids, which only grow: every hook registered inside the block has
    # an id >= this one, so no hook dict needs copying on the way in. No other thread registers hooks
    # on these modules through a guard meanwhile (they are held), so only this block's hooks go.
    first_new = RemovableHandle.next_id
    states: list[dict[str, Any]] = []
    saved: list[tuple[Any, ...]] = []
    params: list[Any] = []
    seen: set[int] = set()
    for m in modules:
        state = m.__dict__
        states.append(state)
        saved.append(
            (
                state.get("training"),
                state.get("_is_full_backward_hook", _MISSING),
                # transformers >= 5 installs output-capturing hooks on first forward and sets this flag;
                # removing the hooks without restoring the flag would silently break output_hidden_states.
                state.get(_HF_FLAG, _MISSING),
            )
        )
        for p in state.get("_parameters", {}).values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode and any(training for training, *_ in saved):
            module.eval()
        if freeze_params:
            for p, flag in zip(params, requires, strict=False):
                if flag:
                    p.requires_grad_(False)
        yield
    finally:
        for state, (training, backward, hf) in zip(states, saved, strict=False):
            if state.get("training") is not training:
                state["training"] = training
            for key, value in (("_is_full_backward_hook", backward), (_HF_FLAG, hf)):
                if state.get(key, _MISSING) is not value:
                    if value is _MISSING:
                        state.pop(key, None)
                    else:
                        state[key] = value
            for d in _HOOK_DICTS:
                hooks = state.get(d)
                if hooks:
                    for handle_id in [k for k in hooks if isinstance(k, int) and k >= first_new]:
                        del hooks[handle_id]
        for p, flag, grad in zip(params, requires, grads, strict=False):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad


@contextmanager
def children_restored(module: nn.Module) -> Iterator[None]:
    """Put back every submodule a library swapped, also when it raises.

    pytorch-grad-cam's AblationCAM swaps the target layer for an ablation
    layer, and guided backprop swaps every ``ReLU`` (and puts back new ones,
    losing ``inplace`` and identity); both skip the restore on errors.
    """
    saved = [(m, dict(m._modules)) for m in module.modules()]
    try:
        yield
    finally:
        for mod, children in saved:
            current = mod._modules
            if current.keys() != children.keys() or any(current[k] is not v for k, v in children.items()):
                current.clear()
                current.update(children)


class ForwardCounter:
    """Context manager counting the images passed through ``net`` (a pre-hook, removed on exit)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.count = 0
        self._handle: Any = None

    def _hook(self, _mod: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim > 0:
            self.count += int(args[0].shape[0])
            progress.tick(int(args[0].shape[0]))

    def __enter__(self) -> ForwardCounter:
        self._handle = self.net.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed numpy's and torch's global generators (used by the libraries); restore both after.

    Holds :data:`xai_bridge._seeding.GLOBAL_RNG_LOCK`, so concurrent seeded runs
    do not interleave their draws.
    """
    device = torch.device(device or "cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with numpy_seeded(seed), torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def enter_run(stack: ExitStack, model: Any, net: Any, seed: int | None = None) -> ForwardCounter:
    """Enter what every library run on ``net`` needs into ``stack``; returns the forward counter.

    Hooks left on a user-built pixel wrapper are removed (``TorchModel.guard``
    already covers its own wrapper), submodules a library swaps are put back,
    the global RNGs are seeded when ``seed`` is given, and images through
    ``net`` are counted.
    """
    from xai_bridge.adapters.models.torch import PixelModule

    if not isinstance(net, PixelModule):
        stack.enter_context(model_guard(net, eval_mode=False))
    stack.enter_context(children_restored(net))
    if seed is not None:
        stack.enter_context(seeded(seed, model.device))
    return stack.enter_context(ForwardCounter(net))


def weights_fingerprint(module: nn.Module) -> dict[str, Any]:
    """What identifies a module's computation: its parameter / buffer names and shapes, and a hash of their values.

    Buffers count (BatchNorm statistics, a zero-shot model's prompt
    embeddings), non-persistent ones too. ``shapes`` changes with the
    architecture, ``weights`` with any value; both are hex digests, the same
    in every process. Tensors on the ``meta`` device have no values and hash
    by shape only.
    """
    shapes = hashlib.blake2b(digest_size=16)
    weights = hashlib.blake2b(digest_size=16)
    count = 0
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            line = f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode()
            shapes.update(line)
            weights.update(line)
            count += tensor.numel()
            if tensor.device.type != "meta" and tensor.numel():
                flat = tensor.detach().reshape(-1).contiguous().cpu()
                weights.update(flat.view(torch.uint8).numpy().tobytes())
    return {"shapes": shapes.hexdigest(), "weights": weights.hexdigest(), "values": count}
