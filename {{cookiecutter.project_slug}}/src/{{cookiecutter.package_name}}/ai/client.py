"""The shared OpenAI client and the two ways chat completions reach the upstream.

`AsyncOpenAI` is created once, at the first call that needs it (see `LazyBackend` in
`dependencies.py`: the SDK is imported then, not at the app's start), on the SDK's aiohttp
transport, with the key, base URL and timeout from settings and no retries of its own;
any code may use it through `AIDep` for other endpoints (embeddings, images...).
Nothing but `LazyBackend` imports this file at run time.

Chat completions, the hot path, go through a `ChatBackend`:

* `SDKBackend` calls `client.chat.completions.create(...)`.
* `LeanBackend` (the default, `AI_TRANSPORT=fast`) posts the same JSON with the
  same headers over one shared `aiohttp` session and parses the answer into the
  SDK's own `ChatCompletion` / `ChatCompletionChunk` types. Failures become the
  SDK's exception classes (built by the client itself). It does the
  same work with a fraction of the CPU per call, which is what limits a server
  waiting on many slow upstream calls at once (see docs/ai.md for figures).

Neither retries a request that may have reached the provider (the SDK's own
retries of timeouts, dropped connections, 429 and 5xx could bill one answer up
to three times): only a connection that could not be opened is tried again, up
to AI_MAX_RETRIES times, with the SDK's pauses (`_calculate_retry_timeout`).

The tests run every chat test against both backends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol, cast

import aiohttp
import httpx2
import openai
import pydantic
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from .config import AISettings
from .exceptions import never_sent

Body = dict[str, Any]


class ChatStream(Protocol):
    """An open streamed completion: iterate its chunks, then close it."""

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]: ...

    async def aclose(self) -> None: ...


class ChatBackend(Protocol):
    client: AsyncOpenAI

    async def complete(self, body: Body) -> ChatCompletion: ...

    async def open_stream(self, body: Body) -> ChatStream:
        """Send the request and wait for the answer's headers (errors raise here)."""
        ...

    async def aclose(self) -> None: ...


def make_client(settings: AISettings) -> AsyncOpenAI:
    """The shared client. It never retries on its own: the SDK retries timeouts,
    dropped connections, 429 and 5xx, all of which the provider may already be
    running (and billing). Chat retries only what never reached it (below)."""
    assert settings.openai_api_key is not None
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=0,
        http_client=DefaultAioHttpClient(timeout=settings.timeout),
    )


# --- through the SDK -------------------------------------------------------------


class _SDKStream:
    def __init__(self, stream: openai.AsyncStream[ChatCompletionChunk]) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        await self._stream.close()


def retry_options(settings: AISettings, path: str) -> FinalRequestOptions:
    """Request options whose `max_retries` times the pauses between retries."""
    return FinalRequestOptions.construct(method="post", url=path, max_retries=settings.max_retries)


class SDKBackend:
    def __init__(self, client: AsyncOpenAI, settings: AISettings) -> None:
        self.client = client
        self.max_retries = settings.max_retries
        self.options = retry_options(settings, "/chat/completions")

    async def _create(self, body: Body) -> Any:
        """`create()`, retried only when the request never reached the provider."""
        for retries_taken in range(self.max_retries + 1):
            headers = {"x-stainless-retry-count": str(retries_taken)} if retries_taken else None
            try:
                return await self.client.chat.completions.create(**body, extra_headers=headers)
            except openai.APIConnectionError as exc:
                remaining = self.max_retries - retries_taken
                if remaining <= 0 or not never_sent(exc):
                    raise
                delay = self.client._calculate_retry_timeout(remaining, self.options, None)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete(self, body: Body) -> ChatCompletion:
        completion: ChatCompletion = await self._create(body)
        return completion

    async def open_stream(self, body: Body) -> ChatStream:
        stream: openai.AsyncStream[ChatCompletionChunk] = await self._create(
            {**body, "stream": True}
        )
        return _SDKStream(stream)

    async def aclose(self) -> None:
        await self.client.close()


# --- the lean path -----------------------------------------------------------------


class _LeanStream:
    """Server-sent events of a chat completion, decoded like the SDK's `AsyncStream`."""

    def __init__(self, backend: LeanBackend, response: aiohttp.ClientResponse) -> None:
        self._backend = backend
        self._response = response

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        data: list[str] = []
        try:
            async for raw in self._response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                    continue
                if line or not data:
                    continue  # other fields (event:, id:, comments) carry nothing we use
                payload = "\n".join(data)
                data = []
                if payload.startswith("[DONE]"):
                    break
                yield self._backend.parse_chunk(payload)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._backend.transport_error(exc) from exc

    async def aclose(self) -> None:
        # Closing (not releasing) drops the connection: an unfinished upstream stream stops.
        self._response.close()


class LeanBackend:
    """Chat completions over one shared aiohttp session, with the SDK's types and rules."""

    path = "chat/completions"

    def __init__(self, client: AsyncOpenAI, settings: AISettings) -> None:
        self.client = client
        self.url = f"{client.base_url}{self.path}"  # the SDK keeps a trailing slash
        headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
        headers.update(client.auth_headers)
        headers["x-stainless-read-timeout"] = str(settings.timeout)
        self.headers = headers
        self.options = retry_options(settings, f"/{self.path}")
        self.max_retries = settings.max_retries
        self.session = aiohttp.ClientSession(
            # No cap on connections: the upstream's own limits answer 429, which maps cleanly.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.timeout, sock_read=settings.timeout
            ),
            raise_for_status=False,
        )
        self._request = httpx2.Request("POST", self.url)

    # The SDK's error classes need an httpx2 request/response; only failures build them.
    def transport_error(self, exc: BaseException) -> openai.APIConnectionError:
        if isinstance(exc, TimeoutError):
            return openai.APITimeoutError(request=self._request)
        return openai.APIConnectionError(request=self._request)

    def _as_httpx(self, response: aiohttp.ClientResponse, content: bytes) -> httpx2.Response:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
        return httpx2.Response(
            response.status, headers=headers, content=content, request=self._request
        )

    @staticmethod
    def parse_completion(content: bytes) -> ChatCompletion:
        """Validate in pydantic-core (fast); if a lenient server's answer does not
        validate, build it loosely the way the SDK itself does."""
        try:
            return ChatCompletion.model_validate_json(content)
        except pydantic.ValidationError:
            return ChatCompletion.construct(**cast(Body, json.loads(content)))

    @staticmethod
    def parse_chunk(payload: str) -> ChatCompletionChunk:
        try:
            return ChatCompletionChunk.model_validate_json(payload)
        except pydantic.ValidationError:
            data = json.loads(payload)
        if isinstance(data, dict) and data.get("error"):  # an error event, as the SDK reads it
            error = data["error"]
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str) or not message:
                message = "An error occurred during streaming"
            raise openai.APIError(
                message=message,
                request=httpx2.Request("POST", "/chat/completions"),
                body=error,
            )
        return ChatCompletionChunk.construct(**cast(Body, data))

    async def _send(self, body: Body, *, stream: bool) -> tuple[aiohttp.ClientResponse, bytes]:
        """POST; the open response, and its body unless streaming.

        Retried (with the SDK's pauses) only when the connection could not be
        opened: a request that may have reached the provider is never sent twice.
        """
        payload = json.dumps(body, separators=(",", ":")).encode()
        for retries_taken in range(self.max_retries + 1):
            remaining = self.max_retries - retries_taken
            headers = {**self.headers, "x-stainless-retry-count": str(retries_taken)}
            try:
                response = await self.session.post(self.url, data=payload, headers=headers)
                if response.status < 400:
                    if stream:
                        return response, b""
                    async with response:
                        return response, await response.read()
                async with response:
                    content = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                if remaining > 0 and never_sent(exc):
                    await self._sleep(remaining, None)
                    continue
                raise self.transport_error(exc) from exc
            failed = self._as_httpx(response, content)
            raise self.client._make_status_error_from_response(failed) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sleep(self, remaining: int, headers: httpx2.Headers | None) -> None:
        await asyncio.sleep(self.client._calculate_retry_timeout(remaining, self.options, headers))

    async def complete(self, body: Body) -> ChatCompletion:
        _, content = await self._send(body, stream=False)
        try:
            return self.parse_completion(content)
        except (ValueError, TypeError) as exc:
            raise openai.APIResponseValidationError(
                response=httpx2.Response(200, content=content, request=self._request),
                body=content.decode(errors="replace"),
            ) from exc

    async def open_stream(self, body: Body) -> ChatStream:
        response, _ = await self._send({**body, "stream": True}, stream=True)
        return _LeanStream(self, response)

    async def aclose(self) -> None:
        await self.session.close()
        await self.client.close()


def build_backend(settings: AISettings) -> ChatBackend:
    """The backend AI_TRANSPORT names, on a new shared client (the caller closes it).

    Called from a running event loop: the lean backend opens its aiohttp session here.
    """
    client = make_client(settings)
    if settings.transport == "fast":
        return LeanBackend(client, settings)
    return SDKBackend(client, settings)
