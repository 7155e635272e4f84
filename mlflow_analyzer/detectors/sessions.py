"""Traces without a session id while others carry one."""

from __future__ import annotations

from collections import Counter

from .base import Context, Detector, Examples, confirm_with, fired, gap_finding


class SessionIds(Detector):
    name = "sessions"
    title = "traces without a session id"

    def __init__(self, config):
        super().__init__(config)
        self.missing = 0
        self.ids = Examples()
        self.roots: Counter = Counter()

    def observe(self, trace, facts) -> None:
        if trace.session_id:
            return
        self.missing += 1
        self.ids.add(facts.trace_id)
        self.roots[trace.name or (trace.root.name if trace.root else "?")] += 1

    def skipped(self, ctx: Context) -> str | None:
        if self.missing == ctx.n:
            return "no trace carries a session id (a single-request application, or sessions not recorded)"
        return None

    def clean_summary(self, ctx: Context) -> str:
        if not self.missing:
            return f"all {ctx.n:,} traces carry a session id"
        return f"{self.missing:,} of {ctx.n:,} traces lack a session id: too few beside the others to call a gap"

    def findings(self, ctx: Context) -> list[dict]:
        missing = self.missing
        with_session = ctx.n - missing
        if not (missing and with_session >= max(3, 0.3 * ctx.n) and (missing >= 2 or ctx.n <= 3)):
            return []
        roots = ", ".join(f"`{n}`" for n, _ in self.roots.most_common(3))
        return [
            gap_finding(
                title=f"{missing} traces have no session id while {with_session} do",
                names=[n for n, _ in self.roots.most_common(3)],
                ids=self.ids,
                confidence=90,
                issue=(
                    f"{missing} of {ctx.n} traces lack mlflow.trace.session metadata although "
                    f"the others carry one; they come from {roots}."
                ),
                impact="These requests cannot be tied to their conversations: session analysis and per-user cost miss them.",
                suggestion="Set the session on every entry point: mlflow.update_current_trace(metadata={'mlflow.trace.session': session_id}).",
                metrics={"traces_without_session": missing, "traces_with_session": with_session,
                         "thresholds": [
                             fired("traces with a session id", with_session, ">=", max(3, round(0.3 * ctx.n, 1))),
                             fired("traces without", missing, ">=", 2),
                         ]},
                impact_score=missing / 10,
                kind="missing_session",
                confirm=confirm_with("stats", ".sessions.traces_without_session", missing,
                                     "0 on new traces: every request carries its session"),
            )
        ]
