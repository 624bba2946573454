"""Lenient parsing and cleaning of LLM answers.

LLMs (small local ones especially) wrap answers in chat preambles, markdown, quotes and numbering,
skip or repeat fields, or produce garbage. Whatever comes back, the turn must go on: anything
unusable becomes a fallback to the plain dialogue text (``Refinement.fallback``).
"""

from __future__ import annotations

import re

from .protocols import Dialogue, Refinement

# About what fits CLIP's 77-token context; longer descriptions would be truncated by the encoder.
DESCRIPTION_MAX_CHARS = 300
PROMPT_MAX_CHARS = 200
QUESTION_MAX_CHARS = 160

_LABEL = re.compile(
    r"^(?P<label>description|prompts|prompt\s*#?\s*(?P<num>\d+)|question)\s*(?:\*\*|__)?\s*"
    r"(?:[:：=]|[-–—](?=\s))\s*(?P<rest>.*)$",  # noqa: RUF001 (full-width colon, dashes)
    re.IGNORECASE,
)
_LINE_DECOR = re.compile(r"^(?:[#>*_`\s]|[-•·]\s|\(?\d{1,2}[.)]\s)+")
# Labels glued onto one line ("DESCRIPTION: ... PROMPT 1: ...") are split onto their own lines.
# Only the upper-case spelling we ask for counts mid-line: "here is a description: ..." is prose.
_INLINE_LABEL = re.compile(
    r"(?<=\S)\s+(?=(?:\*\*|__)?(?:PROMPT\s*#?\s*\d+|DESCRIPTION|QUESTION)(?:\*\*|__)?\s*"
    r"[:：])"  # noqa: RUF001 (full-width colon)
)
_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,2}[.):]|\[\d{1,2}\])\s+")
_PREAMBLE_WORDS = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|great|alright)\b[\s!.,:]*", re.IGNORECASE
)
_PREAMBLE_HERE = re.compile(
    r"^(?:here(?:'s|\u2019s| is| are)\b|below is\b|i (?:would|'d) (?:ask|say)\b)[^:\n]{0,80}:\s*",
    re.IGNORECASE,
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}  # noqa: RUF001
# Template slots echoed back ("<one sentence>", "[insert prompt]") or a wholly bracketed field.
_PLACEHOLDER = re.compile(
    r"[<\[{][^>\]}]*\b(?:sentence|prompt|description|question|insert|your)\b[^>\]}]*[>\]}]"
    r"|^\s*[<\[{].*[>\]}]\s*$",
    re.IGNORECASE,
)


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    # An opening quote whose closing one was cut off by the token limit.
    if text[:1] in _QUOTE_PAIRS and text.count(text[0]) == 1:
        text = text[1:].strip()
    return text


def cap_text(text: str, max_chars: int) -> str:
    """Cut at a word boundary so the model never sees half a word."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—")  # noqa: RUF001 (dashes)


def clean_field(text: str, max_chars: int) -> str:
    """Strip preamble, markdown, bullets, numbering and quotes; collapse whitespace; cap length."""
    text = re.sub(r"\s+", " ", text).strip()
    for _ in range(3):  # layers come in any order: '- **"Sure! Here it is: ..."**'
        before = text
        text = _BULLET.sub("", text)
        text = text.replace("**", "").replace("__", "").strip()
        text = _PREAMBLE_WORDS.sub("", text)
        text = _PREAMBLE_HERE.sub("", text)
        text = _strip_quotes(text.strip())
        if text == before:
            break
    return cap_text(text, max_chars)


def looks_like_text(text: str, min_words: int = 2) -> bool:
    """Reject empty, placeholder or symbol-soup fields."""
    if not text or _PLACEHOLDER.search(text) or _LABEL.match(text):
        return False
    words = re.findall(r"[^\W\d_]{2,}", text)
    if len(words) < min_words:
        return False
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return letters >= 0.6 * len(visible)


def _labelled_fields(raw: str) -> tuple[list[str], dict[int, str], list[str], list[str]]:
    """Split an answer into description(s), numbered prompts, listed prompts and questions.

    A field's value is the text after its label on the same line, or the next non-empty line if
    the label stands alone; later unlabelled lines are ignored (they are usually chatter).
    """
    descriptions: list[str] = []
    numbered: dict[int, str] = {}
    listed: list[str] = []
    questions: list[str] = []
    pending: str | None = None  # label waiting for its value on the next line
    in_list = False
    for line in _INLINE_LABEL.sub("\n", raw).splitlines():
        stripped = _LINE_DECOR.sub("", line.strip()).replace("**", "").replace("__", "").strip()
        if not stripped:
            continue
        match = _LABEL.match(stripped)
        if match:
            label = match["label"].lower()
            key = f"prompt:{match['num']}" if match["num"] else label
            in_list = label == "prompts"
            rest = match["rest"].strip()
            if rest and not in_list:
                _store(key, rest, descriptions, numbered, questions)
            pending = None if rest or in_list else key
            continue
        if pending is not None:
            _store(pending, line, descriptions, numbered, questions)
            pending = None
        elif in_list and _BULLET.match(line):
            listed.append(line)
    return descriptions, numbered, listed, questions


def _store(
    key: str, value: str, descriptions: list[str], numbered: dict[int, str], questions: list[str]
) -> None:
    if key == "description":
        descriptions.append(value)
    elif key == "question":
        questions.append(value)
    elif key.startswith("prompt:"):
        numbered.setdefault(int(key.split(":")[1]), value)  # first answer per number wins


def fallback_refinement(dialogue: Dialogue | str, k: int) -> Refinement:
    """The ChatIR baseline: the dialogue text itself is the query and every prompt."""
    text = dialogue.as_text() if isinstance(dialogue, Dialogue) else dialogue
    return Refinement(
        description=text, prompts=[cap_text(text, PROMPT_MAX_CHARS)] * k, fallback=True
    )


def parse_refinement(raw: str, k: int, dialogue: Dialogue | str) -> Refinement:
    """A ``Refinement`` from the answer; the dialogue-text fallback when the description is
    unusable, and the description itself standing in for missing or unusable prompts."""
    descriptions, numbered, listed, _ = _labelled_fields(raw or "")
    description = clean_field(descriptions[0], DESCRIPTION_MAX_CHARS) if descriptions else ""
    # One word is a valid description ("A face."): a product is often just its name.
    if not looks_like_text(description, min_words=1):
        return fallback_refinement(dialogue, k)
    candidates = [numbered[n] for n in sorted(numbered)] if numbered else listed
    prompts = [clean_field(p, PROMPT_MAX_CHARS) for p in candidates]
    prompts = [p for p in prompts if looks_like_text(p, min_words=1)]
    # Small LLMs often write a good description but echo the prompt placeholders. The description
    # is still the better query, so keep it and paint it where prompts are missing.
    prompts += [cap_text(description, PROMPT_MAX_CHARS)] * (k - len(prompts))
    return Refinement(description=description, prompts=prompts[:k], fallback=False)


def parse_question(raw: str) -> str | None:
    """The clarifying question from the answer, or None when there is no usable question."""
    _, _, _, questions = _labelled_fields(raw or "")
    text = questions[0] if questions else ""
    if not text:
        # No label: accept a bare first line that is itself a question.
        first = next((ln for ln in (raw or "").splitlines() if ln.strip()), "")
        text = first if "?" in first else ""
    if "?" in text:
        text = text[: text.index("?") + 1]  # drop anything after the question itself
    text = clean_field(text, QUESTION_MAX_CHARS)
    if not looks_like_text(text):
        return None
    return text if text.endswith("?") else text.rstrip(" .!") + "?"
