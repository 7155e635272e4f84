"""Render and write the review file ``reviews/{branch}/REVIEW-mlflow-{commit}.md``.

:func:`render_review` turns a stats object and a findings list (the JSON contracts in
CONTRIBUTING.md) into the markdown that :mod:`mlflow_analyzer.review_schema` defines;
:func:`write_review` writes it under a root folder together with a latency chart and a
cost-by-operation chart (PNG, matplotlib imported only there). :func:`git_context`
reads the branch and short commit of a checkout.

Costs are labelled as estimates where the stats say so: the total by ``cost_source``
("estimated" -> "(estimate)", "mixed" -> "(partly estimated)"; a true ``cost_estimated``
counts as "estimated"), each operation by its span row's ``cost_estimated`` ("(est.)").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import review_schema as S
from .errors import InputError, UsageError
from .text import clip

TABLE_ROWS = 15  # rows shown in the cost and error tables before "other"
CHART_BARS = 12

# ---- number formatting ----------------------------------------------------------------


def fmt_int(value: Any) -> str:
    return "—" if value is None else f"{int(round(value)):,}"


def fmt_usd(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value and abs(value) < 0.01:
        return f"${value:,.4f}"
    return f"${value:,.2f}"


def fmt_ms(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    return f"{value:,.1f} ms" if abs(value) < 10 else f"{value:,.0f} ms"


def fmt_pct(rate: Any) -> str:
    """A fraction 0..1 as a percentage: 0.123 -> "12.3%"."""
    return "—" if rate is None else f"{float(rate) * 100:.1f}%"


def fmt_time(value: Any) -> str:
    """ISO-8601 -> "2025-01-02 10:00:00 UTC" (raw text if it does not parse)."""
    if not value:
        return "—"
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if dt.tzinfo else "")


def iso_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return iso_now()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace(
            "+00:00", "Z"
        )
    return str(value)


def _cell(value: Any, limit: int = 120) -> str:
    """Text safe inside a markdown table cell."""
    text = clip(value, limit) if value not in (None, "") else "—"
    return text.replace("|", "\\|")


def _cost_label(stats: dict) -> str:
    """" (estimate)", " (partly estimated)" or "" for the total cost."""
    source = str(stats.get("cost_source") or "").lower()
    if source == "mixed":
        return " (partly estimated)"
    if source.startswith("estimat") or stats.get("cost_estimated") is True:
        return " (estimate)"
    return ""


def _q(value: Any) -> str:
    """A YAML scalar: JSON text is valid YAML and keeps strings strings."""
    return json.dumps(value, ensure_ascii=False)


# ---- findings -------------------------------------------------------------------------


def prepare_findings(findings: Iterable[dict]) -> tuple[list[dict], dict[str, int]]:
    """Check findings and choose the ones a review shows.

    Drops findings under the confidence floor, orders the rest by priority (stable, so
    the engine's order is kept within a priority), keeps the first ``MAX_FINDINGS`` and
    renumbers them F-001... Returns ``(kept, {"below_floor": n, "over_limit": m})``.
    Raises :class:`InputError` for a finding the schema cannot hold.
    """
    checked = []
    for i, f in enumerate(findings, 1):
        if not isinstance(f, dict):
            raise InputError(f"finding {i}: expected an object, got {type(f).__name__}")
        where = f"finding {i} ({f.get('id', '?')})"
        if f.get("category") not in S.CATEGORIES:
            raise InputError(
                f"{where}: category {f.get('category')!r} is not one of {', '.join(S.CATEGORIES)}"
            )
        if f.get("priority") not in S.PRIORITIES:
            raise InputError(f"{where}: priority {f.get('priority')!r} is not one of P0..P3")
        try:
            confidence = int(round(float(f.get("confidence"))))
        except (TypeError, ValueError):
            raise InputError(f"{where}: confidence {f.get('confidence')!r} is not a number")
        if confidence > S.CONFIDENCE_MAX:
            raise InputError(f"{where}: confidence {confidence} is over {S.CONFIDENCE_MAX}")
        for key in ("title", "issue", "impact", "suggestion"):
            if not isinstance(f.get(key), str) or not f[key].strip():
                raise InputError(f"{where}: '{key}' must be non-empty text")
        checked.append({**f, "confidence": confidence})
    above = [f for f in checked if f["confidence"] >= S.CONFIDENCE_FLOOR]
    order = list(S.PRIORITIES)
    above.sort(key=lambda f: order.index(f["priority"]))
    kept = [
        {**f, "id": S.FINDING_ID_FORMAT.format(n)}
        for n, f in enumerate(above[: S.MAX_FINDINGS], 1)
    ]
    dropped = {"below_floor": len(checked) - len(above), "over_limit": len(above) - len(kept)}
    return kept, dropped


def _safe_text(text: str) -> str:
    """Escape lines that would read as headings or separators outside code fences."""
    out, fenced = [], False
    for line in text.strip().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (line.startswith("#") or line.strip() == S.FINDING_SEPARATOR):
            line = "\\" + line
        out.append(line)
    if fenced:  # an unclosed fence would swallow the rest of the review
        out.append("```")
    return "\n".join(out)


def _label(label: str, text: str) -> list[str]:
    """``**Label**: text``; text that opens with a list or code goes on the next line."""
    text = _safe_text(text)
    if "\n" in text and re.match(r"(\d+\.|[-*]|```)\s?", text):
        return [f"**{label}**:", text]
    return [f"**{label}**: {text}"]


def _expected_savings(f: dict) -> str | None:
    if isinstance(f.get("expected_savings"), str) and f["expected_savings"].strip():
        return f["expected_savings"].strip()
    parts = []
    for key, value in (f.get("metrics") or {}).items():
        if not key.startswith("expected_saving") or value in (None, "", 0):
            continue
        if isinstance(value, str):
            parts.append(value)
        elif not isinstance(value, (int, float)):
            continue
        elif "usd" in key:
            per = "/month" if "month" in key else "/day" if "day" in key else ""
            parts.append(f"~{fmt_usd(value)}{per}")
        elif key.endswith("_ms") or "_ms_" in key:
            parts.append(f"~{fmt_ms(value)}")
        elif any(w in key for w in ("pct", "rate", "fraction", "share")):
            parts.append(f"~{fmt_pct(value)}")
        elif "token" in key:
            parts.append(f"~{fmt_int(value)} tokens")
        else:
            parts.append(f"{key}: {value}")
    return "; ".join(parts) or None


def render_finding(f: dict) -> list[str]:
    """The markdown lines of one (prepared) finding."""
    ids = [t for t in (f.get("trace_ids") or []) if t]
    trace = f"`{ids[0]}`" + (f" (+{len(ids) - 1} more)" if len(ids) > 1 else "") if ids else (
        "none cited"
    )
    code = f"`{f['code']}`" if f.get("code") else S.CODE_NOT_LOCATED
    lines = [
        f"### {f['id']}: {' '.join(f['title'].split())} ({f['priority']}, "
        f"Confidence: {f['confidence']}%)",
        "",
        f"**Category**: `{f['category']}`",
        f"**Trace**: {trace}",
        f"**Code**: {code}",
        "",
    ]
    for label, key in (("Issue", "issue"), ("Impact", "impact"), ("Suggestion", "suggestion")):
        lines += _label(label, f[key]) + [""]
    savings = _expected_savings(f)
    if savings:
        lines += _label("Expected Savings", savings) + [""]
    confirm = f.get("confirm")
    if isinstance(confirm, dict) and confirm.get("command"):
        shell = confirm.get("shell") or confirm["command"]
        tick = "``" if "`" in shell else "`"
        pad = " " if "`" in shell else ""
        lines += [f"**Confirm**: {tick}{pad}{shell}{pad}{tick}"
                  + (f" prints {_now(confirm.get('now'))} now; {confirm['goal']}" if confirm.get("goal") else ""),
                  ""]
    return lines


def _now(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}"
    return "null" if value is None else f"{value}"


def _checks(checks: list[dict]) -> list[str]:
    """The Checks table: every check that ran, found something first."""
    order = {s: i for i, s in enumerate(S.CHECK_STATUSES)}
    rows = sorted((c for c in checks if isinstance(c, dict)),
                  key=lambda c: order.get(c.get("status"), len(order)))
    out = ["| Check | Status | Summary |", "|-------|--------|---------|"]
    out += [f"| `{_cell(c.get('id'), 60)}` | {c.get('status')} | {_cell(c.get('summary'), 240)} |" for c in rows]
    return out


# ---- sections -------------------------------------------------------------------------


def _overview(stats: dict, estimate: str) -> list[str]:
    lat = stats.get("latency_ms") or {}
    tokens = stats.get("tokens") or {}
    tr = stats.get("time_range") or {}
    cost = stats.get("cost_usd")
    cost_text = "not recorded" if cost is None else fmt_usd(cost) + estimate
    errors = stats.get("error_count")
    rows = [
        ("Traces Analyzed", fmt_int(stats.get("trace_count"))),
        ("Time Range", f"{fmt_time(tr.get('start'))} to {fmt_time(tr.get('end'))}"),
        ("Total Cost", cost_text),
        *([("Cost per Day", fmt_usd(stats["cost_per_day_usd"]) + estimate)]
          if stats.get("cost_per_day_usd") is not None else []),
        ("Avg Latency", fmt_ms(lat.get("mean"))),
        ("P50 / P95 / P99 Latency",
         " / ".join(fmt_ms(lat.get(k)) for k in ("p50", "p95", "p99"))),
        ("Max Latency", fmt_ms(lat.get("max"))),
        ("Error Rate", fmt_pct(stats.get("error_rate"))
         + (f" ({fmt_int(errors)} traces)" if errors is not None else "")),
        ("Tokens", f"{fmt_int(tokens.get('total'))} (input {fmt_int(tokens.get('input'))}, "
                   f"output {fmt_int(tokens.get('output'))})"),
    ]
    return ["| Metric | Value |", "|--------|-------|"] + [f"| {k} | {_cell(v)} |" for k, v in rows]


def _cost_rows(stats: dict) -> tuple[list[dict], str]:
    """Spans that carry cost (or, failing that, tokens), biggest first, and the measure."""
    spans = [s for s in stats.get("spans") or [] if isinstance(s, dict)]
    costly = [s for s in spans if (s.get("cost_usd") or 0) > 0]
    if costly:
        return sorted(costly, key=lambda s: -s["cost_usd"]), "cost"
    tokened = [s for s in spans if (s.get("tokens_total") or 0) > 0]
    return sorted(tokened, key=lambda s: -s["tokens_total"]), "tokens"


def _cost_breakdown(stats: dict, estimate: str) -> list[str]:
    rows, measure = _cost_rows(stats)
    header = ["| Operation | Count | Tokens | Cost | % of Total |",
              "|-----------|-------|--------|------|------------|"]
    if not rows:
        return header + ["| — | 0 | 0 | — | — |", "", "_No span recorded tokens or cost._"]
    key = "cost_usd" if measure == "cost" else "tokens_total"
    total = sum(s[key] for s in rows)
    out = list(header)
    for s in rows[:TABLE_ROWS]:
        name = f"{s.get('name')} ({s['type']})" if s.get("type") else s.get("name")
        cost = fmt_usd(s.get("cost_usd"))
        if s.get("cost_estimated") and s.get("cost_usd") is not None:
            cost += " (est.)"
        out.append(f"| {_cell(name)} | {fmt_int(s.get('count'))} | {fmt_int(s.get('tokens_total'))} "
                   f"| {cost} | {fmt_pct(s[key] / total if total else None)} |")
    rest = rows[TABLE_ROWS:]
    if rest:
        out.append(
            f"| other ({len(rest)} operations) | {fmt_int(sum(s.get('count') or 0 for s in rest))} "
            f"| {fmt_int(sum(s.get('tokens_total') or 0 for s in rest))} "
            f"| {fmt_usd(sum(s.get('cost_usd') or 0 for s in rest)) if measure == 'cost' else '—'} "
            f"| {fmt_pct(sum(s[key] for s in rest) / total if total else None)} |"
        )
    notes = []
    if measure == "tokens":
        notes.append("No span recorded a cost: % of Total is the share of tokens.")
    elif estimate == " (estimate)":
        notes.append("Costs are estimates from model prices, not billed amounts.")
    elif estimate or any(s.get("cost_estimated") for s in rows):
        notes.append("Costs marked (est.) are estimates from model prices, not billed amounts.")
    return out + ([""] + [f"_{n}_" for n in notes] if notes else [])


def _error_distribution(stats: dict) -> list[str]:
    errors = sorted(
        (e for e in stats.get("errors") or [] if isinstance(e, dict)),
        key=lambda e: -(e.get("count") or 0),
    )
    header = ["| Error Type | Span | Count | % of Errors | Top Cause | Example Trace |",
              "|------------|------|-------|-------------|-----------|---------------|"]
    if not errors:
        return header + ["| none | — | 0 | — | — | — |"]
    total = sum(e.get("count") or 0 for e in errors)
    out = list(header)
    for e in errors[:TABLE_ROWS]:
        cause = _cell(e.get("message_pattern"), 100)
        if e.get("failure_mode"):
            cause += f" ({e['failure_mode']} failure, p50 {fmt_ms(e.get('p50_ms'))})"
        example = (e.get("example_trace_ids") or [None])[0]
        out.append(
            f"| {_cell(e.get('exception_type') or 'error status')} | {_cell(e.get('span_name'))} "
            f"| {fmt_int(e.get('count'))} | {fmt_pct((e.get('count') or 0) / total if total else None)} "
            f"| {cause} | {f'`{example}`' if example else '—'} |"
        )
    rest = errors[TABLE_ROWS:]
    if rest:
        n = sum(e.get("count") or 0 for e in rest)
        out.append(f"| other ({len(rest)} patterns) | — | {fmt_int(n)} "
                   f"| {fmt_pct(n / total if total else None)} | — | — |")
    return out


def _default_summary(stats: dict, findings: list[dict], dropped: dict, estimate: str) -> str:
    lat = stats.get("latency_ms") or {}
    cost = stats.get("cost_usd")
    cost_text = (
        "no recorded cost" if cost is None
        else f"{fmt_usd(cost)} in model cost{estimate}"
    )
    parts = [
        f"Analyzed {fmt_int(stats.get('trace_count') or 0)} traces: error rate "
        f"{fmt_pct(stats.get('error_rate') or 0)}, p95 latency {fmt_ms(lat.get('p95'))}, "
        f"{cost_text}."
    ]
    if findings:
        counts = ", ".join(
            f"{n} {p}" for p in S.PRIORITIES
            if (n := sum(f["priority"] == p for f in findings))
        )
        top = findings[0]
        parts.append(
            f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ({counts}); the most "
            f"urgent is {top['id']}: {' '.join(top['title'].split())}."
        )
    else:
        parts.append(f"No findings at or above {S.CONFIDENCE_FLOOR}% confidence.")
    if dropped.get("over_limit"):
        parts.append(f"{dropped['over_limit']} lower-priority findings beyond the limit of "
                     f"{S.MAX_FINDINGS} were left out.")
    if dropped.get("below_floor"):
        parts.append(f"{dropped['below_floor']} findings under {S.CONFIDENCE_FLOOR}% "
                     "confidence were left out.")
    return " ".join(parts)


def _default_recommendations(findings: list[dict]) -> list[str]:
    if not findings:
        return ["No change is called for on this evidence; keep tracing on and analyze "
                "again after the next change."]
    out = []
    for f in findings:
        first = next((ln.strip() for ln in f["suggestion"].splitlines() if ln.strip()), "")
        first = clip(re.sub(r"^(\d+\.|[-*])\s*", "", first).rstrip(":"), 200)
        out.append(f"**{f['id']}** ({f['priority']}): {first}")
    return out


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


# ---- the review -----------------------------------------------------------------------


def render_review(
    stats: dict,
    findings: list[dict],
    *,
    branch: str,
    commit: str,
    pr_number: int | None = None,
    reviewer_model: str | None = None,
    scope: str | None = None,
    summary: str | None = None,
    recommendations: str | list[str] | None = None,
    notes: str | list[str] | None = None,
    created: datetime | str | None = None,
    charts: dict[str, str] | None = None,
    checks: list[dict] | None = None,
    redaction_counts: dict[str, int] | None = None,
) -> str:
    """The review markdown.

    ``findings`` are checked, filtered and renumbered by :func:`prepare_findings`.
    ``summary`` and ``recommendations`` default to text derived from stats and findings;
    ``notes`` adds a final "Notes" section; ``checks`` (the findings' ``checks`` list) adds the
    "Checks" section after the findings. ``charts`` maps "latency"/"cost" to the
    relative link of a chart image. Raises :class:`InputError` for bad findings and
    :class:`UsageError` for a bad branch or commit.
    """
    commit = str(commit).strip().lower()
    if not S.COMMIT_RE.match(commit):
        raise UsageError(f"commit {commit!r} is not 7-40 hex digits")
    if not str(branch).strip():
        raise UsageError("branch is empty")
    if pr_number is not None and (isinstance(pr_number, bool) or not isinstance(pr_number, int)):
        raise UsageError(f"pr_number must be an integer, got {pr_number!r}")
    shown, dropped = prepare_findings(findings)
    estimate = _cost_label(stats)
    scope = scope or f"{branch} @ {commit}"
    charts = charts or {}
    count = {p: sum(f["priority"] == p for f in shown) for p in S.PRIORITIES}

    front = {
        "id": _q(S.review_id(commit)),
        "version": _q(S.SCHEMA_VERSION),
        "type": S.DOC_TYPE,
        "status": "completed",
        "created": _iso(created),
        "updated": iso_now(),
        "branch": _q(branch),
        "commit": _q(commit),
        "pr_number": "null" if pr_number is None else str(pr_number),
        "reviewer_agent": _q(S.REVIEWER_AGENT),
        "reviewer_model": "null" if reviewer_model is None else _q(reviewer_model),
        "review_type": S.REVIEW_TYPE,
        "findings_count": str(len(shown)),
        **{f"{p.lower()}_count": str(count[p]) for p in S.COUNTED_PRIORITIES},
        "generated_tasks": "[]",
        "subject": _q(f"MLflow analysis for {scope}"),
        "activeForm": _q(S.ACTIVE_FORM),
    }
    assert list(front) == list(S.FIELD_NAMES)
    lines = ["---"] + [f"{k}: {v}" for k, v in front.items()] + ["---", ""]
    lines += [f"{S.TITLE_PREFIX}{scope}", ""]

    lines += ["## Summary", "", summary or _default_summary(stats, shown, dropped, estimate), ""]
    lines += ["## Trace Overview", ""] + _overview(stats, estimate) + [""]
    if charts.get("latency"):
        lines += [f"![Latency distribution]({charts['latency']})", ""]
    lines += ["## Cost Breakdown", ""] + _cost_breakdown(stats, estimate) + [""]
    if charts.get("cost"):
        lines += [f"![Cost by operation]({charts['cost']})", ""]

    lines += ["## Findings", ""]
    if not shown:
        lines += [f"No findings at or above {S.CONFIDENCE_FLOOR}% confidence.", ""]
    for i, f in enumerate(shown):
        if i:
            lines += [S.FINDING_SEPARATOR, ""]
        lines += render_finding(f)

    if checks:
        lines += ["## Checks", "", "What each check looked for and what it found; `clean` means it ran and "
                  "found nothing, `skipped` that these traces could not show it.", ""] + _checks(checks) + [""]
    lines += ["## Error Distribution", ""] + _error_distribution(stats) + [""]
    recs = _as_list(recommendations) if recommendations else _default_recommendations(shown)
    lines += ["## Recommendations", ""]
    lines += (recs if len(recs) == 1 else [f"{n}. {r}" for n, r in enumerate(recs, 1)]) + [""]
    if notes:
        lines += ["## Notes", ""] + _as_list(notes) + [""]
    return with_redaction("\n".join(lines), redaction_counts)


def with_redaction(text: str, counts: dict | None = None) -> str:
    """The review with credentials redacted and the ``redacted`` frontmatter field set:
    the placeholders in it by type, plus ``counts`` (what else a run redacted, such as
    the tool results a headless model saw); ``null`` when redaction is off."""
    from collections import Counter

    from . import redact

    if redact.enabled():
        text = redact.redact(text)
        total = redact.count(text)
        for k, v in (counts or {}).items():
            total[k] = max(total[k], int(v))
        value = json.dumps(dict(sorted(total.items())))
    else:
        total, value = Counter(), "null"
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        return text
    field = f"{S.REDACTED_FIELD}: {value}"
    for i in range(1, end):
        if re.match(rf"^{S.REDACTED_FIELD}\s*:", lines[i]):
            lines[i] = field
            break
    else:
        lines.insert(end, field)
    return "\n".join(lines)


def write_review(
    root: str | os.PathLike,
    stats: dict,
    findings: list[dict],
    *,
    branch: str,
    commit: str,
    latencies: list[float] | None = None,
    charts: bool = True,
    **render_kwargs: Any,
) -> dict:
    """Write ``reviews/{branch_dir}/REVIEW-mlflow-{commit}.md`` under ``root``.

    With ``charts``, also writes ``latency-{commit}.png`` (a histogram of ``latencies``
    in ms when given, else bars of the stats' latency percentiles) and
    ``cost-{commit}.png`` (cost by operation, or tokens when no span has a cost) beside
    it; a chart without data is skipped. An existing review of the same commit is
    replaced but keeps its ``created`` time. Returns ``{"path", "charts",
    "findings_count"}`` with absolute paths.
    """
    from .redact import redact_value

    # Before charts and rendering clip names and messages: half a key still leaks.
    stats, findings = redact_value(stats), redact_value(findings)
    commit = str(commit).strip().lower()
    path = Path(root).resolve() / S.review_relpath(branch, commit)
    path.parent.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if charts:
        lat_path = path.parent / S.latency_chart_name(commit)
        if latency_chart(lat_path, stats, latencies):
            written["latency"] = lat_path.name
        cost_path = path.parent / S.cost_chart_name(commit)
        if cost_chart(cost_path, stats):
            written["cost"] = cost_path.name
    if render_kwargs.get("created") is None and path.exists():
        m = re.search(r"^created:\s*\"?([^\"\s]+)", path.read_text(encoding="utf-8"), re.M)
        render_kwargs["created"] = m.group(1) if m else None
    text = render_review(stats, findings, branch=branch, commit=commit, charts=written,
                         **render_kwargs)
    path.write_text(text, encoding="utf-8")
    return {
        "path": str(path),
        "charts": [str(path.parent / name) for name in written.values()],
        "findings_count": len(prepare_findings(findings)[0]),
    }


# ---- charts ---------------------------------------------------------------------------


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def latency_chart(path: str | os.PathLike, stats: dict, latencies: list[float] | None = None) -> bool:
    """Write the latency PNG; False (nothing written) when there is no latency data."""
    values = [float(v) for v in latencies or [] if v is not None]
    lat = stats.get("latency_ms") or {}
    if values:
        fig = _figure()
        ax = fig.add_subplot()
        ax.hist(values, bins=max(10, min(50, int(len(values) ** 0.5) * 2)), color="#4C72B0")
        for key, style in (("p50", "--"), ("p95", ":")):
            if lat.get(key) is not None:
                ax.axvline(lat[key], color="#C44E52", linestyle=style, label=f"{key} {fmt_ms(lat[key])}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.set_xlabel("trace latency (ms)")
        ax.set_ylabel("traces")
        ax.set_title(f"Trace latency ({len(values):,} traces)")
    else:
        bars = [(k, lat[k]) for k in ("mean", "p50", "p95", "p99", "max") if lat.get(k) is not None]
        if not bars:
            return False
        fig = _figure()
        ax = fig.add_subplot()
        ax.bar([k for k, _ in bars], [v for _, v in bars], color="#4C72B0")
        for i, (_, v) in enumerate(bars):
            ax.annotate(fmt_ms(v), (i, v), ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("ms")
        ax.set_title("Trace latency percentiles")
    fig.savefig(path, format="png")
    return True


def cost_chart(path: str | os.PathLike, stats: dict) -> bool:
    """Write the cost-by-operation PNG (tokens when no cost); False when neither exists."""
    rows, measure = _cost_rows(stats)
    if not rows:
        return False
    rows = rows[:CHART_BARS][::-1]  # biggest on top
    key = "cost_usd" if measure == "cost" else "tokens_total"
    fig = _figure()
    ax = fig.add_subplot()
    ax.barh([str(s.get("name"))[:40] for s in rows], [s[key] for s in rows], color="#55A868")
    if measure == "cost":
        est = _cost_label(stats) or (" (estimate)" if any(s.get("cost_estimated") for s in rows) else "")
        ax.set_xlabel(f"cost, USD{est}")
        ax.set_title(f"Cost by operation{est}")
    else:
        ax.set_xlabel("tokens")
        ax.set_title("Tokens by operation (no cost recorded)")
    fig.savefig(path, format="png")
    return True


# ---- git ------------------------------------------------------------------------------

#: CI variables naming the branch when the checkout is a detached HEAD.
CI_BRANCH_VARS = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME")
DETACHED = "detached"


def _git(repo_dir: str | os.PathLike, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"cannot run git: {exc}") from None


def git_context(repo_dir: str | os.PathLike = ".") -> tuple[str, str]:
    """``(branch, short_commit)`` of the checkout at ``repo_dir``.

    The short commit has 7-12 hex digits. On a detached HEAD the branch comes from the
    first set CI variable of ``CI_BRANCH_VARS``, else it is ``"detached"``. Raises
    :class:`UsageError` when ``repo_dir`` is not a git checkout with a commit.
    """
    head = _git(repo_dir, "rev-parse", "--short=7", "HEAD")
    commit = head.stdout.strip().lower()
    if head.returncode or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        msg = (head.stderr.strip().splitlines() or ["no commit"])[-1]
        raise UsageError(f"cannot read the git commit of {repo_dir}: {msg}")
    ref = _git(repo_dir, "symbolic-ref", "--short", "-q", "HEAD")
    branch = ref.stdout.strip() if ref.returncode == 0 else ""
    if not branch:
        branch = next((os.environ[v] for v in CI_BRANCH_VARS if os.environ.get(v)), DETACHED)
    return branch, commit[:12]


def git_root(repo_dir: str | os.PathLike = ".") -> str | None:
    """The top folder of the git checkout containing ``repo_dir``, or None."""
    try:
        out = _git(repo_dir, "rev-parse", "--show-toplevel")
    except UsageError:
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
