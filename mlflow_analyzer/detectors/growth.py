"""Prompts growing across a session's turns: the history resent every turn."""

from __future__ import annotations

from ..review_schema import P0_COST_PER_DAY_USD
from ..stats import percentile, span_cost
from .base import Context, Detector, TopK, confidence, finding, fmt_tokens, keyed, usd

GROWTH_MIN_TURNS = 3
GROWTH_MIN_RATIO = 2.0
GROWTH_MIN_TOKENS = 3000
MAX_TURNS_KEPT = 200  # per (session, span)


class PromptGrowth(Detector):
    name = "growth"
    title = "prompts growing across turns"

    def __init__(self, config):
        super().__init__(config)
        self.session_turns: dict[tuple, list] = keyed(list)  # (session, span) -> [(t, in, id, cost)]
        self.span_models: dict[str, str] = {}
        self.sessions: set = set()

    def observe(self, trace, facts) -> None:
        if not trace.session_id:
            return
        if len(self.sessions) < 100_000:
            self.sessions.add(trace.session_id)
        counted = facts.counted
        per_name: dict[str, tuple[int, float]] = {}
        for span in trace.spans:
            if not (span.is_llm and span.input_tokens):
                continue
            if span.model and not span.is_error and id(span) in counted:
                self.span_models.setdefault(span.name, span.model)
            cost, _ = span_cost(span)
            prev = per_name.get(span.name)
            if prev is None or span.input_tokens > prev[0]:
                per_name[span.name] = (span.input_tokens, cost or 0.0)
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
        by_span: dict[str, dict] = {}
        for (session, name), turns in self.session_turns.items():
            if len(turns) < GROWTH_MIN_TURNS:
                continue
            turns.sort()
            tokens = [t[1] for t in turns]
            rising = sum(1 for a, b in zip(tokens, tokens[1:]) if b > a)
            if rising < 0.8 * (len(tokens) - 1):
                continue
            if tokens[-1] < GROWTH_MIN_TOKENS or tokens[-1] < GROWTH_MIN_RATIO * max(tokens[0], 1):
                continue
            d = by_span.setdefault(
                name, {"sessions": 0, "first": [], "last": [], "turns": 0, "excess_cost": 0.0, "ids": TopK(), "cost": 0.0,
                       "model": self.span_models.get(name)}
            )
            d["sessions"] += 1
            d["first"].append(tokens[0])
            d["last"].append(tokens[-1])
            d["turns"] += len(tokens)
            base = tokens[0]
            for _, tok, tid, cost in turns:
                if tok > 0 and cost:
                    d["excess_cost"] += cost * max(tok - base, 0) / tok
                d["cost"] += cost
            d["ids"].add(tokens[-1] / max(base, 1), turns[-1][2])
        out = []
        for name, d in by_span.items():
            if d["sessions"] < 2 and ctx.n > 3:
                continue
            per_day = d["excess_cost"] * ctx.per_day if ctx.per_day else None
            model = d["model"]
            priority = "P0" if per_day and per_day > P0_COST_PER_DAY_USD else "P1"
            first = sorted(d["first"])
            last = sorted(d["last"])
            out.append(
                finding(
                    category="high_cost",
                    priority=priority,
                    confidence=confidence(d["sessions"], strong=92, base=85),
                    title=f"Prompt of `{name}` grows every turn ({fmt_tokens(percentile(first, 50))} to {fmt_tokens(percentile(last, 50))} tokens per session)",
                    span_names=[name],
                    trace_ids=d["ids"].ids_desc(),
                    issue=(
                        f"In {d['sessions']} sessions, the input tokens of `{name}`"
                        + (f" ({model})" if model else "")
                        + f" rise turn after turn, from a median {fmt_tokens(percentile(first, 50))} on the first "
                        f"turn to {fmt_tokens(percentile(last, 50))} on the last: the whole conversation "
                        "history is resent each time."
                    ),
                    impact=(
                        f"{usd(d['excess_cost'])} of the sample's cost is history above the first turn's size"
                        + (f"; about {usd(per_day)}/day, {usd(per_day * 30)}/month (an estimate)" if per_day else "")
                        + "."
                    ),
                    suggestion=(
                        "Keep a sliding window of recent turns, summarise older history, and use prompt "
                        "caching for the stable prefix; cap retrieved context per turn."
                    ),
                    metrics={
                        "sessions": d["sessions"],
                        "turns": d["turns"],
                        "first_turn_tokens_p50": percentile(first, 50),
                        "last_turn_tokens_p50": percentile(last, 50),
                        "excess_cost_usd": round(d["excess_cost"], 6),
                        "cost_per_day_usd": None if per_day is None else round(per_day, 4),
                        "cost_per_month_usd": None if per_day is None else round(per_day * 30, 2),
                        "expected_saving_usd_per_month": None if per_day is None else round(per_day * 30 * 0.7, 2),
                        "model": model,
                    },
                    impact_score=(per_day or 0) * 30 + d["sessions"],
                    kind="growing_prompt",
                )
            )
        return out
