"""LLM spans without token usage or without a model name."""

from __future__ import annotations

from .base import Context, Detector, Examples, confirm_with, fired, gap_finding, jq_finding_metric, keyed


class _Tally:
    __slots__ = ("missing", "total", "ids")

    def __init__(self):
        self.missing = 0
        self.total = 0
        self.ids = Examples()


class LlmUsage(Detector):
    name = "llm_usage"
    title = "LLM spans without token usage or model"

    def __init__(self, config):
        super().__init__(config)
        self.no_usage: dict[str, _Tally] = keyed(_Tally)
        self.no_model: dict[str, _Tally] = keyed(_Tally)

    def observe(self, trace, facts) -> None:
        tid = facts.trace_id
        for span in trace.spans:
            if not span.is_llm or span.is_error:
                continue
            key = (span.name, span.span_type)
            nu = self.no_usage[key]
            nu.total += 1
            if not span.has_usage and not any(c.has_usage for c in span.children):
                nu.missing += 1
                nu.ids.add(tid)
            nm = self.no_model[key]
            nm.total += 1
            if not span.model:
                nm.missing += 1
                nm.ids.add(tid)

    def skipped(self, ctx: Context) -> str | None:
        if not self.no_usage:
            return "no successful LLM span to check"
        return None

    def clean_summary(self, ctx: Context) -> str:
        n = sum(t.total for t in self.no_usage.values())
        return f"all {n:,} successful LLM spans carry token usage and a model name"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for key, t in self.no_usage.items():
            if t.missing == 0 or (t.missing < 2 and ctx.n > 3):
                continue
            name, label = key[0], ctx.label(key)
            out.append(
                gap_finding(
                    title=f"LLM span {label} records no token usage ({t.missing} of {t.total} calls)",
                    names=[name],
                    ids=t.ids,
                    confidence=95,
                    issue=(
                        f"{t.missing} of {t.total} {label} LLM spans carry no token usage "
                        "(no mlflow.chat.tokenUsage, gen_ai.usage.* or llm.token_count.*), so their "
                        "tokens and cost are invisible to MLflow and to this analysis."
                    ),
                    impact="Cost and token totals are understated; prompt growth or expensive calls here cannot be seen.",
                    suggestion=(
                        "Enable the provider's MLflow autolog (mlflow.anthropic/openai.autolog()) or set "
                        "the usage on the span: span.set_attribute('mlflow.chat.tokenUsage', "
                        "{'input_tokens': ..., 'output_tokens': ..., 'total_tokens': ...})."
                    ),
                    metrics={"spans_without_usage": t.missing, "llm_spans": t.total, "span_type": key[1],
                             "thresholds": [fired("successful LLM spans without usage", t.missing, ">=", 2)]},
                    impact_score=t.missing,
                    kind="llm_without_usage",
                    keys=[key],
                    confirm=confirm_with("findings", jq_finding_metric("llm_without_usage", key, "spans_without_usage"),
                                         t.missing, "0: every successful call records its token usage"),
                )
            )
        for key, t in self.no_model.items():
            if t.missing == 0 or (t.missing < 2 and ctx.n > 3):
                continue
            name, label = key[0], ctx.label(key)
            if key in self.no_usage and self.no_usage[key].missing == t.missing:
                continue  # same spans: the usage finding covers it
            out.append(
                gap_finding(
                    title=f"LLM span {label} records no model name ({t.missing} of {t.total} calls)",
                    names=[name],
                    ids=t.ids,
                    confidence=90,
                    issue=f"{t.missing} of {t.total} {label} spans have no mlflow.llm.model (or gen_ai.request.model).",
                    impact="Cost cannot be priced per model and model changes cannot be compared.",
                    suggestion="Set mlflow.llm.model and mlflow.llm.provider on the span (autolog does this).",
                    metrics={"spans_without_model": t.missing, "llm_spans": t.total, "span_type": key[1],
                             "thresholds": [fired("successful LLM spans without a model", t.missing, ">=", 2)]},
                    impact_score=t.missing / 2,
                    kind="llm_without_model",
                    keys=[key],
                    confirm=confirm_with("findings", jq_finding_metric("llm_without_model", key, "spans_without_model"),
                                         t.missing, "0: every call records its model"),
                )
            )
        return out
