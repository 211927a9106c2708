"""How the generative ranker scores candidates: the log-likelihood of each candidate's
tokens after the user's prompt, read from the decoder in padded batches over the prompt's
shared key-value cache, memoised per decoder, and normalised (`CandidateScoring`, mixed
into `GenerativeRanker`, whose parameters, prompts and decoder session it uses).

Efficiency
    The prompt is run once per user with ``use_cache=True``; its key-value cache (a
    transformers ``DynamicCache``) is then shared by every batch of candidates. Each batch
    gets its own cache object whose layers hold the prompt's keys and values *expanded*
    (a broadcast view, no copy) along the batch dimension; the forward pass concatenates the
    candidates' keys onto those views into new tensors, so the shared prompt cache is never
    written to. Candidates are right-padded with an attention mask (prompt ones, then each
    candidate's own mask), sorted by length so a batch pads little, and identical
    candidates of a user are scored once. ``kv_cache=False`` scores full prompt + candidate
    sequences instead (the reference the tests compare to, and the benchmark's baseline;
    it never reads the memo). Everything runs under ``torch.inference_mode``; device
    ``"auto"`` is CUDA (bfloat16, or float16 where unsupported) when available, else the
    CPU in float32.

Position bias
    Each candidate is scored on its own (a pointwise log-likelihood): no candidate list is
    ever shown to the model, so a candidate's score does not depend on where it sits in the
    list or on which other candidates there are (``list_position_independent = True``; a
    test checks that permuting the candidates permutes the scores). Candidates still arrive
    in the split's seeded random order.

Unscorable candidates
    A candidate without text (empty or missing title) cannot be scored. It is not dropped:
    it gets `UNSCORABLE_SCORE`, the lowest finite float32, so it ranks last (ties among
    such candidates are broken at random by the ranking code), and it is counted:
    ``unscorable_items_`` lists the catalog's items without text, ``n_unscorable_`` counts
    the unscorable candidate slots scored since ``fit`` (``n_scored_`` counts them all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recarena.models.language.generative.batching import length_buckets
from recarena.models.language.generative.network import (
    cache_kwarg,
    expand_cache,
    model_device,
    output_cache,
    token_logprobs,
)

if TYPE_CHECKING:
    import torch

#: score of a candidate that cannot be scored (no text): the lowest finite float32
UNSCORABLE_SCORE = float(np.finfo(np.float32).min)
#: prompts whose candidates' log-likelihoods a shared memo keeps (oldest dropped first)
_MEMO_PROMPTS = 20_000


class CandidateScoring:
    """Candidates' scores after a prompt, for `GenerativeRanker`.

    Reads the ranker's scoring parameters (``length_norm``, ``prior_correction``,
    ``batch_size``, ``kv_cache``), its prompts and candidates (`PromptIds`) and its decoder
    (``_ensure_lm``, ``_session``'s memo, ``_tokenizer``).
    """

    def _score_candidates(self, prompt_ids: list[int], items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` after one prompt (unscorable ones at `UNSCORABLE_SCORE`)."""
        conts = [self._candidate_ids(int(i)) for i in items]
        ok = [k for k, c in enumerate(conts) if c is not None]
        scores = np.full(len(items), UNSCORABLE_SCORE, dtype=np.float64)
        if ok:
            sums, counts = self._continuation_logprobs(prompt_ids, [conts[k] for k in ok])
            values = self._normalise(sums, counts, items[ok])
            scores[ok] = np.maximum(values, UNSCORABLE_SCORE)
        return scores.astype(np.float32)

    def _normalise(self, sums: np.ndarray, counts: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The score of (scorable) ``items`` from their log-likelihood sums and token counts."""
        if self.prior_correction:
            sums = sums - self.prior_correction * self._prior_logliks(items)
        return sums / counts if self.length_norm == "mean" else sums

    def _prior_logliks(self, items: np.ndarray) -> np.ndarray:
        """Log-likelihood of each (scorable) item after an empty history."""
        null_prompt = self._prompt_ids(np.empty(0, dtype=np.int64))
        conts = [self._candidate_ids(int(i)) for i in items]
        sums, _ = self._continuation_logprobs(null_prompt, conts)  # type: ignore[arg-type]
        return sums

    def _continuation_logprobs(
        self, prompt_ids: list[int], conts: list[list[int]], *, kv_cache: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sum of token log-probabilities, number of tokens) of each continuation.

        The default path (``kv_cache`` None and the ``kv_cache`` parameter on) reads and
        fills the shared memo of the decoder's session, when it has one.
        """
        self._ensure_lm()
        counts = np.array([len(c) for c in conts], dtype=np.float64)
        session = getattr(self, "_session", None)
        memo = (
            None if session is None or kv_cache is not None or not self.kv_cache else session.memo
        )
        if memo is None:
            return self._compute_logprobs(prompt_ids, conts, kv_cache=kv_cache), counts
        key = (self.batch_size, tuple(prompt_ids))
        known = memo.get(key)
        if known is None:
            if len(memo) >= _MEMO_PROMPTS:
                del memo[next(iter(memo))]  # the oldest prompt
            known = memo[key] = {}
        wanted = [tuple(c) for c in conts]
        missing = list(dict.fromkeys(c for c in wanted if c not in known))
        if missing:
            sums = self._compute_logprobs(prompt_ids, [list(c) for c in missing])
            known.update(zip(missing, sums.tolist(), strict=True))
        return np.array([known[c] for c in wanted], dtype=np.float64), counts

    def _compute_logprobs(
        self, prompt_ids: list[int], conts: list[list[int]], *, kv_cache: bool | None = None
    ) -> np.ndarray:
        """Sum of token log-probabilities of each continuation, from the decoder."""
        import torch

        lm = self._ensure_lm()
        use_cache = self.kv_cache if kv_cache is None else kv_cache
        sums = np.zeros(len(conts), dtype=np.float64)
        lengths = np.array([len(c) for c in conts], dtype=np.int64)
        with torch.inference_mode():
            device = model_device(lm)
            prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            if use_cache:
                out = lm(input_ids=prompt, use_cache=True, logits_to_keep=1)
                prefix = output_cache(out)
                first = out.logits[0, -1].float().log_softmax(-1)
            for idx in length_buckets(lengths, self.batch_size):
                ids, mask = self._pad([conts[k] for k in idx], device)
                if use_cache:
                    token_lp = self._cached_batch(lm, prefix, first, prompt.shape[1], ids, mask)
                else:
                    token_lp = self._full_batch(lm, prompt, ids, mask)
                sums[idx] = (token_lp * mask).sum(1).double().cpu().numpy()
        return sums

    def _pad(self, conts: list[list[int]], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(c) for c in conts)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(conts), width), 0 if pad is None else int(pad), dtype=torch.long)
        mask = torch.zeros((len(conts), width), dtype=torch.long)
        for r, c in enumerate(conts):
            ids[r, : len(c)] = torch.tensor(c, dtype=torch.long)
            mask[r, : len(c)] = 1
        return ids.to(device), mask.to(device)

    def _cached_batch(
        self,
        lm: Any,
        prefix: Any,
        first: torch.Tensor,
        n_prompt: int,
        ids: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Token log-probabilities (B, L) of a batch of continuations after the cached prompt.

        Differentiable: training runs the same code with gradients through the prompt's
        cache.
        """
        import torch

        batch = ids.shape[0]
        cache = expand_cache(prefix, batch)
        attention = torch.cat(
            [torch.ones((batch, n_prompt), dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        # the first token's log-probability comes from the prompt's last position
        lp0 = first[ids[:, 0]].unsqueeze(1)
        if ids.shape[1] == 1:
            return lp0
        logits = lm(
            input_ids=ids[:, :-1],
            attention_mask=attention[:, :-1],
            use_cache=True,
            **{cache_kwarg(lm): cache},
        ).logits
        return torch.cat([lp0, token_logprobs(logits, ids[:, 1:])], dim=1)

    def _full_batch(
        self, lm: Any, prompt: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The same log-probabilities from full prompt + continuation sequences, no cache."""
        import torch

        batch, n_prompt = ids.shape[0], prompt.shape[1]
        seq = torch.cat([prompt.expand(batch, -1), ids], dim=1)
        attention = torch.cat(
            [torch.ones((batch, n_prompt), dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        logits = lm(input_ids=seq[:, :-1], attention_mask=attention[:, :-1], use_cache=False).logits
        return token_logprobs(logits[:, n_prompt - 1 :], ids)
