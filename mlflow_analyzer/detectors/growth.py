"""Prompts growing across a session's turns: the history resent every turn."""

from __future__ import annotations

from ..review_schema import P0_COST_PER_DAY_USD
from ..stats import percentile, span_cost
from .base import (
    Context,
    Detector,
    TopK,
    confidence,
    confirm_with,
    finding,
    fired,
    fmt_tokens,
    jq_finding_metric,
    keyed,
    pct,
    plural,
    usd,
)

GROWTH_MIN_TURNS = 3
GROWTH_MIN_RISING = 0.8  # share of turn-to-turn steps that grow
GROWTH_MIN_RATIO = 2.0  # last turn's input tokens / first turn's
GROWTH_MIN_ADDED = 200  # tokens added from first to last turn: below, noise
GROWTH_MIN_SESSIONS = 2
GROWTH_P1_SHARE = 0.05  # resent history as a share of cost (or input tokens): P1 from here
MAX_TURNS_KEPT = 200  # per (session, span)


class PromptGrowth(Detector):
    name = "growth"
    title = "prompts growing across turns"

    def __init__(self, config):
        super().__init__(config)
        self.session_turns: dict[tuple, list] = keyed(list)  # (session, span) -> [(t, in, id, cost)]
        self.span_models: dict[tuple, str] = {}
        self.sessions: set = set()

    def observe(self, trace, facts) -> None:
        if not trace.session_id:
            return
        if len(self.sessions) < 100_000:
            self.sessions.add(trace.session_id)
        counted = facts.counted
        per_name: dict[tuple, tuple[int, float]] = {}  # span key -> largest input, its cost
        for span in trace.spans:
            if not (span.is_llm and span.input_tokens):
                continue
            key = (span.name, span.span_type)
            if span.model and not span.is_error and id(span) in counted:
                self.span_models.setdefault(key, span.model)
            cost, _ = span_cost(span)
            prev = per_name.get(key)
            if prev is None or span.input_tokens > prev[0]:
                per_name[key] = (span.input_tokens, cost or 0.0)
        for name, (tokens, cost) in per_name.items():
            turns = self.session_turns[(trace.session_id, name)]
            if len(turns) < MAX_TURNS_KEPT:
                turns.append((trace.request_time_ms, tokens, facts.trace_id, cost))

    def skipped(self, ctx: Context) -> str | None:
        if not self.sessions:
            return "no trace carries a session id: turns cannot be told apart"
        if not self.session_turns:
            return "no LLM call in a session records its input tokens"
        return None

    def clean_summary(self, ctx: Context) -> str:
        return f"no LLM prompt grows turn after turn in {len(self.sessions):,} sessions"

    def findings(self, ctx: Context) -> list[dict]:
        by_span: dict[tuple, dict] = {}
        for (session, key), turns in self.session_turns.items():
            if len(turns) < GROWTH_MIN_TURNS:
                continue
            turns.sort()
            tokens = [t[1] for t in turns]
            rising = sum(1 for a, b in zip(tokens, tokens[1:]) if b > a)
            if rising < GROWTH_MIN_RISING * (len(tokens) - 1):
                continue
            first, last = tokens[0], tokens[-1]
            if last < GROWTH_MIN_RATIO * max(first, 1) or last - first < GROWTH_MIN_ADDED:
                continue
            d = by_span.setdefault(key, {"sessions": 0, "first": [], "last": [], "ratios": [], "rising": [],
                                         "turns": 0, "excess_cost": 0.0, "excess_tokens": 0, "ids": TopK(),
                                         "cost": 0.0, "tokens": 0, "model": self.span_models.get(key)})
            d["sessions"] += 1
            d["first"].append(first)
            d["last"].append(last)
            d["ratios"].append(last / max(first, 1))
            d["rising"].append(rising / (len(tokens) - 1))
            d["turns"] += len(tokens)
            for _, tok, tid, cost in turns:
                if tok > 0 and cost:
                    d["excess_cost"] += cost * max(tok - first, 0) / tok
                d["excess_tokens"] += max(tok - first, 0)
                d["cost"] += cost
                d["tokens"] += tok
            d["ids"].add(last / max(first, 1), turns[-1][2])
        out = []
        total_cost = ctx.stats.get("cost_usd") or 0.0
        total_input = (ctx.stats.get("tokens") or {}).get("input") or 0
        for key, d in by_span.items():
            if d["sessions"] < GROWTH_MIN_SESSIONS and ctx.n > 3:
                continue
            name, label = key[0], ctx.label(key)
            per_day = d["excess_cost"] * ctx.per_day if ctx.per_day and d["excess_cost"] else None
            # cost share of the resent history: of spend when priced, else of input tokens
            if total_cost and d["excess_cost"]:
                share, share_of = d["excess_cost"] / total_cost, "of the sample's cost"
            else:
                share, share_of = (d["excess_tokens"] / total_input if total_input else 0.0), "of all input tokens"
            if per_day and per_day > P0_COST_PER_DAY_USD:
                priority = "P0"
            elif share >= GROWTH_P1_SHARE:
                priority = "P1"
            else:
                priority = "P2"
            model = d["model"]
            first = sorted(d["first"])
            last = sorted(d["last"])
            ratio = percentile(sorted(d["ratios"]), 50) or 0.0
            out.append(
                finding(
                    category="high_cost",
                    priority=priority,
                    confidence=confidence(d["sessions"], strong=92, base=85),
                    title=(
                        f"Prompt of {label} grows every turn, {ratio:.1f}x per session "
                        f"({fmt_tokens(percentile(first, 50))} to {fmt_tokens(percentile(last, 50))} tokens)"
                    ),
                    span_names=[name],
                    trace_ids=d["ids"].ids_desc(),
                    issue=(
                        f"In {plural(d['sessions'], 'session')} ({plural(d['turns'], 'turn')}), the input "
                        f"tokens of {label}" + (f" ({model})" if model else "")
                        + f" rise turn after turn, from a median {fmt_tokens(percentile(first, 50))} on the "
                        f"first turn to {fmt_tokens(percentile(last, 50))} on the last ({ratio:.1f}x): the "
                        "conversation history is resent each time."
                    ),
                    impact=(
                        f"The history above the first turn's size is {d['excess_tokens']:,} input tokens, "
                        f"{pct(share)} {share_of}"
                        + (f" ({usd(d['excess_cost'])})" if d["excess_cost"] else "")
                        + (f"; about {usd(per_day)}/day, {usd(per_day * 30)}/month (an estimate)" if per_day else "")
                        + ". It keeps growing with longer sessions."
                    ),
                    suggestion=(
                        "Keep a sliding window of recent turns, summarise older history, and use prompt "
                        "caching for the stable prefix; cap retrieved context per turn."
                    ),
                    metrics={
                        "sessions": d["sessions"],
                        "turns": d["turns"],
                        "span_type": key[1],
                        "first_turn_tokens_p50": percentile(first, 50),
                        "last_turn_tokens_p50": percentile(last, 50),
                        "growth_ratio_p50": round(ratio, 2),
                        "excess_tokens": d["excess_tokens"],
                        "excess_cost_usd": round(d["excess_cost"], 6),
                        "excess_share": round(share, 4),
                        "excess_share_of": "cost" if share_of.endswith("cost") else "input_tokens",
                        "cost_per_day_usd": None if per_day is None else round(per_day, 4),
                        "cost_per_month_usd": None if per_day is None else round(per_day * 30, 2),
                        "model": model,
                        "thresholds": [
                            fired("growth ratio last/first turn (p50)", ratio, ">=", GROWTH_MIN_RATIO),
                            fired("turns that grow (min share)", min(d["rising"]), ">=", GROWTH_MIN_RISING),
                            fired("sessions", d["sessions"], ">=", GROWTH_MIN_SESSIONS),
                            fired("history share for P1", share, ">=", GROWTH_P1_SHARE),
                        ],
                    },
                    impact_score=(per_day or 0) * 30 + d["sessions"] + share * 100,
                    kind="growing_prompt",
                    keys=[key],
                    confirm=confirm_with(
                        "findings", jq_finding_metric("growing_prompt", key, "excess_tokens"), d["excess_tokens"],
                        "0: no session resends a growing history",
                    ),
                )
            )
        return out
