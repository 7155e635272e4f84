"""Tags (or metadata keys) the team requires on every trace (--required-tags)."""

from __future__ import annotations

from ..model import Trace
import json

from .base import Context, Detector, Examples, confirm_with, gap_finding, jq_finding_metric


class RequiredTags(Detector):
    name = "required_tags"
    title = "required tags missing"

    def __init__(self, config):
        super().__init__(config)
        self.tags = [t.strip() for t in (config.required_tags or []) if t.strip()]
        self.missing = {t: [0, Examples()] for t in self.tags}

    def observe(self, trace, facts) -> None:
        for tag in self.tags:
            if not has_tag(trace, tag):
                m = self.missing[tag]
                m[0] += 1
                m[1].add(facts.trace_id)

    def skipped(self, ctx: Context) -> str | None:
        return None if self.tags else "no --required-tags given"

    def clean_summary(self, ctx: Context) -> str:
        return f"all {ctx.n:,} traces carry {', '.join(f'`{t}`' for t in self.tags)}"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for tag, (missing, ids) in self.missing.items():
            if not missing:
                continue
            out.append(
                gap_finding(
                    title=f"Required tag `{tag}` missing on {missing} of {ctx.n} traces",
                    names=[],
                    ids=ids,
                    confidence=95,
                    issue=f"{missing} traces carry no `{tag}` (as a tag, metadata key or the standard session/user field).",
                    impact="Traces cannot be filtered or attributed by this team-standard field.",
                    suggestion=f"Set `{tag}` on every trace (mlflow.update_current_trace(tags={{'{tag}': ...}})).",
                    metrics={"traces_missing": missing, "traces": ctx.n, "tag": tag},
                    impact_score=missing / 10,
                    kind="missing_tag",
                    confirm=confirm_with("findings", jq_finding_metric("missing_tag", None, "traces_missing",
                                                                       f".metrics.tag == {json.dumps(tag)}"),
                                         missing, "0 on new traces"),
                )
            )
        return out


def has_tag(trace: Trace, tag: str) -> bool:
    aliases = {
        "session_id": trace.session_id,
        "session": trace.session_id,
        "user_id": trace.user_id,
        "user": trace.user_id,
    }
    if aliases.get(tag):
        return True
    return bool(trace.tags.get(tag) or trace.metadata.get(tag))
