#!/usr/bin/env python3
"""Synthetic users, action sequences and requests with known label probabilities.

The generative process (every draw from a numpy generator seeded by ``(seed, split,
batch index)``, so a batch is the same whatever rank or worker produces it):

* **Items** belong to categories: ``category = item_id % num_categories``.
* **Users** (``num_users`` of them, fixed per seed, shared by the train and eval splits) have a long-term interest: 3
  categories drawn from a Zipf-like popularity, with Dirichlet weights. Their precomputed
  long-term embedding (the "batch" user vector) is the weighted sum of fixed category
  centroids plus noise; it arrives as the last ``user_embedding_dim`` dense columns.
* **History** (at most ``max_seq_len`` actions, skewed lengths): sessions of about
  ``mean_session_actions`` actions, seconds apart, with hours between sessions. A session
  browses one category, usually one of the user's interests, and drifts to another with
  probability ``drift``. Actions are click or save (positive), or hide (negative, on an
  item of an unwanted category) with probability ``hide_rate``.
* **Request**: minutes after the last action, ``candidates_per_request`` candidates drawn
  from the category of the most recent positive action (short-term), from the long-term
  interests, from recently hidden categories, or at random.
* **Labels** (click, save, hide), independent Bernoulli draws with probabilities that
  depend on (a) ``short``: the recency-weighted share of positive actions in the
  candidate's category, action k (0 = most recent) weighing ``exp(-k / tau)``; (b)
  ``long``: the user's interest weight of the category; (c) ``negative``: recent hides in
  the category. ``rabbit_hole`` in [0, 1] sets tau = 1 + 20 (1 - rabbit_hole): at 1 only
  the very last actions matter, at 0 the last twenty or so. The probabilities are exposed
  as ``label_probabilities``, so tests can compare a model's AUC with the best possible.
* **Lifelong history** (TransAct V2; ``lifelong_len`` > 0, off by default): every user also
  has two *dormant* interests, random categories that the realtime history reaches only
  by exploration or hides (or, for about 6% of users, by coinciding with a long-term
  interest), and a history
  of ``lifelong_len`` actions two weeks to a year old, ``dormant_share`` of them on the
  dormant categories and the rest on the long-term interests or anywhere. A share
  ``dormant_candidates`` of the candidates comes from a dormant category (before the
  impressions take their share), and the click
  and save logits gain ``8 x`` the share of the lifelong positive actions in the
  candidate's category: interests that return after weeks, which the last 100 actions
  miss.
* **Impressions** (``impression_len`` > 0): items shown in the last hours and not engaged
  with, mostly from two *ignored* categories per request; a share of the candidates comes
  from them, and the click and save logits lose ``3 x`` the share of the impressions in the
  candidate's category.

Both extras draw from their own random streams, so with them off every batch is the same
as before they existed.
"""

import dataclasses
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import get_worker_info, IterableDataset

from torchrec_transact.data.batch import (
    CANDIDATE_ITEM_FEATURE, IMPRESSION_ITEM_FEATURE, LIFELONG_ACTION_FEATURE, LIFELONG_ITEM_FEATURE, TransActBatch,
)
from torchrec_transact.data.kjt import (
    categorical_kjt, repeat_per_candidate, sequence_kjt, SideSequenceValues, with_side_sequences,
)
from torchrec_transact.data.tasks import CLICK, HIDE, PINTEREST_ACTIONS, SAVE

TASKS = PINTEREST_ACTIONS  # one head per action type
DENSE_FEATURES = ("log_history_length", "log_hours_since_last_action", "hide_share", "hour_sin", "hour_cos")
SPARSE_FEATURES = ("user_id", CANDIDATE_ITEM_FEATURE, "candidate_category")


def category_item_embeddings(
    num_items: int,
    num_categories: int,
    dim: int,
    noise: float = 0.3,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pretrained-style item vectors: a random centroid per category plus noise.

    The stand-in for the paper's PinSage embeddings: items of one category (``item %
    num_categories``) are near each other.

    Returns:
        torch.Tensor: [num_items, dim].

    Example::

        vectors = category_item_embeddings(100, 10, 8)
        vectors.shape  # torch.Size([100, 8])
    """
    return clustered_vectors(torch.arange(num_items) % num_categories, num_categories, dim, noise, generator)


def clustered_vectors(
    categories: torch.Tensor,
    num_categories: int,
    dim: int,
    noise: float = 0.3,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """A random centroid per category plus noise, one row per entry of ``categories``
    (what :func:`category_item_embeddings` draws, for any item-to-category map, e.g. a
    log's category column).

    Returns:
        torch.Tensor: [categories.numel(), dim].

    Example::

        vectors = clustered_vectors(torch.tensor([0, 2, 2, 1]), 3, 8)
        vectors.shape  # torch.Size([4, 8])
    """
    centroids = torch.randn(num_categories, dim, generator=generator)
    return centroids[categories] + noise * torch.randn(categories.numel(), dim, generator=generator)


def _item_in(category: np.ndarray, num_items: int, num_categories: int, rng: np.random.Generator) -> np.ndarray:
    """A random item of each entry's category (an item's category is ``item % num_categories``)."""
    return category + num_categories * rng.integers(0, num_items // num_categories, category.shape)


def _pick(choices: np.ndarray, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[R, n] entries drawn uniformly, with replacement, from each row of ``choices`` [R, m]."""
    return np.take_along_axis(choices, rng.integers(0, choices.shape[1], shape), axis=1)


def _draw(rng: np.random.Generator, weights: np.ndarray, count: int) -> np.ndarray:
    """[R, count] indices drawn from each row's categorical distribution ``weights``."""
    cumulative = weights.cumsum(axis=1)
    u = rng.random((weights.shape[0], count, 1))
    return np.minimum((u > cumulative[:, None, :]).sum(-1), weights.shape[1] - 1)


@dataclass
class SyntheticBatch(TransActBatch):
    """A :class:`TransActBatch` with the true probability behind every label.

    Args:
        label_probabilities (torch.Tensor): float [B, T].
    """

    label_probabilities: torch.Tensor = None  # type: ignore[assignment]


@dataclass
class SyntheticConfig:
    """Knobs of :class:`SyntheticActionData` (see the module docstring)."""

    num_items: int = 20_000
    num_categories: int = 100
    num_users: int = 100_000
    max_seq_len: int = 100
    mean_seq_len: float = 40.0
    candidates_per_request: int = 10
    mean_session_actions: float = 8.0
    drift: float = 0.2
    explore: float = 0.2
    hide_rate: float = 0.15
    save_rate: float = 0.25
    rabbit_hole: float = 0.5
    user_embedding_dim: int = 16
    lifelong_len: int = 0
    dormant_share: float = 0.4
    dormant_candidates: float = 0.25
    impression_len: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rabbit_hole <= 1.0:
            raise ValueError(f"rabbit_hole={self.rabbit_hole}, expected in [0, 1]")
        if self.lifelong_len < 0 or self.impression_len < 0:
            raise ValueError(f"lifelong_len={self.lifelong_len} and impression_len={self.impression_len}: expected >= 0")
        if self.num_items % self.num_categories:
            raise ValueError(
                f"num_items={self.num_items} is not a multiple of num_categories="
                f"{self.num_categories}"
            )

    @property
    def num_action_types(self) -> int:
        return len(PINTEREST_ACTIONS)

    @property
    def dense_in_features(self) -> int:
        """Dense width before the user vector."""
        return len(DENSE_FEATURES)


@dataclass
class _RequestSequence:
    """A side sequence of R requests, [R, L] arrays, most recent first, every request
    the same length."""

    keys: Tuple[str, ...]
    values: Tuple[np.ndarray, ...]
    ages: np.ndarray

    def per_candidate(self, candidates: int) -> SideSequenceValues:
        """The sequence repeated for each of a request's ``candidates`` examples."""
        R, L = self.ages.shape
        repeat = lambda a: torch.from_numpy(np.repeat(a, candidates, axis=0).reshape(-1))  # noqa: E731
        return SideSequenceValues(self.keys, tuple(repeat(v) for v in self.values),
                                  repeat(self.ages.astype(np.float32)), torch.full((R * candidates,), L))


@dataclass
class _Extras:
    """What the lifelong history and impressions change in a batch (nothing by default)."""

    candidate_category: Optional[np.ndarray] = None
    candidates: Optional[np.ndarray] = None
    engage_logit: np.ndarray = 0.0  # type: ignore[assignment]
    sides: List[_RequestSequence] = dataclasses.field(default_factory=list)


class SyntheticActionData(IterableDataset):
    """An endless (or ``num_batches`` long) stream of synthetic :class:`SyntheticBatch`.

    Batch ``i`` of the global stream is drawn from ``numpy.random.default_rng([seed,
    split, i])``.
    Rank ``r`` of ``world_size`` reads the batches ``i % world_size == r``, and its
    DataLoader workers deal those out among themselves: disjoint, and together the whole
    stream, whatever the number of workers.

    Args:
        config (SyntheticConfig): the generative process.
        batch_size (int): examples per batch; a multiple of ``candidates_per_request``
            (a batch never splits a request).
        seed (int): the user population and the stream.
        num_batches (Optional[int]): global stream length; None: endless.
        split (str): ``"train"`` or ``"eval"``: two disjoint streams of requests from the
            same users (their long-term interests and ids are shared).
        rank (int): this process's rank.
        world_size (int): number of ranks.

    Example::

        data = SyntheticActionData(SyntheticConfig(num_users=1000), batch_size=20, num_batches=2)
        batch = next(iter(data))
        batch.labels.shape  # torch.Size([20, 3])
    """

    def __init__(
        self,
        config: SyntheticConfig,
        batch_size: int,
        seed: int = 0,
        num_batches: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
    ) -> None:
        super().__init__()
        if split not in ("train", "eval"):
            raise ValueError(f"split {split!r}: expected 'train' or 'eval'")
        self.split = split
        if batch_size % config.candidates_per_request:
            raise ValueError(
                f"batch_size={batch_size} is not a multiple of candidates_per_request="
                f"{config.candidates_per_request}: a batch never splits a request"
            )
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        self.num_batches = num_batches
        self.rank = rank
        self.world_size = world_size
        rng = np.random.default_rng([seed, 1 << 30])
        c = config
        popularity = 1.0 / np.arange(1, c.num_categories + 1) ** 0.8
        popularity /= popularity.sum()
        self.user_interests = rng.choice(c.num_categories, size=(c.num_users, 3), p=popularity)
        self.user_weights = rng.dirichlet(np.ones(3), size=c.num_users)
        centroids = rng.standard_normal((c.num_categories, c.user_embedding_dim))
        self.user_vectors = (
            np.einsum("uk,ukd->ud", self.user_weights, centroids[self.user_interests])
            + 0.1 * rng.standard_normal((c.num_users, c.user_embedding_dim))
        ).astype(np.float32)
        # Dormant interests (lifelong history only), from their own stream.
        self.user_dormant = np.random.default_rng([seed, 1 << 31]).integers(0, c.num_categories, (c.num_users, 2))

    def item_embeddings(self, dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Pretrained-style item vectors for this catalogue (see ``category_item_embeddings``)."""
        c = self.config
        return category_item_embeddings(c.num_items, c.num_categories, dim, generator=generator)

    def __iter__(self) -> Iterator[SyntheticBatch]:
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        # Rank r owns batches r, r + world, r + 2 world, ...; its workers deal those out.
        stride = self.world_size * workers
        index = self.rank + self.world_size * worker_id
        while self.num_batches is None or index < self.num_batches:
            yield self.generate(index)
            index += stride

    def _interest_share(self, users: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """[R, N] interest weight of each candidate category for its request's user."""
        match = self.user_interests[users][:, None, :] == categories[:, :, None]
        return (match * self.user_weights[users][:, None, :]).sum(-1)

    def _extras(
        self, users: np.ndarray, ages: np.ndarray, candidate_category: np.ndarray, candidates: np.ndarray,
        rng: np.random.Generator,
    ) -> "_Extras":
        """The lifelong history and the impressions of R requests, the candidates they
        change, and their share of the click and save logits (see the module docstring)."""
        c = self.config
        R, N, C = candidate_category.shape[0], candidate_category.shape[1], c.num_categories
        candidate_category, candidates = candidate_category.copy(), candidates.copy()
        engage = np.zeros((R, N))
        sides: List[_RequestSequence] = []
        if c.lifelong_len > 0:
            L = c.lifelong_len
            dormant = self.user_dormant[users]  # [R, 2]
            interests = self.user_interests[users]
            kind = rng.random((R, L))
            category = np.where(
                kind < c.dormant_share, _pick(dormant, (R, L), rng),
                np.where(kind < c.dormant_share + 0.4, _pick(interests, (R, L), rng),
                         rng.integers(0, C, (R, L))))
            hides = rng.random((R, L)) < 0.05
            actions = np.where(hides, HIDE, np.where(rng.random((R, L)) < c.save_rate, SAVE, CLICK))
            items = _item_in(category, c.num_items, C, rng)
            oldest = ages.max(axis=1, initial=0.0)
            life_ages = np.sort(oldest[:, None] + rng.uniform(14 * 86400.0, 365 * 86400.0, (R, L)), axis=1)
            pick = rng.random((R, N)) < c.dormant_candidates
            candidate_category = np.where(pick, _pick(dormant, (R, N), rng), candidate_category)
            positive = actions != HIDE
            same = category[:, None, :] == candidate_category[:, :, None]  # [R, N, L]
            engage += 8.0 * (same & positive[:, None, :]).sum(-1) / L
            sides.append(_RequestSequence((LIFELONG_ACTION_FEATURE, LIFELONG_ITEM_FEATURE), (actions, items), life_ages))
        if c.impression_len > 0:
            K = c.impression_len
            ignored = rng.integers(0, C, (R, 2))
            shown_category = np.where(rng.random((R, K)) < 0.7, _pick(ignored, (R, K), rng), rng.integers(0, C, (R, K)))
            shown = _item_in(shown_category, c.num_items, C, rng)
            shown_ages = np.sort(rng.exponential(3 * 3600.0, (R, K)) + 1.0, axis=1)
            pick = rng.random((R, N)) < 0.15
            candidate_category = np.where(pick, _pick(ignored, (R, N), rng), candidate_category)
            same = shown_category[:, None, :] == candidate_category[:, :, None]
            engage -= 3.0 * same.sum(-1) / K
            sides.append(_RequestSequence((IMPRESSION_ITEM_FEATURE,), (shown,), shown_ages))
        changed = candidate_category != (candidates % C)
        candidates = np.where(changed, _item_in(candidate_category, c.num_items, C, rng), candidates)
        return _Extras(candidate_category, candidates, engage, sides)

    def generate(self, batch_index: int) -> SyntheticBatch:
        """The batch at ``batch_index`` of the global stream."""
        c = self.config
        stream = 0 if self.split == "train" else 1
        rng = np.random.default_rng([self.seed, stream, batch_index])
        R, N, L, C = self.batch_size // c.candidates_per_request, c.candidates_per_request, c.max_seq_len, c.num_categories
        users = rng.integers(0, c.num_users, R)
        interests, weights = self.user_interests[users], self.user_weights[users]

        # History, chronological (column L - 1 is the most recent action).
        lengths = np.minimum(L, np.floor(rng.exponential(c.mean_seq_len, R))).astype(np.int64)
        new_session = rng.random((R, L)) < 1.0 / c.mean_session_actions
        new_session[:, 0] = True
        change = new_session | (rng.random((R, L)) < c.drift)
        wanted = np.take_along_axis(interests, _draw(rng, weights, L), axis=1)
        explored = rng.random((R, L)) < c.explore
        fresh = np.where(explored, rng.integers(0, C, (R, L)), wanted)
        last_change = np.maximum.accumulate(np.where(change, np.arange(L), 0), axis=1)
        session_category = np.take_along_axis(fresh, last_change, axis=1)
        hides = rng.random((R, L)) < c.hide_rate
        hide_category = rng.integers(0, C, (R, L))
        category = np.where(hides, hide_category, session_category)
        actions = np.where(hides, HIDE, np.where(rng.random((R, L)) < c.save_rate, SAVE, CLICK))
        items = _item_in(category, c.num_items, C, rng)
        gaps = np.where(new_session, rng.exponential(8 * 3600.0, (R, L)), rng.exponential(60.0, (R, L)))
        # Ages: the most recent action is minutes old; older ones add the gaps after them.
        latest_age = rng.exponential(300.0, R) + 1.0
        after = np.concatenate([gaps[:, 1:], np.zeros((R, 1))], axis=1)  # gap to next action
        ages = latest_age[:, None] + np.cumsum(after[:, ::-1], axis=1)[:, ::-1]

        # Most recent first; an example of length n keeps the n most recent columns.
        actions, items, category, ages = (a[:, ::-1] for a in (actions, items, category, ages))
        valid = np.arange(L)[None, :] < lengths[:, None]
        positive = valid & (actions != HIDE)
        negative = valid & (actions == HIDE)

        # Candidates: short-term, long-term, recently hidden or random categories.
        first_positive = np.where(positive.any(1), positive.argmax(1), 0)
        recent_category = np.where(
            positive.any(1), category[np.arange(R), first_positive], rng.integers(0, C, R)
        )
        first_hide = negative.argmax(1)
        hidden_category = np.where(
            negative.any(1), category[np.arange(R), first_hide], rng.integers(0, C, R)
        )
        long_pick = np.take_along_axis(interests, _draw(rng, weights, N), axis=1)
        source = rng.choice(4, size=(R, N), p=[0.3, 0.3, 0.1, 0.3])
        candidate_category = np.select(
            [source == 0, source == 1, source == 2],
            [np.repeat(recent_category[:, None], N, 1), long_pick, np.repeat(hidden_category[:, None], N, 1)],
            rng.integers(0, C, (R, N)),
        )
        candidates = _item_in(candidate_category, c.num_items, C, rng)
        extra = _Extras()
        if c.lifelong_len > 0 or c.impression_len > 0:
            extra = self._extras(users, ages, candidate_category, candidates, np.random.default_rng([self.seed, stream, batch_index, 7]))
            candidate_category, candidates = extra.candidate_category, extra.candidates

        # Label probabilities.
        tau = 1.0 + 20.0 * (1.0 - c.rabbit_hole)
        decay = np.exp(-np.arange(L) / tau)
        same = category[:, None, :] == candidate_category[:, :, None]  # [R, N, L]
        short = (same * (positive * decay)[:, None, :]).sum(-1) / np.maximum(
            (positive * decay).sum(-1, keepdims=True), 1e-6
        )
        negative_signal = np.minimum((same * (negative * np.exp(-np.arange(L) / 10.0))[:, None, :]).sum(-1), 1.0)
        long = self._interest_share(users, candidate_category)
        logits = np.stack(
            [
                -2.5 + 4.0 * short + 2.0 * long - 3.0 * negative_signal,
                -3.0 + 3.5 * short + 2.5 * long - 3.0 * negative_signal,
                -3.5 + 4.0 * negative_signal - 1.5 * short - 1.0 * long,
            ],
            axis=-1,
        )  # [R, N, 3]
        logits[..., :2] += np.asarray(extra.engage_logit)[..., None]  # click and save (0 without extras)
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        labels = (rng.random(probabilities.shape) < probabilities).astype(np.float32)

        # Features, one example per candidate.
        B = R * N
        hours = np.where(lengths > 0, ages[:, 0] / 3600.0, 0.0)
        hide_share = negative.sum(1) / np.maximum(lengths, 1)
        hour = rng.random(R) * 2 * np.pi
        dense = np.concatenate(
            [
                np.stack([np.log1p(lengths), np.log1p(hours), hide_share, np.sin(hour), np.cos(hour)], 1),
                self.user_vectors[users],
            ],
            axis=1,
        ).astype(np.float32)
        flat_candidates = candidates.reshape(B)
        index, example_lengths = repeat_per_candidate(torch.from_numpy(lengths), torch.full((R,), N))
        sequence = sequence_kjt(
            torch.from_numpy(actions[valid])[index],
            torch.from_numpy(items[valid])[index],
            torch.from_numpy(ages[valid].astype(np.float32))[index],
            example_lengths,
            torch.from_numpy(flat_candidates),
        )
        if extra.sides:
            sequence = with_side_sequences(sequence, [side.per_candidate(N) for side in extra.sides])
        sparse = categorical_kjt(
            SPARSE_FEATURES,
            torch.from_numpy(np.stack([np.repeat(users, N), flat_candidates, candidate_category.reshape(B)], 1)),
        )
        return SyntheticBatch(
            dense_features=torch.from_numpy(np.repeat(dense, N, axis=0)),
            sparse_features=sparse,
            sequence_features=sequence,
            labels=torch.from_numpy(labels.reshape(B, 3)),
            weights=torch.ones(B),
            request_ids=torch.from_numpy(batch_index * R + np.repeat(np.arange(R), N)),
            label_probabilities=torch.from_numpy(probabilities.reshape(B, 3).astype(np.float32)),
        )
