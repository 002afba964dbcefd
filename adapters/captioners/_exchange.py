"""One request and its answer: the session with the transport policy mounted, and the answer read and checked.

:class:`Exchanges` is the part of :class:`~xai_bridge.adapters.captioners.client.RemoteClient`
that sends one image: the per-thread ``requests.Session`` carrying the
:class:`~xai_bridge.adapters.captioners._transport.PolicyAdapter` (retries,
no redirects, bounded bodies, a deadline), the key header, the answer's
parsing with bounded retries of malformed answers, and the cache write.

Every answer is scrubbed of the key before it is kept: a server that echoes
the key (in a caption, a tag, an error text) never gets it into the cache, an
Explanation or a saved ``.npz``. An error status that retrying cannot fix
(4xx other than 408/429) fails at once, in one line naming the fix.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import DiskCache
from .encoding import EncodedImage, ImageLimits, encode_image
from .keys import AuthenticationError, MalformedAnswer, RemoteCaptionError, Secret
from .retry import RateLimiter, RetryPolicy, parse_retry_after

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteStats, _Call

__all__ = ["Exchanges"]

logger = logging.getLogger("xai_bridge.remote")


class Exchanges:
    """Sending one image and reading its answer (a base class of ``RemoteClient``)."""

    _answer_field: str
    url: str
    limits: ImageLimits
    image_format: str
    fit_images: bool
    key_env: str | None
    timeout: float | tuple[float, float]
    deadline: float
    max_response_bytes: int
    retry: RetryPolicy
    limiter: RateLimiter | None
    cache: DiskCache | None
    stats: RemoteStats
    _key: Secret | None
    _rng: random.Random
    _rng_lock: threading.Lock
    _local: threading.local
    _sessions: list[Any]
    _sessions_lock: threading.Lock

    if TYPE_CHECKING:  # pragma: no cover  (defined by RemoteClient and the providers)

        def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call: ...
        def _auth_headers(self, key: str) -> dict[str, str]: ...
        def _parse(self, payload: Any) -> Any: ...
        def _received(self, answer: Any, image: EncodedImage) -> Any: ...
        def _validate(self, answer: Any) -> None: ...
        def _refuse(self, answer: Any) -> str | None: ...
        def _scrub(self, text: str) -> str: ...
        def _refresh_claim(self, wait: float) -> None: ...

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            from ._transport import PolicyAdapter

            session = requests.Session()
            session.max_redirects = 0  # the adapter refuses 3xx; this makes sure requests never follows one
            # the environment's proxies and CA bundle for this endpoint, read once: requests reads os.environ on
            # every call otherwise (~0.4 ms a request); the key header is never replaced by a ~/.netrc login
            env = session.merge_environment_settings(self.url, {}, None, None, None)
            session.proxies, session.verify, session.trust_env = env["proxies"], env["verify"], False
            adapter = PolicyAdapter(
                type(self).__name__,
                self.retry,
                deadline=self.deadline,
                max_response_bytes=self.max_response_bytes,
                backoff=self._backoff,
                parse_retry_after=parse_retry_after,
                scrub=self._scrub,
                before_attempt=self._before_attempt,
                on_wait=self._on_wait,
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            return self.retry.backoff_delay(attempt, self._rng)

    def _before_attempt(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire()
        self.stats.add(requests=1)
        self._refresh_claim(0.0)

    def _on_wait(self, delay: float) -> None:
        self.stats.add(retries=1)
        self._refresh_claim(delay)

    def _exchange(self, key: str, pixels: np.ndarray, prompt: str | None = None) -> Any:
        """Send one image until it is answered; transport faults are retried by the session's adapter."""
        import requests

        from ._transport import TransportError

        image = encode_image(pixels, self.limits, self.image_format, self.fit_images)
        session = self._session()
        call = self._prepare(image, prompt)
        headers = dict(call.headers)
        if self._key is not None:
            headers.update(self._auth_headers(self._key.reveal()))
        name = type(self).__name__
        url = self._scrub(call.url)
        malformed = 0
        while True:
            try:
                response = session.post(
                    call.url,
                    params=call.params,
                    headers=headers,
                    data=call.data,
                    json=call.json,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except TransportError as exc:
                raise RemoteCaptionError(str(exc)) from None
            except requests.RequestException as exc:  # not a transport fault: e.g. a bad URL
                raise RemoteCaptionError(
                    f"{name}: {url}: {type(exc).__name__}: {self._scrub(str(exc))[:300]}"
                ) from None
            self._check_status(response, url)
            try:
                answer = self.scrub_answer(self._received(self._parse(response.json()), image))
                self._validate(answer)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                malformed += 1
                what = self._scrub(str(exc))[:120] if isinstance(exc, MalformedAnswer) else type(exc).__name__
                if malformed > self.retry.max_malformed:
                    raise RemoteCaptionError(
                        f"{name}: {url} sent {malformed} malformed answers ({what}); "
                        f"last one: {self._scrub(response.text)[:200]!r}"
                    ) from None
                logger.warning("%s: malformed answer from %s (%s); retrying", name, url, what)
                self.stats.add(retries=1)
                time.sleep(self._backoff(malformed - 1))
                continue
            refused = self._refuse(answer)
            if refused is not None:
                raise RemoteCaptionError(f"{name}: {url} sent {refused}")
            if self.cache is not None:
                self.cache.set(key, {self._answer_field: answer})
            return answer

    def scrub_answer(self, answer: Any) -> Any:
        """``answer`` with the key replaced by ``***`` in every string (dict keys included), however deep."""
        if isinstance(answer, str):
            return self._scrub(answer)
        if isinstance(answer, dict):
            return {self.scrub_answer(k): self.scrub_answer(v) for k, v in answer.items()}
        if isinstance(answer, (list, tuple)):
            return [self.scrub_answer(v) for v in answer]
        return answer

    def _check_status(self, response: Any, url: str) -> None:
        """Raise for an error status: the key refused (401/403) or any other 4xx/5xx left after the retries."""
        status, name = response.status_code, type(self).__name__
        said = _error_text(self._scrub(response.text))
        if status in (401, 403):
            where = f" or ${self.key_env}" if self.key_env else ""
            raise AuthenticationError(
                f"key: {name} at {url} refused the API key (HTTP {status}: {said}); check key={where}"
            )
        if 400 <= status < 500:
            fix = _FIXES.get(status, "retrying cannot fix a client error; check the request")
            raise RemoteCaptionError(f"{name}: {url} answered HTTP {status} ({said}); {fix} (not retried)")
        if status >= 400:
            raise RemoteCaptionError(f"{name}: {url} answered HTTP {status} ({said}) after the allowed retries")


#: the fix of each client error that retrying cannot cure (408 and 429 are retried)
_FIXES = {
    400: "the API refused the request; check the parameters (features=, api-version=) and the image",
    404: "check the endpoint URL (resource name, path) and the api-version",
    405: "check the endpoint URL: this path takes no POST",
    413: "the image is too large for the API; pass fit_images=True or send smaller images",
    415: "the API does not take this image type; pass another image_format=",
}


def _error_text(body: str, limit: int = 120) -> str:
    """The server's own error message (``{"error": {"message": ...}}``, Azure's and OpenAI's shape), shortened."""
    import json

    text = body
    try:
        payload = json.loads(body)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(error, dict):
            text = str(error.get("message") or error.get("code") or body)
    except ValueError:
        pass
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
