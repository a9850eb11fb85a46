"""The conversations `/chat` continues, kept server-side and bounded: at most `max_conversations` of them, none
unused for longer than `ttl_s`, and at most `max_bytes` of decoded images and text in all; the least recently used
go first. Used from the event loop only, so it needs no lock."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from .prompts import Conversation


def conversation_bytes(conversation: Conversation) -> int:
    """What a conversation holds in memory, roughly: its decoded images' bytes plus its text."""
    images = sum(len(image.getbands()) * image.width * image.height for image in conversation.images)
    text = sum(len(str(message["content"])) for message in conversation.messages)
    return images + text


class ConversationStore:
    """An LRU store with a time-to-live and a byte budget (see the module docstring)."""

    def __init__(
        self, max_conversations: int, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_conversations = max_conversations
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Conversation, float, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation (marked as just used), or None when unknown or expired."""
        self._expire()
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        conversation, _, size = entry
        self._entries[conversation_id] = (conversation, self.clock(), size)
        self._entries.move_to_end(conversation_id)
        return conversation

    def put(self, conversation: Conversation, conversation_id: str | None = None) -> str:
        """Stores `conversation` under `conversation_id` (a new id when None) and returns the id. One too large for
        the whole budget is not kept."""
        conversation_id = conversation_id or secrets.token_urlsafe(16)
        self._remove(conversation_id)
        size = conversation_bytes(conversation)
        if size <= self.max_bytes:
            self._entries[conversation_id] = (conversation, self.clock(), size)
            self._bytes += size
        while len(self._entries) > self.max_conversations or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return conversation_id

    def _remove(self, conversation_id: str) -> None:
        entry = self._entries.pop(conversation_id, None)
        if entry is not None:
            self._bytes -= entry[2]

    def _expire(self) -> None:
        """Drops the conversations unused for longer than the time-to-live (the oldest come first)."""
        deadline = self.clock() - self.ttl_s
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest][1] > deadline:
                break
            self._remove(oldest)
