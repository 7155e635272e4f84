"""Independent calls run one after another: consecutive tool/retriever siblings of distinct
kinds, each starting right after the previous one ended, that could run concurrently.

They are reported only when the traces show no dependence between them:

* no data dependence: no value of an earlier call's outputs appears in a later call's inputs;
* no control dependence: a later call still runs when an earlier one failed (if the earlier
  one never failed, this was not seen, and the confidence says so), and its presence does
  not follow the earlier one's result (it runs whenever the earlier one succeeded).

Only chains on the critical path count toward the saving: a chain running alongside longer
work would not shorten the request.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..model import Span
from ..stats import percentile
from .base import (
    Context,
    Detector,
    TopK,
    confidence,
    confirm_with,
    finding,
    fired,
    jq_stat_span,
    ms,
    plural,
    stat_row,
)

SEQ_MAX_GAP_MS = 50.0  # siblings starting this soon after the previous one ended
SEQ_MIN_SHARE = 0.10  # of the parent's occurrences, unless seen in many traces
PARALLELIZABLE_TYPES = frozenset({"TOOL", "RETRIEVER"})
SEQ_MIN_SAVING_MS = 150.0
CONDITIONAL_MAX_MISSING = 0.05  # a later call missing after this share of the earlier one's successes: conditional
MAX_KINDS_PER_PARENT = 24  # distinct tool kinds per parent occurrence tracked for dependence
UNSEEN_CONFIDENCE_CAP = 80  # the earlier calls never failed: control dependence not observed


@dataclass
class _SeqAgg:
    parent: tuple
    keys: tuple
    traces: int = 0
    critical_traces: int = 0
    saving_ms: array = field(default_factory=lambda: array("d"))  # per trace, 0 when off the critical path
    total_ms: array = field(default_factory=lambda: array("d"))
    top: TopK = field(default_factory=TopK)


@dataclass
class _ParentAgg:
    """How the parallelizable children of one parent kind behave across its occurrences."""

    occurrences: int = 0
    ok: Counter = field(default_factory=Counter)  # child key -> occurrences where it succeeded
    ok_with: Counter = field(default_factory=Counter)  # (X, Y) -> X succeeded and Y ran too
    failed: Counter = field(default_factory=Counter)  # X -> occurrences where X failed
    failed_then: Counter = field(default_factory=Counter)  # (X, Y) -> X failed and Y still ran after it


def _key(span: Span) -> tuple:
    return (span.name, span.span_type)


class SequentialCalls(Detector):
    name = "parallelism"
    title = "independent calls run one after another"

    def __init__(self, config):
        super().__init__(config)
        self.sequences: dict[tuple, _SeqAgg] = {}
        self.parents: dict[tuple, _ParentAgg] = {}

    def observe(self, trace, facts) -> None:
        tid = facts.trace_id
        for parent in facts.parents:
            kids = parent.children
            tools = [c for c in kids if c.span_type in PARALLELIZABLE_TYPES]
            pkey = _key(parent)
            p = self.parents.get(pkey)
            if p is None:
                p = self.parents[pkey] = _ParentAgg()
            p.occurrences += 1
            if tools:
                self._tally(p, tools)
            if len(tools) < 2:
                continue
            values: dict[int, set[str]] = {}  # decoded outputs, once per span
            chain: list[Span] = []
            for c in kids:  # in start order; any other sibling in between breaks a chain
                if c.span_type not in PARALLELIZABLE_TYPES or c.is_error:
                    self._flush(pkey, chain, tid, facts)
                    chain = []
                    continue
                if chain:
                    prev = chain[-1]
                    gap_ms = (c.start_ns - prev.end_ns) / 1e6
                    if (
                        0 <= gap_ms <= SEQ_MAX_GAP_MS
                        and _key(c) not in {_key(x) for x in chain}
                        and not any(_depends(c, x, values) for x in chain)
                    ):
                        chain.append(c)
                        continue
                    self._flush(pkey, chain, tid, facts)
                chain = [c]
            self._flush(pkey, chain, tid, facts)

    def _tally(self, p: _ParentAgg, tools: list[Span]) -> None:
        """Which tool kinds ran after which, after a success and after a failure."""
        first: dict[tuple, Span] = {}
        for c in tools:
            first.setdefault(_key(c), c)
        kinds = list(first.items())[:MAX_KINDS_PER_PARENT]
        for x, xs in kinds:
            if xs.is_error:
                p.failed[x] += 1
                for y, ys in kinds:
                    if y != x and ys.start_ns >= xs.end_ns - 1_000_000:  # ran after x had failed
                        p.failed_then[(x, y)] += 1
            else:
                p.ok[x] += 1
                for y, _ in kinds:
                    if y != x:
                        p.ok_with[(x, y)] += 1

    def _flush(self, pkey: tuple, chain: list[Span], tid: str, facts) -> None:
        if len(chain) < 2:
            return
        total = sum(c.duration_ms for c in chain)
        saving = total - max(c.duration_ms for c in chain)
        if saving < SEQ_MIN_SAVING_MS:
            return
        on_path = any(id(c) in facts.critical for c in chain)
        key = (pkey, tuple(_key(c) for c in chain))
        agg = self.sequences.get(key)
        if agg is None:
            agg = self.sequences[key] = _SeqAgg(pkey, key[1])
        agg.traces += 1
        agg.critical_traces += on_path
        agg.saving_ms.append(saving if on_path else 0.0)
        agg.total_ms.append(total)
        agg.top.add(saving if on_path else 0.0, tid)

    def clean_summary(self, ctx: Context) -> str:
        return (
            "no tool or retriever calls run back to back without depending on each other "
            f"(saving at least {ms(SEQ_MIN_SAVING_MS)})"
        )

    def _dependence(self, s: _SeqAgg) -> tuple[str | None, list[str], list[str]]:
        """(why the chain is dependent or None, calls seen failing with the later ones still
        running, calls never seen failing)."""
        p = self.parents[s.parent]
        seen, unseen = [], []
        for i, x in enumerate(s.keys):
            for y in s.keys[i + 1 :]:
                if p.failed[x] and not p.failed_then[(x, y)]:
                    return (f"`{y[0]}` never runs after `{x[0]}` fails ({plural(p.failed[x], 'failure')} seen)",
                            seen, unseen)
                if p.ok[x] and p.ok_with[(x, y)] < (1 - CONDITIONAL_MAX_MISSING) * p.ok[x]:
                    missing = p.ok[x] - p.ok_with[(x, y)]
                    return (f"`{y[0]}` does not follow every successful `{x[0]}` (missing in {missing} "
                            f"of {p.ok[x]}): it depends on `{x[0]}`'s result or on something else",
                            seen, unseen)
            if i < len(s.keys) - 1:
                (seen if p.failed[x] else unseen).append(x[0])
        return None, seen, unseen

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        # Keep the longest chain per parent that recurs; drop sub-chains of a reported one.
        items = sorted(self.sequences.values(), key=lambda s: (-len(s.keys), -s.traces))
        reported: list[_SeqAgg] = []
        for s in items:
            parent_n = self.parents[s.parent].occurrences
            if s.traces < 2 and ctx.n > 3:
                continue
            if parent_n and s.traces / parent_n < SEQ_MIN_SHARE and s.traces < 20:
                continue
            if any(r.parent == s.parent and set(s.keys) <= set(r.keys) for r in reported):
                continue
            savings = sorted(s.saving_ms)
            totals = sorted(s.total_ms)
            mean_saving = sum(savings) / len(savings)
            if mean_saving < SEQ_MIN_SAVING_MS:
                continue
            why, seen, unseen = self._dependence(s)
            if why:
                continue  # the traces show they depend on each other
            reported.append(s)
            names = ", ".join(ctx.label(k) for k in s.keys)
            parent = ctx.label(s.parent)
            saved_total_ms = sum(savings)
            conf = confidence(s.traces, strong=90, base=80)
            evidence = (
                f" none takes another's outputs as input, and each later call runs whenever the "
                f"earlier ones succeed"
            )
            if seen:
                evidence += f"; the later calls still ran after {', '.join(f'`{n}`' for n in seen)} failed"
            if unseen:
                conf = min(conf, UNSEEN_CONFIDENCE_CAP)
                evidence += (
                    f". {', '.join(f'`{n}`' for n in unseen)} never failed in these traces, so whether the "
                    f"later calls need {'it' if len(unseen) == 1 else 'them'} to succeed was not seen"
                )
            out.append(
                finding(
                    category="latency_issue",
                    priority="P1" if mean_saving >= 500 else "P2",
                    confidence=conf,
                    title=f"{len(s.keys)} independent calls under {parent} run one after another",
                    span_names=[k[0] for k in s.keys] + [s.parent[0]],
                    trace_ids=s.top.ids_desc(),
                    issue=(
                        f"Under {parent}, {names} run sequentially (each starts when the previous "
                        f"ends) in {plural(s.traces, 'trace')} of {parent_n:,} occurrences;"
                        + evidence + "."
                    ),
                    impact=(
                        f"Together they take p50 {ms(percentile(totals, 50))}; run concurrently they "
                        f"would take about the longest one: ~{ms(mean_saving)} saved per trace "
                        f"({ms(saved_total_ms)} over the sample"
                        + ("" if s.critical_traces == s.traces else
                           f"; counted only in the {s.critical_traces} traces where they were on the critical path")
                        + ")."
                    ),
                    suggestion=(
                        "Run them concurrently (asyncio.gather, a thread pool, or parallel tool calls "
                        "in the agent framework), keeping the tracing context for each."
                    ),
                    metrics={
                        "traces": s.traces,
                        "parent_occurrences": parent_n,
                        "critical_path_traces": s.critical_traces,
                        "sequential_p50_ms": round(percentile(totals, 50) or 0, 1),
                        "expected_saving_ms_mean": round(mean_saving, 1),
                        "expected_saving_ms_total": round(saved_total_ms, 1),
                        "failures_seen": seen,
                        "never_failed": unseen,
                        "thresholds": [
                            fired("gap between calls ms", SEQ_MAX_GAP_MS, "<=", SEQ_MAX_GAP_MS),
                            fired("saving per trace ms", mean_saving, ">=", SEQ_MIN_SAVING_MS),
                            fired("traces", s.traces, ">=", 2),
                        ],
                    },
                    impact_score=mean_saving * s.traces / 1000,
                    kind="sequential_independent_calls",
                    keys=list(s.keys) + [s.parent],
                    confirm=confirm_with(
                        "stats", jq_stat_span(s.parent, "p50_ms"), stat_row(ctx, s.parent).get("p50_ms"),
                        f"down by about {ms(mean_saving)}: the p50 duration of {parent}",
                    ),
                )
            )
        return out


def _values(text: Any, out: set[str], depth: int = 0) -> None:
    """Distinctive leaf values of a decoded JSON value (for data-flow checks)."""
    if depth > 6 or len(out) > 200:
        return
    if isinstance(text, dict):
        for v in text.values():
            _values(v, out, depth + 1)
    elif isinstance(text, list):
        for v in text[:50]:
            _values(v, out, depth + 1)
    elif isinstance(text, str):
        s = text.strip()
        if len(s) >= 4 and s.lower() not in ("true", "false", "none", "null"):
            out.add(s[:200])
    elif isinstance(text, (int, float)) and not isinstance(text, bool) and abs(text) >= 1000:
        out.add(str(text))


def _depends(later: Span, earlier: Span, cache: dict[int, set[str]]) -> bool:
    """Does ``later`` take something ``earlier`` produced? (Then they cannot run together.)"""
    if not earlier.outputs_json or not later.inputs_json:
        return False
    vals = cache.get(id(earlier))
    if vals is None:
        vals = cache[id(earlier)] = set()
        _values(earlier.outputs, vals)
    if not vals:
        return False
    inputs = later.inputs_json
    return any(v in inputs or json.dumps(v)[1:-1] in inputs for v in vals)
