"""The local refiner: a transformers chat model, its dialogues decoded together in batches."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import prompts
from ..config import TokenBudgets, model_settings
from ..decoding import GreedyDecoder
from ..device import pick_dtype
from ..protocols import Dialogue
from .base import ChatRefiner


@functools.cache
def _cache_argument() -> str:
    # transformers 5 renamed generate()'s past_key_values to cache (the old name warns).
    from importlib.metadata import version

    return "cache" if int(version("transformers").split(".")[0]) >= 5 else "past_key_values"


def _end_of_line(newline_ids: Any) -> Any:
    """Stopping criterion: the last token contains a line break (one field per call).

    Like every transformers stopping criterion it answers per row, so in a batch each dialogue
    stops at the end of its own line while the others go on.
    """
    import torch
    from transformers import StoppingCriteria

    class EndOfLine(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.isin(input_ids[:, -1], newline_ids)

    return EndOfLine()


def _row_budgets(start: int, budgets: Any) -> Any:
    """Stopping criterion: row ``i`` stops after ``budgets[i]`` new tokens (fields of a batch
    have their own token budgets; ``max_new_tokens`` is their maximum)."""
    from transformers import StoppingCriteria

    class RowBudgets(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return budgets <= input_ids.shape[1] - start

    return RowBudgets()


# Greedy small models otherwise loop on one phrase.
REPETITION_PENALTY = 1.1


def decoding_config(base: Any, max_tokens: int) -> Any:
    """The ``GenerationConfig`` of one field: greedy, with the model's special tokens.

    transformers' automatic compilation stays off: the static-cache path (CUDA) decodes with
    ``GreedyDecoder``, which compiles its own fixed-shape step when ``DAR_LLM_COMPILE`` is on.
    """
    from transformers import GenerationConfig

    # A fresh config: the model's own generation_config.json may enable sampling.
    pad = base.pad_token_id if base.pad_token_id is not None else base.eos_token_id
    if isinstance(pad, list):  # several end tokens (Qwen): any one pads
        pad = pad[0]
    config = GenerationConfig(
        max_new_tokens=max_tokens,
        do_sample=False,
        repetition_penalty=REPETITION_PENALTY,
        eos_token_id=base.eos_token_id,
        pad_token_id=pad,
        bos_token_id=base.bos_token_id,
    )
    config.disable_compile = True
    return config


def bucket(n: int, smallest: int = 1) -> int:
    """``smallest`` times the smallest power of two that makes it at least ``n``."""
    size = max(1, smallest)
    while size < n:
        size *= 2
    return size


class _Job:
    """One dialogue to decode: its chat prefix (token ids) and its fields (label, budget)."""

    __slots__ = ("fields", "prefix")

    def __init__(self, prefix: list[int], fields: list[tuple[str, int]]) -> None:
        self.prefix = prefix
        self.fields = fields


class _Row:
    """Decoding state of one job inside a batch."""

    __slots__ = ("answer", "field", "fill", "job", "label", "separator", "tokens")

    def __init__(self, job: _Job, pad: int) -> None:
        self.job = job
        self.tokens = list(job.prefix)  # everything the model has read or written, for real
        # Padding of this row is one of its own tokens, so the repetition penalty (which looks at
        # every id in the row, masked or not) sees exactly the tokens it sees alone.
        self.fill = job.prefix[0] if job.prefix else pad
        self.field = 0
        self.answer = ""
        self.separator = ""
        self.label: list[int] = []

    @property
    def done(self) -> bool:
        return self.field >= len(self.job.fields)

    @property
    def budget(self) -> int:
        return self.job.fields[self.field][1]


class HFChatRefiner(ChatRefiner):
    """A transformers causal LM used through its chat template.

    ``source`` is a hub id, a local model directory, or a ``.gguf`` file (de-quantised by
    transformers on load; the offline profile uses SmolLM2-135M-Instruct this way).

    Answers are decoded field by field: each label (``DESCRIPTION:``, ``PROMPT 1:``...) is written
    into the assistant turn and the model completes that one line. A model that follows the format
    gives (greedily) essentially the answer it would give in one pass; small models that stop
    early or wander off are kept on the requested structure.
    With parallel fields (``fields``, ``DAR_LLM_FIELDS``; ``auto``: on CUDA) each field is decoded
    from the prompt alone, as its own row: a prompt line does not see the description, but the
    refine takes as long as its longest field instead of all of them in a row.

    Concurrent ``refine``/``ask`` calls (the worker's threads) are decoded together: a
    ``MicroBatcher`` merges up to ``max_batch`` dialogues, whose rows are left-padded into one
    batch; every ``generate`` call decodes one field for all rows, each row stopping at the end
    of its own line (or its own token budget), then the next field starts for the rows that have
    one. Greedy decoding with correct attention masks and position ids makes a dialogue's answer
    the one it gets alone (see ``_decode_reusing`` for the details that matter).

    Two ways to run the fields, chosen by ``static_cache`` (default: on CUDA):

    - dynamic cache (CPU): the KV cache of everything before a label is kept for the next field,
      as prefilling the whole prompt again per field would dominate on a CPU;
    - static cache (CUDA): each field prefills again and decodes with ``GreedyDecoder`` (a
      fixed-shape KV cache reused across calls, stop checks every few tokens instead of every
      token, and with ``compile`` one compiled decode step replayed as a CUDA graph: 48 tokens
      of a 1.5B model in 162 ms against 259 ms through ``generate`` on an H100, docs/gpu/).
      Shapes come from buckets (batch rows rounded up to a power of two, length
      ``cache_tokens`` times a power of two) so each bucket compiles once. Prefill is cheap on a
      GPU next to token-by-token decoding, and prefilling compact rows per field keeps the
      shapes to those few buckets (a cache kept across fields would carry the finished rows and
      the holes along, and grow out of its bucket).
    """

    def __init__(
        self,
        source: str,
        *,
        name: str | None = None,
        device: str = "cpu",
        max_batch: int = 1,
        window_s: float = 0.005,
        static_cache: bool | None = None,
        compile: bool | None = None,
        cache_tokens: int | None = None,
        fields: str | None = None,
        translates: bool = False,
        budgets: TokenBudgets | None = None,
    ) -> None:
        """``compile``, ``cache_tokens``, ``fields`` and ``budgets`` left out (None) come from
        this process's settings (``DAR_LLM_*``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..batching import MicroBatcher

        super().__init__(budgets)
        settings = model_settings()
        self.name = name or source
        # Whether this model can write an English description of a message in another language
        # (SmolLM2-135M cannot; the standard profile's Qwen can).
        self.translates = translates
        self.device = device
        self.cuda = device.startswith("cuda")
        self.static_cache = self.cuda if static_cache is None else static_cache
        self.compile = (settings.llm_compile if compile is None else compile) and self.cuda
        self.cache_tokens = cache_tokens or settings.llm_cache_tokens
        fields = fields or settings.llm_fields
        self.parallel_fields = fields == "parallel" or (fields == "auto" and self.cuda)
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
        eos = self._model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._pad = int(decoding_config(self._model.generation_config, 1).pad_token_id or 0)
        self._stop_ids = sorted(self._newline_set | self._eos_ids)
        self._decoders: dict[int, GreedyDecoder] = {}  # by cache length bucket
        if self.compile:
            _raise_recompile_limit()
        # generate() is not safe to run concurrently on one model (shared cache objects); the
        # batcher runs one batch at a time, the lock also covers direct calls of _decode.
        self._lock = threading.Lock()
        self._batcher: MicroBatcher[_Job, list[str]] = MicroBatcher(
            self._decode, max_batch=max_batch, window_s=window_s
        )

    @property
    def batches_run(self) -> int:
        return self._batcher.batches_run

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

    def _encode(self, text: str) -> list[int]:
        # The chat template already contains the BOS token where the model wants one.
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(i) for i in ids]

    def _generation_config(self, max_tokens: int) -> Any:
        return decoding_config(self._model.generation_config, max_tokens)

    def _fill(self, messages: list[prompts.Message], fields: list[tuple[str, int]]) -> str:
        """Write each label into the assistant turn and let the model complete that line.

        Sequential fields are one job (each line continues the answer so far); parallel fields
        are one job each, all starting right after the prompt, decoded as rows of one batch
        (one request: the batcher never splits it) and joined in order.
        """
        prefix = self._encode(self._chat_prefix(messages))
        if not self.parallel_fields or len(fields) < 2:
            return self._batcher([_Job(prefix, fields)])[0]
        return "".join(self._batcher([_Job(prefix, [f]) for f in fields]))

    def _decode(self, jobs: list[_Job]) -> list[str]:
        """Decode every field of ``jobs`` as one batch; one answer per job, in order."""
        import torch

        rows = [_Row(job, self._pad) for job in jobs]
        with self._lock, torch.inference_mode():
            if self.static_cache:
                self._decode_prefilling(rows)
            else:
                self._decode_reusing(rows)
        return [row.answer for row in rows]

    def _start_field(self, rows: list[_Row]) -> None:
        for row in rows:
            # No space after the label: models tokenise " word" as one piece and, given a bare
            # trailing space, tend to end the line at once.
            row.label = self._encode(row.separator + row.job.fields[row.field][0])

    def _end_field(self, rows: list[_Row], new: list[list[int]]) -> list[int]:
        """Take each row's line from its new tokens; returns how many of them the row keeps."""
        kept = []
        for row, tokens in zip(rows, new, strict=True):
            # Generation stopped this row at its first line break or end token, or at its budget;
            # after that it only received padding.
            count = min(len(tokens), row.budget)
            for i, token in enumerate(tokens[:count]):
                if token in self._newline_set or token in self._eos_ids:
                    count = i + 1
                    break
            mine = tokens[:count]
            line = str(self._tokenizer.decode(mine, skip_special_tokens=True))
            label = row.job.fields[row.field][0]
            row.answer += f"{label} {line.strip().split(chr(10), 1)[0].strip()}\n"
            if mine and mine[-1] in self._eos_ids:
                # The end-of-turn token is dropped: the same assistant turn goes on, on a new line.
                mine, row.separator = mine[:-1], "\n"
            else:
                row.separator = "" if mine and mine[-1] in self._newline_set else "\n"
            row.tokens += row.label + mine
            row.field += 1
            kept.append(len(mine))
        return kept

    def _generate(self, ids: Any, mask: Any, cache: Any, budgets: list[int]) -> Any:
        import torch
        from transformers import StoppingCriteriaList

        limits = torch.tensor(budgets, dtype=torch.long, device=self.device)
        criteria = [_end_of_line(self._newline_ids), _row_budgets(ids.shape[1], limits)]
        return self._model.generate(
            input_ids=ids,
            attention_mask=mask,
            **{_cache_argument(): cache},
            generation_config=self._generation_config(max(budgets)),
            stopping_criteria=StoppingCriteriaList(criteria),
        )

    def _left_pad(self, seqs: list[list[int]], fills: list[int]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = [[f] * (width - len(s)) + s for s, f in zip(seqs, fills, strict=True)]
        mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
        return (
            torch.tensor(ids, dtype=torch.long, device=self.device),
            torch.tensor(mask, dtype=torch.long, device=self.device),
        )

    def _decode_reusing(self, rows: list[_Row]) -> None:
        """Fields with one dynamic KV cache kept across them (CPU).

        The batch is a rectangle of token columns shared by all rows. Each row is left-padded at
        the start; when a row's line ends before the others', the columns it then receives
        (padding, or an end-of-turn token that is dropped) stay in the cache as holes; each new
        label is left-padded to the longest label. The attention mask marks every pad and hole,
        and transformers derives position ids from the mask (cumulative sum), so each row's real
        tokens get the same positions and see the same tokens as when decoded alone: the masked
        columns add exact zeros to attention. Holes hold the row's own first token, so the
        repetition penalty (which reads ids, not the mask) is unchanged too.
        """
        import torch
        from transformers import DynamicCache

        try:
            cache = DynamicCache(config=self._model.config)
        except TypeError:  # transformers 4: no config argument
            cache = DynamicCache()
        active = rows
        ids, mask = self._left_pad([r.tokens for r in rows], [r.fill for r in rows])
        while True:
            keep = [i for i, row in enumerate(active) if not row.done]
            if not keep:
                return
            if len(keep) < len(active):  # drop rows without fields left, from the cache too
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                ids, mask = ids[index], mask[index]
                if cache.get_seq_length() > 0:
                    cache.batch_select_indices(index)
                active = [active[i] for i in keep]
            self._start_field(active)
            labels, label_mask = self._left_pad([r.label for r in active], [r.fill for r in active])
            ids, mask = torch.cat([ids, labels], dim=1), torch.cat([mask, label_mask], dim=1)
            start = ids.shape[1]
            out = self._generate(ids, mask, cache, [r.budget for r in active])
            kept = self._end_field(active, out[:, start:].tolist())
            new_mask = torch.zeros_like(out[:, start:])
            for i, (row, count) in enumerate(zip(active, kept, strict=True)):
                new_mask[i, :count] = 1
                out[i, start + count :] = row.fill
            ids, mask = out, torch.cat([mask, new_mask], dim=1)
            # The last token was never fed forward (it is not in the cache): when no row keeps
            # it, it goes, so a dialogue decoded alone feeds exactly its own tokens.
            if not bool(mask[:, -1].any()):
                ids, mask = ids[:, :-1], mask[:, :-1]

    def _decode_prefilling(self, rows: list[_Row]) -> None:
        """Fields prefilled again each into a static cache from a fixed set of shapes (CUDA)."""
        active = rows
        while active := [row for row in active if not row.done]:
            self._start_field(active)
            seqs = [row.tokens + row.label for row in active]
            fills = [row.fill for row in active]
            budgets = [row.budget for row in active]
            # Rows up to the bucket repeat the first row and stop after one token.
            spare = bucket(len(active)) - len(active)
            seqs, fills = seqs + [seqs[0]] * spare, fills + [fills[0]] * spare
            budgets += [1] * spare
            ids, mask = self._left_pad(seqs, fills)
            # Rows past their budget decode on until every row has stopped; _end_field cuts
            # each row at its own budget and first line end, as generate's criteria would.
            new = self._decoder(ids.shape[1] + max(budgets))(
                ids, mask, max(budgets), stop_ids=self._stop_ids
            )
            self._end_field(active, new[: len(active)].tolist())

    def _decoder(self, tokens: int) -> GreedyDecoder:
        """The decoder whose static caches hold a bucket of at least ``tokens`` positions."""
        length = bucket(tokens, self.cache_tokens)
        decoder = self._decoders.get(length)
        if decoder is None:
            decoder = self._decoders[length] = GreedyDecoder(
                self._model, length, compile=self.compile, repetition_penalty=REPETITION_PENALTY
            )
        return decoder

    def _refine_fields(self, k: int) -> list[tuple[str, int]]:
        fields = [(prompts.REFINE_PREFILL, self.budgets.description)]
        return fields + [(f"PROMPT {i}:", self.budgets.prompt) for i in range(1, k + 1)]

    def _refine_raw(self, dialogue: Dialogue, k: int) -> str:
        messages = prompts.refine_messages(dialogue, k, english=self.translates)
        return self._fill(messages, self._refine_fields(k))

    def _ask_raw(self, dialogue: Dialogue, candidates: Sequence[str]) -> str:
        messages = prompts.ask_messages(dialogue, candidates)
        return self._fill(messages, [(prompts.ASK_PREFILL, self.budgets.question)])


def _raise_recompile_limit(limit: int = 64) -> None:
    """Room for one compiled graph per cache bucket (torch's default stops at 8 and then runs
    the model uncompiled)."""
    import torch._dynamo

    config: Any = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(int(getattr(config, name)), limit))
