"""An expensive model on a small task: short prompts and answers on a top-tier model when the
same provider sells a much cheaper tier."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from ..stats import percentile, span_cost
import json

from .base import Context, Detector, TopK, confirm_with, finding, fired, jq_finding_metric, keyed, usd

SIMPLE_MAX_INPUT = 1000
SIMPLE_MAX_OUTPUT = 50
EXPENSIVE_RATIO = 4.0  # a same-provider tier at least this much cheaper exists


@dataclass
class _SimpleAgg:
    count: int = 0
    in_tokens: array = field(default_factory=lambda: array("d"))
    out_tokens: array = field(default_factory=lambda: array("d"))
    providers: Counter = field(default_factory=Counter)
    cost: float = 0.0
    priced: bool = False
    estimated: bool = False
    top: TopK = field(default_factory=TopK)


class ExpensiveModel(Detector):
    name = "model_choice"
    title = "top-tier models on small tasks"

    def __init__(self, config):
        super().__init__(config)
        self.simple: dict[tuple, _SimpleAgg] = keyed(_SimpleAgg)  # (span name, type, model)

    def observe(self, trace, facts) -> None:
        counted = facts.counted
        for span in trace.spans:
            # measured on counted LLM spans
            if not (span.is_llm and span.has_usage and span.model and not span.is_error and id(span) in counted):
                continue
            s = self.simple[(span.name, span.span_type, span.model)]
            s.count += 1
            s.in_tokens.append(span.input_tokens or 0)
            s.out_tokens.append(span.output_tokens or 0)
            if span.provider:
                s.providers[span.provider] += 1
            cost, est = span_cost(span)
            if cost is not None:
                s.cost += cost
                s.priced = True
                s.estimated |= est
            s.top.add(cost or 0.0, facts.trace_id)

    def skipped(self, ctx: Context) -> str | None:
        if not self.simple:
            return "no LLM call records both its model and token usage"
        return None

    def clean_summary(self, ctx: Context) -> str:
        return (
            f"no model at least {EXPENSIVE_RATIO:.0f}x pricier than a same-provider tier runs tasks "
            f"under {SIMPLE_MAX_INPUT:,} input / {SIMPLE_MAX_OUTPUT} output tokens"
        )

    def findings(self, ctx: Context) -> list[dict]:
        from .. import pricing

        out = []
        for (name, span_type, model), s in self.simple.items():
            label = ctx.label((name, span_type))
            if s.count < 3:
                continue
            alt = pricing.cheaper_alternative(model)
            if not alt:
                continue
            alt_model, ratio = alt
            if ratio < EXPENSIVE_RATIO:
                continue
            p50_in = percentile(sorted(s.in_tokens), 50) or 0
            p50_out = percentile(sorted(s.out_tokens), 50) or 0
            if p50_in > SIMPLE_MAX_INPUT or p50_out > SIMPLE_MAX_OUTPUT:
                continue
            saving = s.cost * (1 - 1 / ratio) if s.priced else None
            per_day = saving * ctx.per_day if saving is not None and ctx.per_day else None
            out.append(
                finding(
                    category="high_cost",
                    priority="P1" if (per_day or 0) * 30 >= 10 else "P2",
                    confidence=82 if s.count >= 10 else 75,
                    title=f"{label} uses {model} for a small task (~{p50_in:,.0f} tokens in, ~{p50_out:,.0f} out)",
                    span_names=[name],
                    trace_ids=s.top.ids_desc(),
                    issue=(
                        f"{label} runs on {model} with a median of {p50_in:,.0f} input and {p50_out:,.0f} "
                        f"output tokens over {s.count} calls: a short classification/extraction-sized task "
                        f"on a top-tier model. {alt_model} costs about {ratio:.0f}x less."
                    ),
                    impact=(
                        f"{usd(s.cost)} in the sample"
                        + (f", about {usd(per_day * 30)}/month could be saved" if per_day else "")
                        + (" (an estimate)." if s.estimated or per_day else ".")
                    ),
                    suggestion=(
                        f"Route this step to {alt_model} (or a fine-tuned small model) and check its "
                        "accuracy on a labelled sample before switching."
                    ),
                    metrics={
                        "calls": s.count,
                        "model": model,
                        "cheaper_model": alt_model,
                        "price_ratio": round(ratio, 2),
                        "input_tokens_p50": p50_in,
                        "output_tokens_p50": p50_out,
                        "cost_usd": round(s.cost, 6) if s.priced else None,
                        "expected_saving_usd": None if saving is None else round(saving, 6),
                        "cost_per_month_usd": None if not ctx.per_day or not s.priced else round(s.cost * ctx.per_day * 30, 2),
                        "expected_saving_usd_per_month": None if per_day is None else round(per_day * 30, 2),
                        "span_type": span_type,
                        "thresholds": [
                            fired("price ratio to the cheaper tier", ratio, ">=", EXPENSIVE_RATIO),
                            fired("input tokens p50", p50_in, "<=", SIMPLE_MAX_INPUT),
                            fired("output tokens p50", p50_out, "<=", SIMPLE_MAX_OUTPUT),
                        ],
                    },
                    impact_score=(per_day or 0) * 30,
                    kind="expensive_model_simple_task",
                    keys=[(name, span_type)],
                    confirm=confirm_with(
                        "findings",
                        jq_finding_metric("expensive_model_simple_task", (name, span_type), "calls",
                                          f".metrics.model == {json.dumps(model)}"),
                        s.count, f"0: no small task left on {model}",
                    ),
                )
            )
        return out
