"""Assessments: feedback failing often, and judges (scorers) that errored themselves."""

from __future__ import annotations

import json

from .base import Context, Detector, confidence, confirm_with, finding, fired, gap_finding, pct

FAIL_MIN = 3  # failures
JUDGED_MIN = 5  # verdicts
FAIL_RATE_MIN = 0.10
P1_FAIL_RATE = 0.25  # P1 when even the low end of the fail rate's 95% interval reaches this


def wilson_low(failed: int, n: int, z: float = 1.96) -> float:
    """The lower bound of the Wilson score interval of a proportion."""
    if n == 0:
        return 0.0
    p = failed / n
    centre = p + z * z / (2 * n)
    spread = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - spread) / (1 + z * z / n))


class Assessments(Detector):
    name = "assessments"
    title = "failing assessments and judge errors"

    def observe(self, trace, facts) -> None:
        pass  # the statistics pass tallies assessments

    def skipped(self, ctx: Context) -> str | None:
        if not ctx.stats.get("assessments"):
            return "no feedback assessments on these traces"
        return None

    def clean_summary(self, ctx: Context) -> str:
        names = ", ".join(f"`{a['name']}`" for a in ctx.stats["assessments"])
        return (
            f"no assessment fails on {pct(FAIL_RATE_MIN)} or more of its verdicts and no judge "
            f"errored ({names})"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for a in ctx.stats.get("assessments", []):
            judged = a["passed"] + a["failed"]
            if a["failed"] >= FAIL_MIN and judged >= JUDGED_MIN and a["fail_rate"] and a["fail_rate"] >= FAIL_RATE_MIN:
                rate = a["fail_rate"]
                out.append(
                    finding(
                        category="error_pattern",
                        priority="P1" if wilson_low(a["failed"], judged) >= P1_FAIL_RATE else "P2",
                        confidence=confidence(a["failed"], strong=90, base=80),
                        title=f"Assessment `{a['name']}` fails on {pct(rate)} of judged traces",
                        span_names=[],
                        trace_ids=a["failing_trace_ids"],
                        issue=(
                            f"`{a['name']}` failed {a['failed']} of {judged} times "
                            f"(sources: {', '.join(f'{k} {v}' for k, v in a['sources'].items())}). Read the "
                            "rationales of the example traces for the common cause."
                        ),
                        impact="Users receive answers the evaluation judges wrong; the traces themselves may look healthy.",
                        suggestion="Group the failing rationales, confirm the pattern on the example traces, and fix the prompt, retrieval or tool that produces it.",
                        metrics={"assessment": a["name"], "failed": a["failed"], "judged": judged, "fail_rate": rate,
                                 "fail_rate_low_95": round(wilson_low(a["failed"], judged), 4),
                                 "thresholds": [fired("fail rate", rate, ">=", FAIL_RATE_MIN),
                                                fired("fail rate, low end of 95% interval, for P1",
                                                      wilson_low(a["failed"], judged), ">=", P1_FAIL_RATE),
                                                fired("failed verdicts", a["failed"], ">=", FAIL_MIN),
                                                fired("verdicts", judged, ">=", JUDGED_MIN)]},
                        impact_score=a["failed"],
                        kind="failing_assessment",
                        confirm=confirm_with(
                            "stats", f"[.assessments[] | select(.name == {json.dumps(a['name'])}) | .fail_rate] | first",
                            rate, f"under {pct(FAIL_RATE_MIN)}: the share of failing verdicts"),
                    )
                )
            if a["judge_errors"] >= 2 or (a["judge_errors"] and ctx.n <= 3):
                msgs = "; ".join(list(a["judge_error_messages"])[:2])
                out.append(
                    gap_finding(
                        title=f"Judge `{a['name']}` itself failed on {a['judge_errors']} traces (not trace errors)",
                        names=[],
                        ids=a["judge_error_trace_ids"],
                        confidence=93,
                        issue=(
                            f"The `{a['name']}` scorer returned an error instead of a verdict {a['judge_errors']} "
                            f"time(s) ({msgs}). The traces it judged are not failing because of this; "
                            "they are simply unevaluated."
                        ),
                        impact=f"{a['judge_errors']} traces have no `{a['name']}` verdict: quality metrics are computed on a biased subset.",
                        suggestion="Fix the judge (its model quota, prompt or parser) and re-run the evaluation on these traces.",
                        metrics={"assessment": a["name"], "judge_errors": a["judge_errors"], "judged_ok": judged,
                                 "thresholds": [fired("judge errors", a["judge_errors"], ">=", 2)]},
                        impact_score=a["judge_errors"] / 10,
                        kind="judge_error",
                        confirm=confirm_with(
                            "stats", f"[.assessments[] | select(.name == {json.dumps(a['name'])}) | .judge_errors] | first",
                            a["judge_errors"], "0 on a new evaluation run"),
                    )
                )
        return out
