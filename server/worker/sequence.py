"""Sequences (one per view) and sequence groups (all views of one choice of one request).

A group is the unit the scheduler admits, preempts and frees. Its views advance together: every step the
engine fuses their logits into one row of scores, samples one token and appends it to every view.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

import torch

from ..worker_protocol import SamplingParams

_seq_ids = itertools.count()
_group_uids = itertools.count()


class GroupStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """One view: its own prompt tokens, the shared generated tokens, and its KV cache blocks."""

    view: str  # the decoder's name for this view ("original", "contrast", ...)
    token_ids: list[int]  # prompt + generated tokens
    num_prompt_tokens: int
    model: str = "main"  # which of the worker's models runs this view ("main" or "amateur")
    weak_rank: int | None = None  # MoE models: route every token to the expert of this rank only (scmoe)
    max_shared: int | None = None  # tokens at most that may share blocks with another view (images end it)
    lookahead: int = 0  # cache slots kept allocated past the tokens (contrastive search fills one per step)
    scratch_slot: int | None = None  # candidate rows only: the slot their one new token's keys/values go to
    images: object = None  # vision models: this view's ImageInputs, given to the forward that computes its image tokens
    num_computed_tokens: int = 0  # tokens whose keys/values are in the cache
    num_scheduled: int | None = None  # tokens the scheduler gave this view in the current step; None: the rest
    block_table: list[int] = field(default_factory=list)  # cache blocks in position order
    block_hashes: list[int] = field(default_factory=list)  # prefix hashes of its first full computed blocks
    seq_id: int = field(default_factory=lambda: next(_seq_ids))

    @property
    def num_new_tokens(self) -> int:
        """Tokens this step's forward computes for the view."""
        if self.num_scheduled is not None:
            return self.num_scheduled
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def needs_images(self) -> bool:
        """This step computes the view's image tokens (prefill, or recompute after preemption)."""
        return self.images is not None and self.num_computed_tokens <= (self.max_shared or 0)

    @classmethod
    def from_view(cls, view) -> Sequence:
        """A decoder's resolved View (`backend.resolve_views`) as a sequence with its own token list."""
        return cls(view.name, list(view.prompt_ids), len(view.prompt_ids), view.model, view.weak_rank,
                   max_shared=view.max_shared, images=view.images)


@dataclass
class SequenceGroup:
    """One choice of one request: its views, sampling settings, decoder and generated tokens."""

    group_id: str  # "<request_id>-<choice index>"
    index: int  # the choice index in the response
    seqs: list[Sequence]  # views; seqs[0] is the view whose text is generated
    sampling: SamplingParams
    decoder: object  # a decoders.Decoder instance holding this request's method state
    eos_token_ids: frozenset[int]
    max_tokens: int  # resolved: never past the model's context length
    output_token_ids: list[int] = field(default_factory=list)
    status: GroupStatus = GroupStatus.WAITING
    finish_reason: str | None = None
    generator: torch.Generator | None = None  # per-request RNG when a seed is given
    arrival_time: float = field(default_factory=time.monotonic)
    wants_prompt_logprobs: bool = False  # prompt logprobs still owed (cleared once sent)
    diagnostics: bool = False  # report how the contrast changed each token
    is_partial: bool = False  # this step computes a chunk of its prompt only: nothing is fused or sampled
    num_scratch_blocks: int = 0  # cache blocks for transient candidate rows (contrastive search)
    scratch_blocks: list[int] = field(default_factory=list)
    uid: int = field(default_factory=lambda: next(_group_uids))  # unique for the process's lifetime

    @property
    def is_finished(self) -> bool:
        return self.status is GroupStatus.FINISHED

    @property
    def num_generated(self) -> int:
        return len(self.output_token_ids)

    @property
    def reads_every_prompt_position(self) -> bool:
        """Prompt scoring reads the logits of every prompt position, contrastive search their hidden states:
        such a group computes its whole prompt in one forward, never from cached blocks."""
        return self.wants_prompt_logprobs or self.num_scratch_blocks > 0

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        for seq in self.seqs:
            seq.token_ids.append(token_id)
