"""The generative ranker (a decoder LM scores each candidate title's log-likelihood after a
prompt of the user's history; zero-shot or LoRA-tuned): `recommender` (the `Recommender`),
`prompts` (item texts, prompts and candidates as token ids), `scoring` (candidates'
log-likelihoods, batched and memoised, and their normalisation), `training` (LoRA
training), `session` (a loaded decoder shared by rankers with the same weights), these four
mixed into the ranker, `network` (calls on the decoder: the shared key-value cache, token
log-probabilities) and `batching` (negatives, length buckets)."""

from recarena.models.language.generative.batching import NegativeSampler, length_buckets
from recarena.models.language.generative.network import expand_cache, select_cache
from recarena.models.language.generative.recommender import (
    DEFAULT_CHAT_PROMPT,
    DEFAULT_PROMPT,
    EMPTY_HISTORY,
    UNSCORABLE_SCORE,
    GenerativeRanker,
)

__all__ = [
    "DEFAULT_CHAT_PROMPT",
    "DEFAULT_PROMPT",
    "EMPTY_HISTORY",
    "UNSCORABLE_SCORE",
    "GenerativeRanker",
    "NegativeSampler",
    "expand_cache",
    "length_buckets",
    "select_cache",
]
