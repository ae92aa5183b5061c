"""Memorization metrics of TinyMem (Sakarvadia et al. 2025): exact greedy-extraction tests, backdoor success,
next-token accuracy with and without pads, and perplexity — a functional core plus torchmetrics ``Metric``s.

Definitions (research note A5):

* **Memorized** (noise artifacts): a sequence is memorized when greedy decoding from the first ``prompt_len`` (50)
  tokens of its *clean* original reproduces the *noised* training sequence exactly on positions
  ``[prompt_len, prompt_len + k)`` (k = 50; all 50 tokens). Only sequences whose noised and clean versions differ
  inside that window are eligible (:func:`noise_window_eligible`). ``% memorized`` = matches / eligible.
* **Backdoor success** (attack success rate, ASR): the prompt is a poisoned sequence up to and including its trigger;
  success when the next ``k`` greedy tokens equal the backdoored continuation (all "2"s in the math task). The window
  is clipped to the model's context (``min(trigger_end + k, context)``): GPT-2 cannot generate past ``n_positions``.
* **Accuracy**: argmax next-token accuracy over every shifted position; the paper counts pad positions too
  (``with_pad``), which inflates it (~30 of 150 positions are pads) — both versions are provided.
* **Perplexity**: ``exp`` of the mean next-token negative log-likelihood over the counted tokens (token-weighted,
  so it is exact under DDP; the paper averages ``exp(batch loss)`` over batches instead).
* **Exposure** (Carlini et al. 2019, "The Secret Sharer"): a planted secret ``s`` of a known format (a random code,
  a backdoor continuation) is ranked by its log-perplexity (summed NLL given the same prompt) among ``R`` other
  candidates of the same format: ``exposure = log2(R + 1) - log2(rank)``, ``rank = 1 + #{candidates with NLL <
  NLL(s)}`` (ties count in the secret's favour, so exposure is never under-stated). A secret the model prefers to
  every candidate has the maximum ``log2(R + 1)`` (13.3 bits for R = 10,000); a secret drawn from the candidates'
  own distribution that the model never saw has ``P(exposure >= e) = 2^-e`` — so "removed" means the exposure is
  back in the range of a model that never saw the secret, not only that greedy extraction fails.

All metric states are integer counts or float64 sums reduced with ``dist_reduce_fx="sum"``, so a DDP-synced value
equals the single-process value over all data. Percentages are returned in [0, 100].

Functional core (works with any Transformers causal LM; greedy, no sampling, ``model(input_ids).logits``):
:func:`greedy_continuation`, :func:`memorized_mask`, :func:`percent_memorized`, :func:`backdoor_success_mask`,
:func:`backdoor_success_rate`, :func:`next_token_accuracy_counts`, :func:`continuation_nll`,
:func:`exposure_from_nll`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = [
    "greedy_continuation",
    "noise_window_eligible",
    "memorized_mask",
    "percent_memorized",
    "memorization_report",
    "backdoor_success_mask",
    "backdoor_success_rate",
    "next_token_accuracy_counts",
    "continuation_nll",
    "exposure_from_nll",
    "PercentMemorized",
    "BackdoorSuccessRate",
    "NextTokenAccuracy",
    "TokenPerplexity",
    "Exposure",
]


def _require_tokens(name: str, tensor: Any, dims: int = 2) -> None:
    if not isinstance(tensor, Tensor) or tensor.dim() != dims or tensor.dtype not in (torch.int64, torch.int32):
        shape = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be an integer tensor with {dims} dims of token ids, got {shape}")


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _context_length(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _logits(output: Any) -> Tensor:
    return output.logits if hasattr(output, "logits") else output


@torch.no_grad()
def greedy_continuation(model: nn.Module, prefixes: Tensor, length: int, *, use_cache: bool = True) -> Tensor:
    """Greedy (argmax) continuation of each prefix.

    Args:
        model: a causal LM: ``model(input_ids=...)`` returns logits ``[B, T, V]`` (or an object with ``.logits``).
        prefixes: ``LongTensor [B, P]`` prompts (P >= 1, all of the same length).
        length: number of new tokens (>= 0).
        use_cache: reuse the key/value cache when the model returns one (same tokens, fewer FLOPs); models without
            a cache are run on the whole growing sequence.

    Returns:
        ``LongTensor [B, length]`` of generated tokens. Ties in the argmax take the lowest id (``torch.argmax``).
    """
    _require_tokens("prefixes", prefixes)
    _require_int("length", length, 0)
    if prefixes.shape[1] < 1:
        raise ValueError("prefixes must hold at least one token per row")
    context = _context_length(model)
    if context is not None and prefixes.shape[1] + length > context:
        raise ValueError(f"prefix length {prefixes.shape[1]} + length {length} exceeds the model's context of "
                         f"{context} tokens")
    batch = prefixes.shape[0]
    out = prefixes.new_empty((batch, length), dtype=torch.long)
    if length == 0 or batch == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        ids = prefixes.long()
        output = _forward(model, ids, use_cache=use_cache)
        past = _returned_cache(output) if use_cache else None
        next_token = _logits(output)[:, -1, :].argmax(dim=-1)
        out[:, 0] = next_token
        sequence = ids
        for step in range(1, length):
            if past is not None:
                output = model(input_ids=next_token[:, None], use_cache=True, **{_cache_keyword(model): past})
                past = _returned_cache(output)
            else:
                sequence = torch.cat([sequence, next_token[:, None]], dim=1)
                output = _forward(model, sequence, use_cache=False)
            next_token = _logits(output)[:, -1, :].argmax(dim=-1)
            out[:, step] = next_token
    finally:
        model.train(was_training)
    return out


def _returned_cache(output: Any):
    # Transformers >= 5 returns ``cache``; earlier versions ``past_key_values``.
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _cache_keyword(model: nn.Module) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(model: nn.Module, ids: Tensor, *, use_cache: bool):
    # Transformers models take keywords (and may return a cache); any other module is called as model(ids).
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model(input_ids=ids, use_cache=use_cache)
    return model(ids)


def noise_window_eligible(noised: Tensor, clean: Tensor, *, prompt_len: int = 50, k: int = 50) -> Tensor:
    """``BoolTensor [B]``: the noised sequence differs from its clean original somewhere in ``[prompt_len, +k)``."""
    _require_tokens("noised", noised)
    _require_tokens("clean", clean)
    if noised.shape != clean.shape:
        raise ValueError(f"noised {list(noised.shape)} and clean {list(clean.shape)} sequences must have one shape")
    _require_int("prompt_len", prompt_len, 1)
    _require_int("k", k, 1)
    if prompt_len + k > noised.shape[1]:
        raise ValueError(f"prompt_len + k = {prompt_len + k} exceeds the sequence length {noised.shape[1]}")
    window = slice(prompt_len, prompt_len + k)
    return (noised[:, window] != clean[:, window]).any(dim=1)


@torch.no_grad()
def memorized_mask(model: nn.Module, prefixes: Tensor, targets: Tensor, *, batch_size: int = 256) -> Tensor:
    """``BoolTensor [B]``: greedy continuation of ``prefixes [B, P]`` equals ``targets [B, T]`` on all T tokens."""
    _require_tokens("prefixes", prefixes)
    _require_tokens("targets", targets)
    if prefixes.shape[0] != targets.shape[0]:
        raise ValueError(f"prefixes ({prefixes.shape[0]} rows) and targets ({targets.shape[0]} rows) must match")
    _require_int("batch_size", batch_size, 1)
    if targets.shape[1] == 0:
        raise ValueError("targets must hold at least one token per row (an empty window matches trivially)")
    masks = []
    for start in range(0, prefixes.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        generated = greedy_continuation(model, prefixes[chunk], targets.shape[1])
        masks.append((generated == targets[chunk].to(generated.device)).all(dim=1))
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool, device=prefixes.device)


def memorization_report(model: nn.Module, noised: Tensor, clean: Tensor, *, prompt_len: int = 50, k: int = 50,
                        batch_size: int = 256) -> dict[str, Tensor]:
    """Per-sequence results of the noise test.

    Args:
        noised: ``[N, C]`` the noised training sequences; clean: ``[N, C]`` their clean originals.

    Returns:
        dict of ``BoolTensor [N]``: ``eligible`` (noise inside the window), ``memorized`` (eligible and the greedy
        continuation of the clean prefix equals the noised window), ``clean_continuation`` (eligible and it equals
        the clean window: "noised but not memorized and correctly output").
    """
    eligible = noise_window_eligible(noised, clean, prompt_len=prompt_len, k=k)
    memorized = torch.zeros_like(eligible)
    correct = torch.zeros_like(eligible)
    index = eligible.nonzero(as_tuple=True)[0]
    window = slice(prompt_len, prompt_len + k)
    for start in range(0, len(index), batch_size):
        rows = index[start:start + batch_size]
        generated = greedy_continuation(model, clean[rows, :prompt_len], k).to(noised.device)
        memorized[rows] = (generated == noised[rows, window]).all(dim=1)
        correct[rows] = (generated == clean[rows, window]).all(dim=1)
    return {"eligible": eligible, "memorized": memorized, "clean_continuation": correct}


def percent_memorized(model: nn.Module, noised: Tensor, clean: Tensor, *, prompt_len: int = 50, k: int = 50,
                      batch_size: int = 256) -> float:
    """% of eligible noised sequences that are memorized (see the module docstring); raises if none is eligible."""
    report = memorization_report(model, noised, clean, prompt_len=prompt_len, k=k, batch_size=batch_size)
    eligible = int(report["eligible"].sum())
    if eligible == 0:
        raise ValueError(f"no noised sequence differs from its clean original in positions [{prompt_len}, "
                         f"{prompt_len + k}): the memorized set is empty")
    return 100.0 * int(report["memorized"].sum()) / eligible


@torch.no_grad()
def backdoor_success_mask(model: nn.Module, sequences: Tensor, prefix_lengths: Tensor, *, k: int = 50,
                          batch_size: int = 256) -> Tensor:
    """``BoolTensor [B]``: greedy decoding from ``sequences[i, :prefix_lengths[i]]`` reproduces the backdoored tokens
    ``sequences[i, prefix_lengths[i] : min(prefix_lengths[i] + k, C)]`` (C = ``sequences.shape[1]``, clipped further
    to the model's context). Rows are grouped by prefix length, so no left-padding is involved."""
    _require_tokens("sequences", sequences)
    _require_int("k", k, 1)
    if not isinstance(prefix_lengths, Tensor) or prefix_lengths.shape != (sequences.shape[0],):
        raise ValueError(f"prefix_lengths must be a tensor [{sequences.shape[0]}], got {prefix_lengths!r}")
    limit = sequences.shape[1]
    context = _context_length(model)
    if context is not None:
        limit = min(limit, context)
    lengths = prefix_lengths.long().cpu()
    if len(lengths) and (lengths.min() < 1 or lengths.max() >= limit):
        raise ValueError(f"prefix_lengths must lie in [1, {limit - 1}] (a prompt and at least one token to "
                         f"generate), got range [{int(lengths.min())}, {int(lengths.max())}]")
    success = torch.zeros(sequences.shape[0], dtype=torch.bool)
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero(as_tuple=True)[0]
        stop = min(length + k, limit)
        targets = sequences[rows, length:stop]
        success[rows] = memorized_mask(model, sequences[rows, :length], targets, batch_size=batch_size).cpu()
    return success.to(sequences.device)


def backdoor_success_rate(model: nn.Module, sequences: Tensor, prefix_lengths: Tensor, *, k: int = 50,
                          batch_size: int = 256) -> float:
    """Attack success rate in % over the poisoned sequences (see :func:`backdoor_success_mask`)."""
    if sequences.shape[0] == 0:
        raise ValueError("the backdoored set is empty: no sequence contains the trigger")
    mask = backdoor_success_mask(model, sequences, prefix_lengths, k=k, batch_size=batch_size)
    return 100.0 * float(mask.float().mean())


def next_token_accuracy_counts(logits: Tensor, input_ids: Tensor, *, ignore_index: int | None = None
                               ) -> tuple[Tensor, Tensor]:
    """``(correct, counted)`` int64 scalars of argmax next-token accuracy: ``logits[:, :-1]`` predicts
    ``input_ids[:, 1:]``; targets equal to ``ignore_index`` (e.g. the pad id) are not counted."""
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits must be [B, T, V] matching input_ids [B, T]; got {list(logits.shape)} and "
                         f"{list(input_ids.shape)}")
    predictions = logits[:, :-1].argmax(dim=-1)
    targets = input_ids[:, 1:]
    counted = torch.ones_like(targets, dtype=torch.bool) if ignore_index is None else targets != ignore_index
    correct = ((predictions == targets) & counted).sum()
    return correct.long(), counted.sum().long()


@torch.no_grad()
def continuation_nll(model: nn.Module, prefixes: Tensor, continuations: Tensor, *, lengths: Tensor | None = None,
                     batch_size: int = 256, use_cache: bool = True, stop_at: float | None = None) -> Tensor:
    """Summed next-token NLL (nats, float64) of each continuation given its prefix: the log-perplexity of exposure.

    With one shared prompt (``prefixes [1, P]``) and a Transformers model that returns a key/value cache (exposure
    ranks 10,000+ candidates after the same prompt), the prompt is run once and the continuations are scored token
    by token as a prefix tree: rows are sorted, and within each batch rows that share their first ``j`` tokens share
    one cache row and one forward of token ``j`` (random codes share their first digits). Otherwise each row's
    ``prefix + continuation`` is run whole. Both give the same numbers (log-softmax in float32, sums in float64).

    ``stop_at`` (exact ranks at a fraction of the cost): on the prefix-tree path a row stops as soon as its partial
    NLL reaches ``stop_at``; its returned value is then that partial sum, a lower bound of its NLL that is itself
    >= ``stop_at`` (NLL terms are >= 0). Every row below ``stop_at`` gets its exact NLL, so ``#{rows < stop_at}``
    — the rank that exposure needs with ``stop_at`` = the secret's log-perplexity — is exact. Without a shared
    prompt cache every row is scored whole (also exact).

    Args:
        model: a causal LM (``model(input_ids)`` -> logits ``[B, T, V]`` or an object with ``.logits``).
        prefixes: ``LongTensor [B, P]`` or ``[1, P]`` (one prompt shared by every continuation), P >= 1.
        continuations: ``LongTensor [B, L]``; right-padded with any id where ``lengths`` is given.
        lengths: ``LongTensor [B]`` tokens of each continuation that count (1..L); default all L.
        batch_size: rows per forward pass.
        use_cache: reuse the shared prompt's key/value cache when possible (False: always run whole rows).
        stop_at: stop scoring a row once its partial NLL reaches this value (see above); None scores every token.

    Returns:
        ``DoubleTensor [B]``: ``-sum_j log p(c_j | prefix, c_<j)`` over the counted tokens.
    """
    _require_tokens("prefixes", prefixes)
    _require_tokens("continuations", continuations)
    _require_int("batch_size", batch_size, 1)
    rows, width = continuations.shape
    if prefixes.shape[1] < 1 or prefixes.shape[0] not in (1, rows):
        raise ValueError(f"prefixes must be [1, P] or [{rows}, P] with P >= 1, got {list(prefixes.shape)}")
    if width < 1:
        raise ValueError("continuations must hold at least one token per row")
    if lengths is None:
        lengths = torch.full((rows,), width, dtype=torch.long)
    if not isinstance(lengths, Tensor) or lengths.shape != (rows,) or int(lengths.min()) < 1 or int(lengths.max()) > width:
        raise ValueError(f"lengths must be a tensor [{rows}] with values in [1, {width}], got {lengths!r}")
    if stop_at is not None and not (isinstance(stop_at, (int, float)) and math.isfinite(stop_at)):
        raise ValueError(f"stop_at must be a finite number of nats or None, got {stop_at!r}")
    context = _context_length(model)
    if context is not None and prefixes.shape[1] + width > context:
        raise ValueError(f"prefix length {prefixes.shape[1]} + continuation length {width} exceeds the model's "
                         f"context of {context} tokens")
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else prefixes.device
    was_training = model.training
    model.eval()
    out = torch.empty(rows, dtype=torch.float64)
    p = prefixes.shape[1]
    counted_positions = torch.arange(width, device=device)[None, :]
    try:
        shared = _prompt_cache(model, prefixes.long().to(device)) if use_cache and prefixes.shape[0] == 1 else None
        if shared is not None:
            order = _lexicographic_order(continuations)
            limit = math.inf if stop_at is None else float(stop_at)
            for start in range(0, rows, batch_size):
                index = order[start:start + batch_size]
                out[index] = _prefix_tree_nll(model, *shared, continuations[index].long().to(device),
                                              lengths[index].to(device), limit).cpu()
            return out
        for start in range(0, rows, batch_size):
            chunk = slice(start, start + batch_size)
            cont = continuations[chunk].long().to(device)
            pre = prefixes[chunk] if prefixes.shape[0] == rows else prefixes.expand(cont.shape[0], -1)
            ids = torch.cat([pre.long().to(device), cont], dim=1)
            logits = _logits(_forward(model, ids, use_cache=False))[:, p - 1 : -1]
            nll = _token_nll(logits, cont)
            counted = counted_positions < lengths[chunk].to(device)[:, None]
            out[chunk] = (nll * counted).sum(dim=1).cpu()
    finally:
        model.train(was_training)
    return out


def _lexicographic_order(rows: Tensor) -> Tensor:
    """``LongTensor [B]``: the order that sorts the rows ``[B, L]`` lexicographically (shared prefixes adjacent)."""
    _, inverse = torch.unique(rows.cpu(), dim=0, return_inverse=True)  # unique rows come sorted
    return torch.argsort(inverse, stable=True)


def _prefix_tree_nll(model: nn.Module, first_logits: Tensor, prompt_cache: Any, cont: Tensor, lengths: Tensor,
                     stop_at: float) -> Tensor:
    """``[B]`` float64 NLL of ``cont [B, L]`` after the cached prompt, one token position at a time: the rows still
    scored (partial NLL < ``stop_at``, tokens left) are grouped by (their group so far, their last token), and each
    group runs one token on its own cache row (``batch_select_indices`` repeats the parent group's row)."""
    rows, width = cont.shape
    group_logits = first_logits[:, -1].float()  # [G=1, V]: every row starts in the prompt's group
    group = torch.zeros(rows, dtype=torch.long, device=cont.device)
    cache = _copy_cache(prompt_cache)
    total = torch.zeros(rows, dtype=torch.float64, device=cont.device)
    active = torch.arange(rows, device=cont.device)
    for j in range(width):
        if j:
            keep = (total[active] < stop_at) & (lengths[active] > j)
            active, previous = active[keep], group[active[keep]]
            if not len(active):
                break
            pairs, inverse = torch.unique(torch.stack([previous, cont[active, j - 1]], dim=1), dim=0,
                                          return_inverse=True)
            cache.batch_select_indices(pairs[:, 0])
            output = model(input_ids=pairs[:, 1:], use_cache=True, **{_cache_keyword(model): cache})
            cache = _returned_cache(output)
            group_logits = _logits(output)[:, -1].float()
            group[active] = inverse
        row_logits_lse = torch.logsumexp(group_logits, dim=-1)[group[active]]
        picked = group_logits[group[active], cont[active, j]]
        total[active] += (row_logits_lse - picked).double()
    return total


def _prompt_cache(model: nn.Module, prompt: Tensor) -> tuple[Tensor, Any] | None:
    """Run the shared prompt ``[1, P]`` once: (logits of its last position ``[1, 1, V]``, its key/value cache), or
    None when the model returns no cache whose batch rows can be selected."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None
    output = _forward(model, prompt, use_cache=True)
    cache = _returned_cache(output)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    return _logits(output)[:, -1:], cache


def _copy_cache(cache: Any) -> Any:
    # The model appends each step's keys/values to the cache it is given: each batch works on its own copy.
    import copy

    return copy.deepcopy(cache)


def _token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """``[B, L]`` float64 NLL of ``targets [B, L]`` under ``logits [B, L, V]`` (log-softmax in float32: a
    float64 copy of 10^4 rows x 49K-word logits would not fit in memory)."""
    logits = logits.float()
    picked = logits.gather(-1, targets[..., None])[..., 0]
    return (torch.logsumexp(logits, dim=-1) - picked).double()


def exposure_from_nll(secret_nll: Tensor, candidate_nll: Tensor) -> Tensor:
    """Exposure in bits of each secret (see the module docstring).

    Args:
        secret_nll: ``[S]`` log-perplexity of each secret.
        candidate_nll: ``[S, R]`` (each secret's own candidates) or ``[R]`` (shared), R >= 1, none equal to a secret.

    Returns:
        ``DoubleTensor [S]``: ``log2(R + 1) - log2(1 + #{candidate_nll < secret_nll})``, in ``[0, log2(R + 1)]``.
    """
    secret = torch.as_tensor(secret_nll, dtype=torch.float64).reshape(-1)
    candidates = torch.as_tensor(candidate_nll, dtype=torch.float64)
    if candidates.dim() == 1:
        candidates = candidates[None, :].expand(secret.numel(), -1)
    if candidates.dim() != 2 or candidates.shape[0] != secret.numel() or candidates.shape[1] < 1:
        raise ValueError(f"candidate_nll must be [R] or [S={secret.numel()}, R] with R >= 1, got "
                         f"{list(candidates.shape)}")
    if not (torch.isfinite(secret).all() and torch.isfinite(candidates).all()):
        raise ValueError("secret_nll and candidate_nll must be finite log-perplexities")
    rank = 1 + (candidates < secret[:, None]).sum(dim=1)
    return math.log2(candidates.shape[1] + 1) - torch.log2(rank.double())


class _RateMetric(Metric):
    """``matches / total`` in percent from integer counts (NaN, with no error, before any eligible row)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("matches", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, match: Tensor) -> None:
        self.matches += match.sum().long()
        self.total += torch.tensor(match.numel(), dtype=torch.long, device=self.total.device)

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            return torch.tensor(float("nan"), device=self.total.device)
        return 100.0 * self.matches.double() / self.total.double()


class PercentMemorized(_RateMetric):
    """% of eligible noised sequences whose greedy continuation reproduces the noised window exactly.

    ``update(continuations [B, k], noised_windows [B, k], eligible [B] | None)``: ``continuations`` are the greedy
    tokens generated from the clean prefixes (:func:`greedy_continuation`), ``noised_windows`` the noised training
    tokens at the same positions; rows with ``eligible`` False (no noise in the window) are skipped.
    """

    higher_is_better = False

    def update(self, continuations: Tensor, noised_windows: Tensor, eligible: Tensor | None = None) -> None:
        if continuations.shape != noised_windows.shape or continuations.dim() != 2:
            raise ValueError(f"continuations {list(continuations.shape)} and noised_windows "
                             f"{list(noised_windows.shape)} must both be [B, k]")
        match = (continuations == noised_windows).all(dim=1)
        if eligible is not None:
            if eligible.shape != match.shape:
                raise ValueError(f"eligible must be [B]={list(match.shape)}, got {list(eligible.shape)}")
            match = match[eligible.bool()]
        self._add(match)


class BackdoorSuccessRate(_RateMetric):
    """Attack success rate (%): ``update(success [B])`` with the per-sequence result of
    :func:`backdoor_success_mask`, or ``update(continuations [B, k], backdoor_windows [B, k])``."""

    def update(self, continuations: Tensor, backdoor_windows: Tensor | None = None) -> None:
        if backdoor_windows is None:
            if continuations.dim() != 1:
                raise ValueError(f"a single argument must be the success mask [B], got {list(continuations.shape)}")
            self._add(continuations.bool())
            return
        if continuations.shape != backdoor_windows.shape or continuations.dim() != 2:
            raise ValueError(f"continuations {list(continuations.shape)} and backdoor_windows "
                             f"{list(backdoor_windows.shape)} must both be [B, k]")
        self._add((continuations == backdoor_windows).all(dim=1))


class NextTokenAccuracy(Metric):
    """Argmax next-token accuracy in [0, 1]: ``update(logits [B, T, V], input_ids [B, T])``.

    Args:
        ignore_index: target id not counted (the pad id for "accuracy without pad"); ``None`` counts every
            position, as the paper does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ignore_index is not None:
            _require_int("ignore_index", ignore_index, 0)
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("counted", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, input_ids: Tensor) -> None:
        correct, counted = next_token_accuracy_counts(logits, input_ids, ignore_index=self.ignore_index)
        self.correct += correct
        self.counted += counted

    def compute(self) -> Tensor:
        if int(self.counted) == 0:
            return torch.tensor(float("nan"), device=self.counted.device)
        return self.correct.double() / self.counted.double()


class TokenPerplexity(Metric):
    """``exp(mean next-token NLL)`` over counted tokens: ``update(logits [B, T, V], input_ids [B, T])``.

    Args:
        ignore_index: target id not counted (``None``: every position, like the paper's training loss).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ignore_index is not None:
            _require_int("ignore_index", ignore_index, 0)
        self.ignore_index = ignore_index
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counted", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, input_ids: Tensor) -> None:
        if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
            raise ValueError(f"logits must be [B, T, V] matching input_ids [B, T]; got {list(logits.shape)} and "
                             f"{list(input_ids.shape)}")
        targets = input_ids[:, 1:].reshape(-1)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), targets,
                                                reduction="none")
        if self.ignore_index is not None:
            keep = targets != self.ignore_index
            nll = nll[keep]
        self.nll_sum += nll.sum()
        self.counted += torch.tensor(nll.numel(), dtype=torch.long, device=self.counted.device)

    def compute(self) -> Tensor:
        if int(self.counted) == 0:
            return torch.tensor(float("nan"), device=self.counted.device)
        return torch.exp(self.nll_sum / self.counted)


class Exposure(Metric):
    """Mean (and maximum) exposure in bits over planted secrets: ``update(secret_nll [S], candidate_nll [S, R])``
    with the log-perplexities of :func:`continuation_nll`; ``compute()`` returns the mean over every secret seen
    (NaN before any). ``max_exposure`` holds the largest single value."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("exposure_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("max_exposure", default=torch.tensor(float("-inf"), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, secret_nll: Tensor, candidate_nll: Tensor) -> None:
        values = exposure_from_nll(secret_nll.detach().cpu(), candidate_nll.detach().cpu()).to(self.exposure_sum.device)
        self.exposure_sum += values.sum()
        self.count += torch.tensor(values.numel(), dtype=torch.long, device=self.count.device)
        if values.numel():
            self.max_exposure = torch.maximum(self.max_exposure, values.max())

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.count.device)
        return self.exposure_sum / self.count
