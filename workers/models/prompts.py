"""Every LLM prompt of the product, in one place.

The answers are requested in a labelled line format (``DESCRIPTION:``, ``PROMPT n:``,
``QUESTION:``) that small local models follow more reliably than JSON and that
``llm_output`` parses leniently. Local backends prefill the first label (``*_PREFILL``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .protocols import Dialogue

Message = dict[str, str]

REFINE_SYSTEM = (
    "You help a shopper find a product photo in an online shop. You read the conversation in "
    "which the shopper describes the product and you describe what its photo looks like. Use only "
    "facts stated in the conversation; never invent brands, prices or sizes. The latest message "
    "wins: when the shopper corrects or negates something, drop what was replaced."
)

REFINE_USER = """Conversation:
{conversation}

Task: write one DESCRIPTION of the product photo the shopper wants (one short sentence, at \
most 20 words, only the shopper's own visual details, no praise).{english} Then write {k} \
short, different image-generation prompts for that product (at most 25 words each), e.g. \
varying the view or the background.

Answer exactly in this format and write nothing else:
DESCRIPTION: <one sentence>
{prompt_lines}"""

REFINE_PREFILL = "DESCRIPTION:"

ASK_SYSTEM = (
    "You help a shopper find a product in an online shop by asking short clarifying questions "
    "about how the product looks."
)

ASK_USER = """Conversation so far:
{conversation}

The best matching products right now:
{candidates}

Task: ask the shopper ONE short question (at most 20 words) about a visual detail that tells \
these products apart and that the conversation has not settled yet.

Answer exactly in this format and write nothing else:
QUESTION: <one question ending with a question mark>"""

ASK_PREFILL = "QUESTION:"

# Candidate captions are truncated so that many candidates fit a small model's context.
CANDIDATE_MAX_CHARS = 160
MAX_CANDIDATES = 8


def format_conversation(dialogue: Dialogue) -> str:
    lines = [f"Shopper: {dialogue.caption.strip()}"]
    lines += [
        f"Round {i}: {r.strip()}" for i, r in enumerate(dialogue.rounds, start=1) if r.strip()
    ]
    return "\n".join(lines)


# Worked examples of the general patterns (a replacing correction, a changed attribute, a
# negation, an addition), as earlier chat turns. Their products are deliberately unlike shop
# items; a model that copies one is caught by the grounding check (its words have no support in
# the real dialogue) and the grounded fallback is used instead.
FEW_SHOT: tuple[tuple[tuple[str, ...], str], ...] = (
    (("a lamp", "actually I'd rather have a clock", "a round one"), "A round clock."),
    (("a red car", "make it green"), "A green car."),
    (("a bird", "not a parrot, it swims and cannot fly"), "A bird that swims and cannot fly."),
)
_PROMPT_VIEWS = ("on a plain background", "close-up photo", "side view", "in soft light")


def _example_answer(description: str, k: int) -> str:
    subject = description.rstrip(".")
    subject = subject[:1].lower() + subject[1:]
    lines = [f"DESCRIPTION: {description}"]
    lines += [
        f"PROMPT {i}: {subject}, {_PROMPT_VIEWS[(i - 1) % len(_PROMPT_VIEWS)]}"
        for i in range(1, k + 1)
    ]
    return "\n".join(lines)


def refine_messages(dialogue: Dialogue, k: int, *, english: bool = False) -> list[Message]:
    prompt_lines = "\n".join(f"PROMPT {i}: <short image prompt>" for i in range(1, k + 1))
    note = " Write it in English, whatever language the shopper used." if english else ""
    # The worked examples are earlier chat turns (asked and answered), the form a chat model
    # imitates best: on the development dialogues SmolLM2 then kept to the shopper's words far
    # more often (grounded fallback 0.53 of turns) than with the examples inside the system
    # message (0.90), and only then did its descriptions move targets up (README, conversation
    # quality).
    messages: list[Message] = [{"role": "system", "content": REFINE_SYSTEM}]
    for turns, description in FEW_SHOT:
        example = Dialogue(turns[0], list(turns[1:]))
        user = REFINE_USER.format(
            conversation=format_conversation(example), k=k, prompt_lines=prompt_lines, english=note
        )
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _example_answer(description, k)},
        ]
    user = REFINE_USER.format(
        conversation=format_conversation(dialogue), k=k, prompt_lines=prompt_lines, english=note
    )
    return [*messages, {"role": "user", "content": user}]


def ask_messages(dialogue: Dialogue, candidates: Sequence[str]) -> list[Message]:
    shown = [c.strip()[:CANDIDATE_MAX_CHARS] for c in candidates[:MAX_CANDIDATES] if c.strip()]
    listing = "\n".join(f"{i}. {c}" for i, c in enumerate(shown, start=1)) or "(none yet)"
    user = ASK_USER.format(conversation=format_conversation(dialogue), candidates=listing)
    return [{"role": "system", "content": ASK_SYSTEM}, {"role": "user", "content": user}]


def plain_chat_prompt(messages: Sequence[Message]) -> str:
    """Transcript for models without a chat template (rare for instruct models, but GGUFs may
    lack one)."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant: "
