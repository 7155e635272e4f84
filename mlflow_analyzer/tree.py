"""Span trees and timelines as bounded text (and JSON) for people and agents."""

from __future__ import annotations

from typing import Any

from .model import Span, Trace
from .redact import clip
from .stats import span_cost

MAX_NAME = 200  # characters of a span name shown in text


def _money(x: float | None) -> str:
    return "" if x is None else f" ${x:.4f}" if x < 1 else f" ${x:,.2f}"


def span_label(span: Span, *, errors: bool = True) -> str:
    parts = [f"{clip(span.name, MAX_NAME)} [{span.span_type}]", span.status, f"{span.duration_ms:,.1f}ms"]
    if span.children:
        parts.append(f"self {span.self_ms:,.1f}ms")
    if span.model:
        parts.append(span.model)
    if span.has_usage:
        parts.append(f"tok {span.input_tokens or 0}>{span.output_tokens or 0}")
    elif span.is_llm:
        parts.append("tok ?")
    cost, est = span_cost(span)
    if cost is not None:
        parts.append(_money(cost).strip() + ("~" if est else ""))
    if span.orphan:
        parts.append("ORPHAN(parent missing)")
    if span.cycle:
        parts.append("CYCLE(parent links loop)")
    if span.duplicate_id:
        parts.append("DUPLICATE-ID")
    text = "  ".join(parts)
    if errors and span.is_error:
        msg = clip((span.error_message or span.status_message or "").replace("\n", " "), 160)
        text += f"  !! {clip(span.error_type or 'Error', 80)}: {msg}"
    return text


def header(trace: Trace) -> str:
    bits = [
        trace.trace_id,
        trace.state,
        f"{trace.duration_ms:,.0f}ms" if trace.duration_ms is not None else "?ms",
        f"{len(trace.spans)} spans",
    ]
    if trace.total_tokens is not None:
        bits.append(f"tokens {trace.total_tokens:,}")
    if trace.cost_usd is not None:
        bits.append(f"cost ${trace.cost_usd:.4f}")
    if trace.session_id:
        bits.append(f"session {trace.session_id}")
    return "  ".join(bits)


def render_tree(
    trace: Trace, *, max_depth: int = 12, max_children: int = 25, max_spans: int = 300
) -> str:
    """An indented tree; deep or wide parts are elided with a marker saying what was cut."""
    lines = [header(trace)]
    shown = 0
    elided = 0
    # An explicit stack (no recursion: a trace may be tens of thousands of spans deep) of
    # spans to visit, as (span, prefix, last, is_root), and of marker lines, as str.
    work: list = [(root, "", i == len(trace.roots) - 1, True) for i, root in enumerate(trace.roots)]
    work.reverse()
    while work:
        item = work.pop()
        if isinstance(item, str):
            lines.append(item)
            continue
        span, prefix, last, is_root = item
        if shown >= max_spans:
            elided += 1 + _count(span.children)
            continue
        connector = "" if is_root else ("└─ " if last else "├─ ")
        lines.append(prefix + connector + span_label(span))
        shown += 1
        child_prefix = prefix + ("" if is_root else ("   " if last else "│  "))
        if span.children and span.depth + 1 > max_depth:
            n = _count(span.children)
            lines.append(child_prefix + f"└─ … {n} deeper span(s) elided (--max-depth {max_depth})")
            elided += n
            continue
        kids = span.children
        todo: list = []
        if len(kids) > max_children:
            tail_n = min(5, max(1, max_children // 2))
            head = kids[: max_children - tail_n]
            tail = kids[len(kids) - tail_n :]
            cut = kids[len(head) : len(kids) - tail_n]
            todo.extend((c, child_prefix, False, False) for c in head)
            names = sorted({clip(c.name, 60) for c in cut})
            todo.append(
                child_prefix
                + f"├─ … {len(cut)} sibling span(s) elided ({', '.join(names[:5])}"
                + (", …" if len(names) > 5 else "")
                + f"; --max-children {max_children})"
            )
            elided += sum(1 + _count(c.children) for c in cut)
            todo.extend((c, child_prefix, i == len(tail) - 1, False) for i, c in enumerate(tail))
        else:
            todo.extend((c, child_prefix, i == len(kids) - 1, False) for i, c in enumerate(kids))
        work.extend(reversed(todo))
    if elided and shown >= max_spans:
        lines.append(f"… {elided} span(s) not shown (--max-spans {max_spans})")
    return "\n".join(lines)


def _count(spans: list[Span]) -> int:
    n = 0
    stack = list(spans)
    while stack:
        s = stack.pop()
        n += 1
        stack.extend(s.children)
    return n


def render_timeline(trace: Trace, *, width: int = 60, max_spans: int = 80, name_width: int = 32) -> str:
    """An ASCII waterfall: one row per span (depth-first), bars placed on the trace's clock."""
    spans = list(trace.walk())
    if not spans:
        return header(trace) + "\n(no spans)"
    t0 = min(s.start_ns for s in spans)
    t1 = max(s.end_ns for s in spans)
    total = max(t1 - t0, 1)
    lines = [header(trace), f"{'':{name_width}} 0ms{'':{max(width - 10, 1)}}{total / 1e6:,.0f}ms"]
    for s in spans[:max_spans]:
        a = int((s.start_ns - t0) / total * width)
        b = max(a + 1, int(round((s.end_ns - t0) / total * width)))
        b = min(b, width)
        ch = "!" if s.is_error else "#" if s.is_llm else "="
        bar = " " * a + ch * (b - a) + " " * (width - b)
        label = clip("  " * min(s.depth, 8) + s.name, name_width, marker=False)
        lines.append(f"{label:{name_width}} |{bar}| {s.duration_ms:,.0f}ms" + ("  ERROR" if s.is_error else ""))
    if len(spans) > max_spans:
        lines.append(f"… {len(spans) - max_spans} more span(s) (--max-spans)")
    lines.append("legend: # LLM  = other  ! error")
    return "\n".join(lines)


def tree_json(trace: Trace, *, max_spans: int = 300) -> dict[str, Any]:
    d = trace.to_dict(io=False)
    if len(d["spans"]) > max_spans:
        d["spans_elided"] = len(d["spans"]) - max_spans
        d["spans"] = d["spans"][:max_spans]
    return d
