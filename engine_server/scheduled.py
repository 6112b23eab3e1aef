"""What the scheduler hands the model runner for one step: a sequence and how many of its
tokens to compute. Its own module so that the scheduler does not import the model runner."""

from __future__ import annotations

from dataclasses import dataclass

from triage_router.engine_server.sequence import Sequence


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int  # tokens to compute this step, from seq.num_computed_tokens on
