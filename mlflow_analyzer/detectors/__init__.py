"""The detectors, one module each, in the order their findings are listed before ranking.

Adding a detector: write ``detectors/<name>.py`` with a :class:`~.base.Detector` subclass
(``observe`` each trace, then ``findings``), and add it to :data:`REGISTRY` below.
See CONTRIBUTING.md, "Adding a detector".
"""

from __future__ import annotations

from .assessments import Assessments
from .base import Config, Context, Detector, TraceFacts
from .code_gaps import CodeGaps
from .cost import CostConcentration
from .errors import ErrorPatterns
from .growth import PromptGrowth
from .latency import SlowSpans
from .llm_usage import LlmUsage
from .model_choice import ExpensiveModel
from .orphans import OrphanSpans
from .parallelism import SequentialCalls
from .redundancy import DuplicateCalls
from .required_tags import RequiredTags
from .retries import Retries
from .sessions import SessionIds
from .span_graph import SpanGraph
from .tail_latency import TailLatency
from .untraced_time import UntracedTime

REGISTRY: tuple[type[Detector], ...] = (
    ErrorPatterns,
    Retries,
    SlowSpans,
    TailLatency,
    SequentialCalls,
    DuplicateCalls,
    PromptGrowth,
    ExpensiveModel,
    CostConcentration,
    LlmUsage,
    UntracedTime,
    OrphanSpans,
    SpanGraph,
    SessionIds,
    RequiredTags,
    Assessments,
    CodeGaps,
)

__all__ = ["REGISTRY", "Config", "Context", "Detector", "TraceFacts"]
