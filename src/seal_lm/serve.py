"""`seal serve`: an OpenAI-compatible HTTP server for one base model plus any number of LoRA adapters.

Any OpenAI client (or `OpenAIGenerator`) can then use a SEAL-trained adapter: the request's
`model` field names the base model or an adapter. Adapters are added and removed at run time with
vLLM's `/v1/load_lora_adapter` and `/v1/unload_lora_adapter`.

Throughput comes from batching across requests: handlers only queue work, and one worker thread
(the only code that touches the model, which is not thread-safe) collects what arrives within
`batch_wait_ms` (up to `max_batch` prompts), groups it by sampling settings and runs one
`HFGenerator.generate` call per group, each prompt routed to its own adapter. Greedy results are
those of a direct `HFGenerator` call. A request with a `seed` runs in a call of its own, so its
samples do not depend on what else the server is doing.

Streaming (`stream: true`) sends server-sent events as the OpenAI API does. Not supported (answered
400): logprobs, echo, suffix, token-id prompts. `load_lora_adapter` is off unless an adapter root is
given, and then reads only directories under it.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from seal_lm.adapters import Adapter, load_adapter
from seal_lm.errors import SealError
from seal_lm.generation import HFGenerator, Prompt, SamplingParams, TextCallback, encode_prompt
from seal_lm.models import LoadedModel

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
CHAT_DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self) -> JSONResponse:
        return _error_response(self.status, self.message, self.code, self.kind)


def _error_response(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def _bad(message: str) -> ApiError:
    return ApiError(400, message, "bad_request")


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", "unavailable", "server_error")


# ---------------------------------------------------------------- the batching worker


@dataclass
class _Job:
    """Prompts of one request, all with the same settings and adapter."""

    prompts: list[Prompt]
    params: SamplingParams
    adapter: Adapter | None
    chat: bool
    alone: bool  # seeded, or an adapter check: never shares a generate call
    serial: int
    on_text: TextCallback | None = None  # streaming: (prompt, sample, text so far) after every decoding step
    future: Future = field(default_factory=Future)


@dataclass
class JobResult:
    completions: list[list[str]]  # n per prompt
    prompt_tokens: int
    completion_tokens: list[list[int]]  # as completions: re-tokenised, capped at max_new_tokens


@dataclass
class BatchStats:
    """What the worker did, so tests and benchmarks can see that requests were batched."""

    generate_calls: int = 0
    prompts: int = 0
    largest_call: int = 0  # prompts in the largest generate call


class Batcher:
    """One worker thread that owns the model: queued jobs are collected, grouped and generated."""

    def __init__(self, loaded: LoadedModel, max_batch: int = 32, batch_wait_ms: float = 5.0):
        if max_batch < 1:
            raise SealError(f"max_batch must be at least 1 (got {max_batch})")
        self.loaded = loaded
        self.max_batch = max_batch
        self.wait_s = batch_wait_ms / 1000
        self.stats = BatchStats()
        self._generators = {chat: HFGenerator(loaded, batch_size=max_batch, use_chat_template=chat)
                            for chat in (True, False)}
        self._context = getattr(loaded.model.config, "max_position_embeddings", None)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._serial = itertools.count()
        self._lock = threading.Lock()  # no job enters the queue after the stop signal
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="seal-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, prompts: Sequence[Prompt], params: SamplingParams, adapter: Adapter | None = None,
               chat: bool = False, alone: bool = False, on_text: TextCallback | None = None) -> Future:
        """Queue one request; the future gives a `JobResult` (or raises ApiError / the model's error).
        `on_text` is called from the worker thread as the completions grow."""
        job = _Job(list(prompts), params, adapter, chat, alone or params.seed is not None, next(self._serial), on_text)
        with self._lock:
            if self._closed:
                job.future.set_exception(_shutting_down())
            else:
                self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker after the call in progress; jobs still queued fail with 503."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._collect(first)
            # A job whose request went away (its future cancelled) is dropped; the rest can no longer be cancelled.
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            for group in _groups(jobs):
                try:
                    self._generate(group)
                except Exception as exc:  # a failed call fails its requests, never the worker
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
            if stop:
                break
        while True:  # fail whatever was queued behind the stop signal
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(_shutting_down())

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """Jobs that arrive within the wait after `first`, until `max_batch` prompts are in."""
        jobs, count = [first], len(first.prompts)
        deadline = time.monotonic() + self.wait_s
        while count < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += len(job.prompts)
        return jobs, False

    def _generate(self, group: list[_Job]) -> None:
        tokenizer = self.loaded.tokenizer
        ready: list[tuple[_Job, list[int]]] = []
        for job in group:
            try:
                lengths = [len(encode_prompt(self.loaded, p, job.chat)) for p in job.prompts]
            except Exception as exc:  # e.g. a chat template that refuses these roles
                job.future.set_exception(_bad(f"could not render the prompt: {_one_line(exc)}"))
                continue
            if self._context and max(lengths) + job.params.max_new_tokens > self._context:
                job.future.set_exception(_bad(
                    f"prompt ({max(lengths)} tokens) plus max_tokens ({job.params.max_new_tokens}) exceeds "
                    f"the model's context of {self._context} tokens"))
            else:
                ready.append((job, lengths))
        if not ready:
            return
        prompts = [p for job, _ in ready for p in job.prompts]
        adapters = [job.adapter for job, _ in ready for _ in job.prompts]
        owners = [(job, i) for job, _ in ready for i in range(len(job.prompts))]

        def on_text(prompt: int, sample: int, text: str) -> None:
            job, i = owners[prompt]
            if job.on_text is not None:
                job.on_text(i, sample, text)

        streaming = any(job.on_text is not None for job, _ in ready)
        outputs = self._generators[ready[0][0].chat].generate(prompts, ready[0][0].params, adapters,
                                                              on_text if streaming else None)
        self.stats.generate_calls += 1
        self.stats.prompts += len(prompts)
        self.stats.largest_call = max(self.stats.largest_call, len(prompts))
        start = 0
        for job, lengths in ready:
            mine = outputs[start : start + len(job.prompts)]
            start += len(job.prompts)
            counts = [[min(len(tokenizer(text, add_special_tokens=False)["input_ids"]), job.params.max_new_tokens)
                       for text in outs] for outs in mine]
            job.future.set_result(JobResult(mine, sum(lengths), counts))


def _signature(adapter: Adapter | None) -> tuple | None:
    """Adapters applied together must share rank, alpha and modules (see adapters.applied)."""
    return None if adapter is None else (adapter.rank, adapter.alpha, tuple(sorted(adapter.weights)))


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that can share one generate call: same rendering, settings and adapter shape; base-model
    jobs join an adapter group with the same settings."""
    groups: dict[tuple, list[_Job]] = {}
    for job in jobs:
        key = (job.chat, astuple(job.params), job.serial if job.alone else None, _signature(job.adapter))
        groups.setdefault(key, []).append(job)
    for key in [k for k in groups if k[3] is None]:
        partner = next((k for k in groups if k[:3] == key[:3] and k[3] is not None), None)
        if partner is not None:
            groups[partner].extend(groups.pop(key))
    return list(groups.values())


# ---------------------------------------------------------------- request bodies


class _Body(BaseModel):
    """Fields common to both endpoints; unknown OpenAI fields are accepted and ignored (pydantic's default)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    include_stop_str_in_output: bool = False  # vLLM's extension

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not s for s in stop):
            raise _bad("stop strings must not be empty")
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=max_tokens, n=self.n,
                              stop=stop, include_stop=self.include_stop_str_in_output, seed=self.seed)


class CompletionBody(_Body):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[Prompt]:
        if self.echo or self.logprobs is not None or self.suffix is not None:
            raise _bad("echo, logprobs and suffix are not supported by this server")
        texts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not texts:
            raise _bad("prompt must not be an empty list")
        return [Prompt(messages=(("user", text),), text=text) for text in texts]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(_Body):
    messages: list[Message]
    logprobs: bool = False

    def prompt(self) -> Prompt:
        if self.logprobs:
            raise _bad("logprobs are not supported by this server")
        if not self.messages:
            raise _bad("messages must not be empty")
        pairs = tuple((m.role, m.text()) for m in self.messages)
        return Prompt(messages=pairs, text="\n".join(content for _, content in pairs))


class LoadLoraBody(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoraBody(BaseModel):
    lora_name: str = Field(min_length=1)


# ---------------------------------------------------------------- the app


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _finish_reason(tokens: int, params: SamplingParams) -> str:
    """"length" when the (re-tokenised) completion used the whole budget, else "stop"."""
    return "length" if tokens >= params.max_new_tokens else "stop"


def _usage(result: JobResult) -> dict[str, int]:
    completion = sum(sum(counts) for counts in result.completion_tokens)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion,
            "total_tokens": result.prompt_tokens + completion}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _validation_message(exc: RequestValidationError) -> str:
    """The first problem in one line, e.g. "temperature: Input should be less than or equal to 2"."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    message = str(first.get("msg", "invalid value")).splitlines()[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON ({message})"
    loc = _where(first)
    # pydantic puts the union member (`str` of `str | list[str]`) in the location: list the forms instead
    tag = next((i for i, part in enumerate(loc) if _is_type_name(part)), None)
    if tag is not None:
        forms = dict.fromkeys(_where(e)[tag] for e in errors if _where(e)[:tag] == loc[:tag] and len(_where(e)) > tag)
        return f"{'.'.join(loc[:tag])}: must be one of these forms: {', '.join(forms)}"
    return f"{'.'.join(loc)}: {message}" if loc else message


def _where(error: dict[str, Any]) -> list[str]:
    return [str(part) for part in error.get("loc", ()) if part != "body"]


def _is_type_name(part: str) -> bool:
    return part in ("str", "int", "float", "bool") or not (part.isdigit() or part.isidentifier())


def create_app(loaded: LoadedModel, model_name: str, adapters: dict[str, str] | None = None,
               api_key: str | None = None, max_batch: int = 32, batch_wait_ms: float = 5.0,
               adapter_root: str | Path | None = None) -> FastAPI:
    """The server's FastAPI app; the worker thread starts now and stops with the app's lifespan.
    `adapters` maps names to PEFT adapter directories, loaded (and checked against the model) now.
    `adapter_root` set turns on loading adapters at run time, only from directories under it (as vLLM keeps
    runtime LoRA loading behind VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
    root = Path(adapter_root).resolve() if adapter_root is not None else None
    batcher = Batcher(loaded, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    created = int(time.time())
    registry: dict[str, tuple[Adapter, str]] = {}  # name -> (adapter, path); touched only on the event loop

    def check_fits(adapter: Adapter) -> Future:
        """A one-token generation through the worker, alone so that a misfit fails no other request
        (`applied` rejects adapters whose modules or shapes do not fit the model)."""
        return batcher.submit([Prompt(messages=(("user", "ok"),), text="ok")],
                              SamplingParams(temperature=0.0, max_new_tokens=1), adapter, alone=True)

    def read_adapter(name: str, path: str) -> Adapter:
        if name == model_name:
            raise _bad(f"adapter name '{name}' is the base model's name")
        try:
            return load_adapter(path)
        except SealError as exc:
            raise _bad(str(exc).splitlines()[0]) from None

    def fit_error(name: str, exc: Exception) -> ApiError:
        return _bad(f"adapter '{name}' does not fit model {model_name}: {_one_line(exc)}")

    try:
        for name, path in (adapters or {}).items():
            adapter = read_adapter(name, path)
            try:
                check_fits(adapter).result()
            except (ValueError, RuntimeError, KeyError) as exc:
                raise fit_error(name, exc) from None
            registry[name] = (adapter, path)
    except ApiError as exc:
        batcher.close()
        raise SealError(exc.message) from None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="seal-lm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                       "invalid_api_key")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, _validation_message(exc), "bad_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, str(exc.detail), str(exc.status_code))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, _one_line(exc), "internal_error", "server_error")

    def pick(name: str) -> Adapter | None:
        if name == model_name:
            return None
        if name in registry:
            return registry[name][0]
        raise ApiError(404, f"model '{name}' does not exist (served: {', '.join([model_name, *registry])})",
                       "model_not_found")

    async def run(prompts: list[Prompt], params: SamplingParams, adapter: Adapter | None, chat: bool) -> JobResult:
        return await asyncio.wrap_future(batcher.submit(prompts, params, adapter, chat))

    def head(kind: str, prefix: str, name: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        base = {"id": model_name, "object": "model", "created": created, "owned_by": "seal-lm",
                "root": model_name, "parent": None}
        lora = [{"id": name, "object": "model", "created": created, "owned_by": "seal-lm", "root": path,
                 "parent": model_name} for name, (_, path) in registry.items()]
        return {"object": "list", "data": [base, *lora]}

    def streamed(prompts: list[Prompt], params: SamplingParams, adapter: Adapter | None, chat: bool,
                 chunk: Callable[[int, str, str | None], dict[str, Any]]) -> StreamingResponse:
        """Server-sent events as OpenAI streams them: one chunk per piece of new text of a choice, a last one
        per choice with its finish reason, then [DONE]. Pieces arrive as the batch that holds the request
        decodes; the last chunk completes each choice to exactly the non-streamed text."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple] = asyncio.Queue()
        future = batcher.submit(prompts, params, adapter, chat,
                                on_text=lambda i, j, text: loop.call_soon_threadsafe(queue.put_nowait, (i, j, text)))
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, ()))

        async def events() -> AsyncIterator[str]:
            sent: dict[tuple[int, int], str] = {}
            try:
                while item := await queue.get():
                    i, j, text = item
                    old = sent.get((i, j), "")
                    if len(text) > len(old) and text.startswith(old):
                        sent[(i, j)] = text
                        yield _event(chunk(i * params.n + j, text[len(old):], None))
                try:
                    result = future.result()
                except Exception as exc:  # the request failed in the worker: the error as the last event
                    error = exc if isinstance(exc, ApiError) else ApiError(500, _one_line(exc), "internal_error",
                                                                          "server_error")
                    yield _event({"error": {"message": error.message, "type": error.kind, "param": None,
                                            "code": error.code}})
                    return
                for i, (outs, counts) in enumerate(zip(result.completions, result.completion_tokens)):
                    for j, (text, tokens) in enumerate(zip(outs, counts)):
                        old = sent.get((i, j), "")
                        rest = text[len(old):] if text.startswith(old) else ""
                        yield _event(chunk(i * params.n + j, rest, _finish_reason(tokens, params)))
                yield "data: [DONE]\n\n"
            finally:
                future.cancel()  # a client that went away frees its place in the queue

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionBody) -> dict[str, Any] | StreamingResponse:
        adapter = pick(body.model)
        params = body.sampling(COMPLETIONS_DEFAULT_MAX_TOKENS)
        if body.stream:
            top = head("text_completion", "cmpl", body.model)
            return streamed(body.prompts(), params, adapter, False, lambda index, text, finish: {
                **top, "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]})
        result = await run(body.prompts(), params, adapter, chat=False)
        choices = [{"index": i * params.n + j, "text": text, "logprobs": None,
                    "finish_reason": _finish_reason(tokens, params)}
                   for i, (outs, counts) in enumerate(zip(result.completions, result.completion_tokens))
                   for j, (text, tokens) in enumerate(zip(outs, counts))]
        return {**head("text_completion", "cmpl", body.model), "choices": choices, "usage": _usage(result)}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatBody) -> dict[str, Any] | StreamingResponse:
        adapter = pick(body.model)
        if not loaded.has_chat_template:
            raise _bad(f"model {model_name} has no chat template; use /v1/completions")
        params = body.sampling(CHAT_DEFAULT_MAX_TOKENS)
        if body.stream:
            top = head("chat.completion.chunk", "chatcmpl", body.model)
            return streamed([body.prompt()], params, adapter, True, lambda index, text, finish: {
                **top, "choices": [{"index": index, "delta": {"role": "assistant", "content": text}, "logprobs": None,
                                    "finish_reason": finish}]})
        result = await run([body.prompt()], params, adapter, chat=True)
        choices = [{"index": j, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": _finish_reason(tokens, params)}
                   for j, (text, tokens) in enumerate(zip(result.completions[0], result.completion_tokens[0]))]
        return {**head("chat.completion", "chatcmpl", body.model), "choices": choices, "usage": _usage(result)}

    @app.post("/v1/load_lora_adapter")
    async def load_lora(body: LoadLoraBody) -> PlainTextResponse:
        if root is None:
            raise ApiError(403, "loading adapters at run time is off: start seal serve with --adapter_root DIR",
                           "forbidden", "permission_error")
        if not Path(body.lora_path).resolve().is_relative_to(root):  # `..` and symbolic links resolved first
            raise ApiError(403, f"lora_path {body.lora_path} is outside the adapter root {root}", "forbidden",
                           "permission_error")
        if body.lora_name in registry:
            raise _bad(f"adapter '{body.lora_name}' is already loaded; unload it first")
        adapter = await asyncio.to_thread(read_adapter, body.lora_name, body.lora_path)
        try:
            await asyncio.wrap_future(check_fits(adapter))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise fit_error(body.lora_name, exc) from None
        if body.lora_name in registry:  # another request loaded the same name meanwhile
            raise _bad(f"adapter '{body.lora_name}' is already loaded; unload it first")
        registry[body.lora_name] = (adapter, body.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora(body: UnloadLoraBody) -> PlainTextResponse:
        if registry.pop(body.lora_name, None) is None:
            raise ApiError(404, f"adapter '{body.lora_name}' is not loaded", "model_not_found")
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    return app


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 60) -> Iterator[str]:
    """Serve `app` from a background thread (port 0: one the OS picks) and yield its base URL; the
    server stops on exit. For tests, benchmarks and notebooks that need a live endpoint in-process."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here, so the URL is known before the server starts and no race is possible
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="seal-serve-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SealError(f"the server on {host}:{sock.getsockname()[1]} did not start")
            time.sleep(0.01)
        bound = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()


def serve(loaded: LoadedModel, model_name: str, host: str = "127.0.0.1", port: int = 8000,
          adapters: dict[str, str] | None = None, api_key: str | None = None, max_batch: int = 32,
          batch_wait_ms: float = 5.0, adapter_root: str | None = None) -> None:
    """Run the server in the foreground until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(loaded, model_name, adapters=adapters, api_key=api_key, max_batch=max_batch,
                     batch_wait_ms=batch_wait_ms, adapter_root=adapter_root)
    uvicorn.run(app, host=host, port=port, log_level="info")
