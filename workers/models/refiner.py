"""Dialogue refiners: a local transformers chat model or an OpenAI-compatible HTTP server.

Both ask the same prompts (``prompts``) and share the lenient parser (``llm_output``). Decoding is
greedy so a dialogue always gets the same refinement. A remote server that cannot be reached
raises ``RefinerUnavailable``; ``refine_or_fallback``/``ask_or_none`` turn that into the ChatIR
baseline (the plain dialogue text) so a turn never fails because of the LLM.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dar_site.env import env_int

from . import prompts
from .device import pick_dtype
from .llm_output import fallback_refinement, parse_question, parse_refinement
from .protocols import Dialogue, Refinement, Refiner

log = logging.getLogger(__name__)

# Token budgets: ~40 words of description, ~25 words per prompt, ~20 words of question. Decoding
# time is linear in them, so a slow CPU deployment may want them smaller.
DESCRIPTION_TOKENS = env_int("DAR_LLM_DESCRIPTION_TOKENS", 80, min=4, max=1024)
PROMPT_TOKENS = env_int("DAR_LLM_PROMPT_TOKENS", 48, min=4, max=1024)
ASK_MAX_TOKENS = env_int("DAR_LLM_QUESTION_TOKENS", 48, min=4, max=1024)


@functools.cache
def _cache_argument() -> str:
    # transformers 5 renamed generate()'s past_key_values to cache (the old name warns).
    from importlib.metadata import version

    return "cache" if int(version("transformers").split(".")[0]) >= 5 else "past_key_values"


class RefinerUnavailable(RuntimeError):
    """The LLM backend cannot answer (server down, timeout, HTTP error, malformed envelope)."""


def refine_budget(k: int) -> int:
    """Tokens for a whole single-pass refine answer (labels and newlines included)."""
    return DESCRIPTION_TOKENS + (PROMPT_TOKENS + 4) * max(k, 0)


class _ChatRefiner:
    """Shared refine/ask logic; subclasses implement ``_refine_raw`` and ``_ask_raw``."""

    name: str

    def _refine_raw(self, dialogue: Dialogue, k: int) -> str:
        raise NotImplementedError

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        raise NotImplementedError

    def refine(self, dialogue: Dialogue, k: int) -> Refinement:
        result = parse_refinement(self._refine_raw(dialogue, k), k, dialogue)
        if result.fallback:
            log.info("refiner %s gave an unusable answer, using the dialogue text", self.name)
        return result

    def ask(self, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
        return parse_question(self._ask_raw(dialogue, candidates))


def _end_of_line(newline_ids: Any) -> Any:
    """Stopping criterion: the last token contains a line break (one field per call)."""
    import torch
    from transformers import StoppingCriteria

    class EndOfLine(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.isin(input_ids[:, -1], newline_ids)

    return EndOfLine()


class HFChatRefiner(_ChatRefiner):
    """A transformers causal LM used through its chat template.

    ``source`` is a hub id, a local model directory, or a ``.gguf`` file (de-quantised by
    transformers on load; the offline profile uses SmolLM2-135M-Instruct this way).

    Answers are decoded field by field: each label (``DESCRIPTION:``, ``PROMPT 1:``...) is written
    into the assistant turn and the model completes that one line. A model that follows the format
    gives (greedily) essentially the answer it would give in one pass; small models that stop
    early or wander off are kept on the requested structure.
    """

    def __init__(self, source: str, *, name: str | None = None, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or source
        self.device = device
        path = Path(source).expanduser()
        kwargs: dict[str, Any] = {}
        model_source = source
        if path.suffix == ".gguf":
            model_source, kwargs["gguf_file"] = str(path.parent), path.name
        self._tokenizer = AutoTokenizer.from_pretrained(model_source, **kwargs)
        # from_pretrained's decorated signature confuses type checkers; it takes an id or path.
        load: Any = AutoModelForCausalLM.from_pretrained
        model = load(model_source, dtype=pick_dtype(device), **kwargs)
        self._model = model.to(device).eval()
        self._newline_ids = self._tokens_with_newline()
        self._newline_set = set(self._newline_ids.tolist())
        # generate() is not safe to run concurrently on one model (shared cache objects).
        self._lock = threading.Lock()

    def _tokens_with_newline(self) -> Any:
        """Ids of every token whose text contains a line break (one scan of the vocabulary).

        Checking the last token against this set is far cheaper than transformers'
        ``stop_strings``, which re-indexes the whole vocabulary on every ``generate`` call.
        """
        import torch

        tokens = self._tokenizer.convert_ids_to_tokens(list(range(len(self._tokenizer))))
        ids = [
            i
            for i, token in enumerate(tokens)
            if token is not None and "\n" in self._tokenizer.convert_tokens_to_string([token])
        ]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _chat_prefix(self, messages: list[prompts.Message]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            text = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return str(text)
        return prompts.plain_chat_prompt(messages)

    def _generation_config(self, max_tokens: int) -> Any:
        from transformers import GenerationConfig

        # A fresh config: the model's own generation_config.json may enable sampling.
        base = self._model.generation_config
        pad = base.pad_token_id if base.pad_token_id is not None else base.eos_token_id
        if isinstance(pad, list):  # several end tokens (Qwen): any one pads
            pad = pad[0]
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=False,
            repetition_penalty=1.1,  # greedy small models otherwise loop on one phrase
            eos_token_id=base.eos_token_id,
            pad_token_id=pad,
            bos_token_id=base.bos_token_id,
        )
        if self.device.startswith("cuda"):
            # A fixed-shape KV cache avoids re-allocation per token on GPUs.
            config.cache_implementation = "static"
        return config

    def _fill(self, messages: list[prompts.Message], fields: list[tuple[str, int]]) -> str:
        """Write each label into the assistant turn and let the model complete that line.

        Works on token ids so the KV cache of everything before a label is reused for the next
        field (on CPU the repeated prompt prefill would otherwise dominate). On CUDA each field
        gets a fresh static cache instead: prefill is cheap there and the static cache is not.
        """
        import torch
        from transformers import DynamicCache, StoppingCriteriaList

        tokenizer, device = self._tokenizer, self.device
        cuda = device.startswith("cuda")

        def encode(text: str) -> Any:
            # The chat template already contains the BOS token where the model wants one.
            batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            return batch["input_ids"].to(device)

        ids = encode(self._chat_prefix(messages))
        cache = None if cuda else DynamicCache(config=self._model.config)
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        answer, separator = "", ""
        for label, max_tokens in fields:
            # No space after the label: models tokenise " word" as one piece and, given a bare
            # trailing space, tend to end the line at once.
            ids = torch.cat([ids, encode(separator + label)], dim=1)
            with self._lock, torch.inference_mode():
                out = self._model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    **{_cache_argument(): cache},
                    generation_config=self._generation_config(max_tokens),
                    stopping_criteria=StoppingCriteriaList([_end_of_line(self._newline_ids)]),
                )
            line = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            answer += f"{label} {str(line).strip().split(chr(10), 1)[0].strip()}\n"
            last = int(out[0, -1])
            if last in eos_ids:
                # The end-of-turn token was never fed forward (not in the cache): drop it and
                # continue the same assistant turn on a new line.
                ids, separator = out[:, :-1], "\n"
            else:
                ids = out
                separator = "" if last in self._newline_set else "\n"
        return answer

    def _refine_raw(self, dialogue: Dialogue, k: int) -> str:
        fields = [(prompts.REFINE_PREFILL, DESCRIPTION_TOKENS)]
        fields += [(f"PROMPT {i}:", PROMPT_TOKENS) for i in range(1, k + 1)]
        return self._fill(prompts.refine_messages(dialogue, k), fields)

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        messages = prompts.ask_messages(dialogue, candidates)
        return self._fill(messages, [(prompts.ASK_PREFILL, ASK_MAX_TOKENS)])


class OpenAIChatRefiner(_ChatRefiner):
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
    ) -> None:
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
        return self._chat(prompts.refine_messages(dialogue, k), refine_budget(k))

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        return self._chat(prompts.ask_messages(dialogue, candidates), ASK_MAX_TOKENS)


def refine_or_fallback(refiner: Refiner, dialogue: Dialogue, k: int) -> Refinement:
    """``refiner.refine`` or, when the backend is down, the plain dialogue text."""
    try:
        return refiner.refine(dialogue, k)
    except RefinerUnavailable as err:
        log.warning("refiner unavailable, using the dialogue text: %s", err)
        return fallback_refinement(dialogue, k)


def ask_or_none(refiner: Refiner, dialogue: Dialogue, candidates: Sequence[str]) -> str | None:
    """``refiner.ask`` or None (no question this turn) when the backend is down."""
    try:
        return refiner.ask(dialogue, candidates)
    except RefinerUnavailable as err:
        log.warning("refiner unavailable, asking no question: %s", err)
        return None
