"""A client for an OpenAI-compatible ``/chat/completions`` server, standard library only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .. import prompts
from ..config import TokenBudgets
from ..protocols import Dialogue
from .base import ChatRefiner, RefinerUnavailable


class OpenAIChatRefiner(ChatRefiner):
    """Client for an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, llama.cpp
    server, hosted APIs), using only the standard library."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        translates: bool = True,
        budgets: TokenBudgets | None = None,
    ) -> None:
        super().__init__(budgets)
        self.translates = translates
        if not base_url.startswith(("http://", "https://")):
            # urllib would also open file:// and other schemes; only HTTP(S) makes sense here.
            raise ValueError(f"LLM base URL must be http(s)://, got {base_url!r}")
        self.name = f"openai:{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            # The scheme is checked to be http(s) in __init__.
            request = urllib.request.Request(  # noqa: S310
                self.url, data=data, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    payload = json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = err.read(300).decode("utf-8", "replace")
                if err.code != 429 and err.code < 500:
                    # Client errors (bad key, unknown model) will not improve by retrying.
                    raise RefinerUnavailable(
                        f"LLM server {self.url} answered HTTP {err.code}: {detail}"
                    ) from err
                last = err
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = err
            except ValueError as err:  # JSON decoding
                raise RefinerUnavailable(f"LLM server {self.url} sent invalid JSON") from err
            else:
                if not isinstance(payload, dict):
                    raise RefinerUnavailable(f"LLM server {self.url} sent a non-object answer")
                return payload
        raise RefinerUnavailable(
            f"LLM server {self.url} unreachable after {self.retries + 1} attempts: {last}"
        ) from last

    def _chat(self, messages: list[prompts.Message], max_tokens: int) -> str:
        payload = self._request(
            {
                "model": self.model,
                "messages": messages,
                "temperature": 0,
                "seed": 0,
                "max_tokens": max_tokens,
                "stream": False,
            }
        )
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise RefinerUnavailable(f"LLM server {self.url} sent no choices") from err
        # Servers cannot be prefilled portably: the parser finds the labels itself.
        return content if isinstance(content, str) else ""

    def _refine_raw(self, dialogue: Dialogue, k: int) -> str:
        messages = prompts.refine_messages(dialogue, k, english=self.translates)
        return self._chat(messages, self.budgets.refine(k))

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        return self._chat(prompts.ask_messages(dialogue, candidates), self.budgets.question)
