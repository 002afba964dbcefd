"""What torch and Keras models share: the :class:`~xai_bridge.models.DifferentiableModel` surface.

Both wrap the user's network in a :class:`~xai_bridge.adapters.models.torch.PixelModule`
(uint8 pixels in [0, 255] -> declared preprocessing -> the network), which
every gradient and CAM library then calls as a torch module. Around it sit the
same guards, locks, score tap, batch tuner, memo and fingerprint, written
once here; a subclass adds only what its framework needs (how to predict, how
to find its device, which weights identify it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.batching import BatchTuner, ScoreTap, batched
from xai_bridge.errors import ModelInputError, ParameterError, XaiBridgeError
from xai_bridge.explanation import qualified_name
from xai_bridge.models import OutputKind
from xai_bridge.preprocess import Preprocess

from ._outputs import check_outputs, first_call_failure

if TYPE_CHECKING:  # torch is imported when a torch path first runs: a Keras model's own paths never need it
    import torch
    from torch import nn

__all__ = ["PixelModelBase", "positive_batch_size"]


def positive_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int >= 1, or the one-line error naming it."""
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        value = 0
    if isinstance(batch_size, bool) or value <= 0:
        raise ParameterError(f"batch_size: expected a positive integer, got {batch_size!r}; pass e.g. 32")
    return value


class PixelModelBase:
    """The shared part of :class:`TorchModel` and :class:`KerasModel` (not used on its own).

    Subclasses set ``self._pixel`` (the pixel module) and ``self._device``
    before calling :meth:`_setup`, and implement ``predict`` and ``module``.
    """

    _pixel: Any
    _device: torch.device
    preprocess: Preprocess

    def _setup(
        self,
        preprocess: Preprocess,
        output_kind: OutputKind | str,
        class_names: Sequence[str] | None,
        batch_size: int,
        tune_batch: bool,
    ) -> None:
        self.preprocess = preprocess
        self.output_kind = OutputKind(output_kind)
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = batch_size
        self._tuner = BatchTuner(self.batch_size) if tune_batch else None
        self._inferring = threading.local()  # inference() depth of each thread
        #: Caches that depend only on the module's structure and the input size
        #: (e.g. the CAM layer found by tracing); never holds tensors of a call.
        self.memo: dict[Any, Any] = {}

    @property
    def module(self) -> nn.Module:
        """The torch module gradient and CAM libraries see (CAM layers are chosen in it)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where pixel tensors are sent."""
        return self._device

    def pixel_module(self) -> nn.Module:
        """Module from [0, 255] NCHW pixels through the preprocessing to the outputs."""
        return self._pixel  # type: ignore[no-any-return]

    def pixel_tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW tensor in [0, 255] on ``device`` (channels-last strides when used)."""
        import torch

        self._before_run()
        # C order: an array with other strides (a fancy-indexing result) would reach torch in neither layout.
        # Shared, not copied, when it is already so (and writeable: torch warns on read-only memory); only
        # .float() below reads it.
        arr = np.asarray(images)
        if not (arr.dtype == np.uint8 and arr.flags.c_contiguous and arr.flags.writeable):
            arr = np.array(arr, dtype=np.uint8, order="C", copy=True)
        t = torch.from_numpy(arr).to(self._device)
        # NHWC memory seen as NCHW is the channels-last layout already: no copy into it and back
        x = t.permute(0, 3, 1, 2).float()
        return x if self._pixel.channels_last else x.contiguous()

    def _before_run(self) -> None:
        """Settle what must be decided before any library hooks the module (nothing by default)."""

    def guard(self, freeze_params: bool = False) -> Any:
        """Eval mode inside; mode, requires_grad, grads and hooks restored after.

        Covers :meth:`pixel_module` and the user's module below it, so hooks a
        library leaves on the pixel wrapper are removed as well.
        """
        from xai_bridge.adapters._torch import model_guard

        self._before_run()
        return model_guard(self._pixel, eval_mode=True, freeze_params=freeze_params)

    def exclusive(self) -> Any:
        """Context manager: one thread at a time uses this model (and any model sharing its modules).

        ``explain`` holds it for a whole run: the score tap, the batch tuner
        and the guarded state of the module are then never shared by two
        concurrent runs, which wait for each other instead (re-entrant).
        """
        from xai_bridge.adapters._torch import holding

        return holding(self._pixel)

    @contextmanager
    def explaining(self) -> Iterator[None]:
        """What a whole ``explain`` run on this model holds: :meth:`exclusive` use, and autograd on.

        Gradients are enabled also inside a caller's ``torch.no_grad()`` or
        ``torch.inference_mode()`` block, which would otherwise stop every
        gradient and CAM method (a backward pass, or tensors made in inference
        mode, fails there). The caller's mode is back after the block.
        """
        import torch

        with self.exclusive(), torch.inference_mode(False), torch.enable_grad():
            self._before_run()  # before any library registers hooks on the module
            yield

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Context for repeated ``predict`` calls in this thread: one guard around all of them.

        ``explain`` runs perturbation methods inside it: a guard saves and
        restores the state of every submodule, which a method making hundreds
        of ``predict`` calls would otherwise pay each time.
        """
        with self.guard():
            self._inferring.depth = getattr(self._inferring, "depth", 0) + 1
            try:
                yield
            finally:
                self._inferring.depth -= 1

    def _inside_inference(self) -> bool:
        return bool(getattr(self._inferring, "depth", 0))

    def _chunked(self, run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        """``run`` over ``images`` in chunks: the tuned size, or ``batch_size``; the first call checked.

        Until a first call succeeded, a failure of the user's model (the wrong
        input size or channel count for its preprocessing, say) is reported in
        one line naming ``preprocess=``, and the first output is checked
        against the class names (see :func:`check_outputs`).
        """
        if getattr(self, "_outputs_checked", False):
            return self._run_chunks(run, images)
        try:
            out = self._run_chunks(run, images)
        except (XaiBridgeError, MemoryError):
            raise
        except Exception as err:
            if "OutOfMemory" in type(err).__name__:
                raise
            raise ModelInputError(first_call_failure(err, self.preprocess, images.shape)) from None
        check_outputs(out, self.class_names)  # names vs outputs, image-shaped outputs (once per model)
        self._outputs_checked = True
        return out

    def _run_chunks(self, run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        if self._tuner is None or len(images) <= 1:
            return batched(run, images, self.batch_size)
        return self._tuner(run, images)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this model's outputs: the network's class, shapes and weights, and the preprocessing.

        A dataset store keeps it, so that a resume with another model (other
        weights, another architecture, other preprocessing) is refused rather
        than mixing two models' results in one store.
        """
        return {
            "class": qualified_name(type(self._network())),
            "wrapper": qualified_name(type(self)),
            "preprocess": repr(self.preprocess),
            "output_kind": self.output_kind.value,
            **self._weights_fingerprint(),
        }

    def _network(self) -> Any:
        """The user's own network object (its class names the fingerprint)."""
        return self.module

    def _weights_fingerprint(self) -> dict[str, Any]:
        from xai_bridge.adapters._torch import weights_fingerprint

        return weights_fingerprint(self._pixel)

    @property
    def output_count(self) -> int | None:
        """Number of outputs, once any forward pass has shown it (None before)."""
        return self._pixel.n_outputs  # type: ignore[no-any-return]

    @contextmanager
    def tap_scores(self, tap: ScoreTap) -> Iterator[None]:
        """Offer ``tap`` the outputs of every forward pass of :meth:`pixel_module` inside (held exclusively)."""
        with self.exclusive():
            previous, self._pixel.tap = self._pixel.tap, tap
            try:
                yield
            finally:
                self._pixel.tap = previous

    def __getstate__(self) -> dict[str, Any]:
        # picklable (Ray ships models to its workers): a thread's inference() depth stays with the thread
        state = self.__dict__.copy()
        del state["_inferring"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._inferring = threading.local()
