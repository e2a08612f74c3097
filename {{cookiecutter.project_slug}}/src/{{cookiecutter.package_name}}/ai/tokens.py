"""Token estimates made before (and while) a call, offline and in microseconds.

Used to reserve quota before a call and as the floor of what a call is charged:
a request is charged `max(estimate, reported)`, so one whose answer never says
how many tokens it used (a failure, a timeout, a stream the client left) is
still metered.

The rule is OpenAI's own rule of thumb, about 4 bytes of UTF-8 text per token
(4 characters of English; a CJK character is 3 bytes, so about 0.75 token,
where real tokenizers count 1 or more), rounded down, plus the chat format's
overhead from OpenAI's token-counting guide: 3 tokens per message and its role
(1), and 3 that prime the reply. It is meant as a floor close to the real count
for English text and below it for most other scripts and for code, so that
charging the larger of the two rarely charges more than the provider reports.

Why not a tokenizer: `tiktoken` downloads its vocabulary at run time (none of
that here), Hugging Face `tokenizers` needs one from the model hub, and each
model family tokenizes differently anyway (the module talks to any
OpenAI-compatible server: Llama, Qwen, Mistral...). A vocabulary-in-the-wheel
package would be exact for one family only, and would cost milliseconds of CPU
per long prompt on the path this module keeps lean (docs/ai.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

BYTES_PER_TOKEN = 4
PER_MESSAGE = 3 + 1  # the message's framing and its role
REPLY_PRIMING = 3


class HasContent(Protocol):
    @property
    def content(self) -> str: ...


def text_size(text: str) -> int:
    """Bytes of UTF-8 (without encoding an ASCII string)."""
    return len(text) if text.isascii() else len(text.encode())


def text_tokens(text: str) -> int:
    """About how many tokens `text` is (rounded down)."""
    return text_size(text) // BYTES_PER_TOKEN


def prompt_tokens(messages: Iterable[HasContent]) -> int:
    """About how many prompt tokens a chat request of these messages is."""
    return REPLY_PRIMING + sum(PER_MESSAGE + text_tokens(m.content) for m in messages)


def completion_tokens(text: str) -> int:
    """About how many tokens an answer is."""
    return text_tokens(text)


class Relayed:
    """The text of a stream relayed so far, counted as it goes.

    Each non-empty delta holds at least one token, so the estimate is at least the
    number of deltas.
    """

    def __init__(self) -> None:
        self.size = 0
        self.pieces = 0

    def add(self, text: str) -> int:
        """Count one delta; the estimate so far."""
        self.size += text_size(text)
        self.pieces += 1
        return max(self.pieces, self.size // BYTES_PER_TOKEN)


def message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """`prompt_tokens` of upstream messages as dicts, tool calls and results included."""
    total = REPLY_PRIMING
    for message in messages:
        total += PER_MESSAGE + text_tokens(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += text_tokens(function.get("name", "") + function.get("arguments", ""))
    return total
