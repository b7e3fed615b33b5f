"""A `Generator` backed by any OpenAI-compatible endpoint (`seal serve`, vLLM, a hosted API).

Each prompt is one HTTP request, sent concurrently from a thread pool, so a batching server sees
many requests at once. The server picks the adapter by model name: make one `OpenAIGenerator`
per adapter (model="my-adapter") instead of passing adapters to `generate`.

Rendering: by default prompts go to /v1/chat/completions as `prompt.messages` (the server applies
its chat template). A `response_prefix` has no standard chat form, so such prompts need
`use_chat=False`: they then go to /v1/completions as `prompt.text + prompt.response_prefix`, the
base-model rendering (as `HFGenerator(use_chat_template=False)`).

`seed` becomes `seed + i` for the i-th prompt, so equal prompts still get different samples (as
they would in one HFGenerator batch) while every run with the same seed asks for the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from seal_lm.errors import SealError
from seal_lm.generation import AdapterChoice, Prompt, SamplingParams

_RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class OpenAIGenerator:
    """Completions from `model` at `base_url` (".../v1" or the server root)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120
    retries: int = 3  # further attempts after a connection error, 429 or 5xx, with exponential backoff
    concurrency: int = 16
    use_chat: bool = True
    backoff_s: float = 0.5  # first wait between attempts; doubles each time
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        root = self.base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = httpx.Client(headers=headers, timeout=self.timeout, limits=limits)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapters: AdapterChoice = None
    ) -> list[list[str]]:
        if adapters is not None and (not isinstance(adapters, (list, tuple)) or any(a is not None for a in adapters)):
            raise SealError("OpenAIGenerator takes no adapters: the server picks one by model name "
                            "(make an OpenAIGenerator with model=<adapter name>)")
        if not prompts:
            return []
        if self.use_chat and any(p.response_prefix for p in prompts):
            raise SealError("a response_prefix cannot be sent as a chat request: use OpenAIGenerator(use_chat=False)")
        bodies = [self._body(prompt, params, i) for i, prompt in enumerate(prompts)]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(bodies)))) as pool:
            return list(pool.map(lambda body: self._choices(self._post(body), params.n), bodies))

    @property
    def _url(self) -> str:
        return f"{self.base_url}/chat/completions" if self.use_chat else f"{self.base_url}/completions"

    def _body(self, prompt: Prompt, params: SamplingParams, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "n": params.n}
        if self.use_chat:
            body["messages"] = [{"role": role, "content": content} for role, content in prompt.messages]
        else:
            body["prompt"] = prompt.text + prompt.response_prefix
        if params.stop:
            body["stop"] = list(params.stop)
        if params.include_stop:
            body["include_stop_str_in_output"] = True  # vLLM's extension; `seal serve` knows it too
        if params.seed is not None:
            body["seed"] = params.seed + index
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self._url
        attempt = 0
        while True:
            attempt += 1
            last = attempt > self.retries
            try:
                response = self._client.post(url, json=body)
            except httpx.ReadTimeout:  # the server is busy with it: sending it again only adds load
                raise SealError(f"{url}: no answer within {self.timeout:g} s") from None
            except httpx.TransportError as exc:
                if last:
                    raise SealError(f"{url}: {type(exc).__name__}: {exc} (after {attempt} attempts)") from None
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            if response.status_code in _RETRY_STATUS and not last:
                time.sleep(_retry_after(response) or self.backoff_s * 2 ** (attempt - 1))
                continue
            if response.status_code >= 400:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise SealError(f"{url} answered {response.status_code}: {_error_message(response)}{tries}")
            try:
                return response.json()
            except ValueError:
                raise SealError(f"{url} answered {response.status_code} with a body that is not JSON") from None

    def _choices(self, answer: dict[str, Any], n: int) -> list[str]:
        try:
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            texts = [c["message"]["content"] if self.use_chat else c["text"] for c in choices]
        except (KeyError, TypeError):
            raise SealError(f"{self._url}: the answer has no choices in the OpenAI format") from None
        if len(texts) != n:
            raise SealError(f"{self._url}: asked for {n} completions, got {len(texts)}")
        return [text or "" for text in texts]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    """The server's own message (OpenAI's {"error": {"message"}} or FastAPI's {"detail"}), one line."""
    try:
        data = response.json()
        message = data["error"]["message"] if "error" in data else data["detail"]
    except (ValueError, KeyError, TypeError):
        message = response.text or response.reason_phrase
    lines = str(message).strip().splitlines()
    return lines[0][:300] if lines else response.reason_phrase
