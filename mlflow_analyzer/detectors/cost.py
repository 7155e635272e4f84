"""One span dominating spend: half the cost or more, at a P0 daily rate."""

from __future__ import annotations

from ..review_schema import P0_COST_PER_DAY_USD
from ..stats import span_cost
from .base import Context, Detector, TopK, confirm_with, finding, fired, jq_stat_span, keyed, pct, usd

DOMINANT_SHARE = 0.5


class CostConcentration(Detector):
    name = "cost"
    title = "spans dominating spend"

    def __init__(self, config):
        super().__init__(config)
        self.top: dict[str, TopK] = keyed(TopK)

    def observe(self, trace, facts) -> None:
        counted = facts.counted
        for span in trace.spans:
            if span.is_llm and span.has_usage and span.model and not span.is_error and id(span) in counted:
                cost, _ = span_cost(span)
                self.top[(span.name, span.span_type)].add(cost or 0.0, facts.trace_id)

    def skipped(self, ctx: Context) -> str | None:
        if not ctx.stats.get("cost_usd"):
            return "no cost recorded or priced"
        if not ctx.per_day:
            return "the sample covers under an hour: no daily rate"
        return None

    def clean_summary(self, ctx: Context) -> str:
        return (
            f"no span takes {pct(DOMINANT_SHARE)} of spend at over {usd(P0_COST_PER_DAY_USD)}/day"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        total = ctx.stats.get("cost_usd") or 0.0
        if not (total and ctx.per_day):
            return out
        for s in ctx.stats["spans"]:
            key = (s["name"], s["type"])
            label = ctx.label(key)
            cost = s.get("cost_usd") or 0.0
            per_day = cost * ctx.per_day
            if cost / total < DOMINANT_SHARE or per_day < P0_COST_PER_DAY_USD:
                continue
            out.append(
                finding(
                    category="high_cost",
                    priority="P0",
                    confidence=90,
                    title=f"{label} costs {usd(per_day)}/day ({pct(cost / total)} of spend)",
                    span_names=[s["name"]],
                    trace_ids=self.top[key].ids_desc() if key in self.top else [],
                    issue=(
                        f"{label} ({', '.join(s.get('models') or []) or 'unknown model'}) "
                        f"used {s['tokens_total']:,} tokens over {s['count']} calls, "
                        f"{usd(cost)} in the sample."
                    ),
                    impact=f"About {usd(per_day)}/day, {usd(per_day * 30)}/month at the observed rate (an estimate).",
                    suggestion="Trim prompts (retrieved context, history), cap output tokens, cache repeated prompts (prompt caching), or route easy requests to a cheaper model.",
                    metrics={
                        "cost_usd": round(cost, 6),
                        "share_of_cost": round(cost / total, 4),
                        "cost_per_day_usd": round(per_day, 4),
                        "cost_per_month_usd": round(per_day * 30, 2),
                        "tokens": s["tokens_total"],
                        "calls": s["count"],
                        "span_type": s["type"],
                        "thresholds": [
                            fired("share of cost", cost / total, ">=", DOMINANT_SHARE),
                            fired("cost per day USD", per_day, ">=", P0_COST_PER_DAY_USD),
                        ],
                    },
                    impact_score=per_day,
                    kind="cost_concentration",
                    keys=[key],
                    confirm=confirm_with("stats", jq_stat_span(key, "cost_usd"), s.get("cost_usd"),
                                         "down: the span's cost over a sample of the same size"),
                )
            )
        return out
