"""Text for people: shortened at a word (never mid-word or inside `code`)."""

from __future__ import annotations

import re

ELLIPSIS = "…"


def clip(text: str | None, limit: int) -> str:
    """``text`` in at most ``limit`` characters, whitespace collapsed.

    Longer text ends at the last sentence end, else the last space, before the limit, with
    an ellipsis; a cut never falls inside an inline code span (`...`) or a word.
    """
    from .redact import redact  # before the cut: half a key is not recognisable any more

    text = " ".join(redact(str(text or "")).split())
    if len(text) <= limit:
        return text
    room = max(1, limit - len(ELLIPSIS))
    head = text[: room + 1]
    # a sentence end in the second half of the room reads best
    ends = [m.end() for m in re.finditer(r"[.;:!?](?=\s)", head)]
    if ends and ends[-1] >= room // 2 and ends[-1] <= room:
        cut = ends[-1]
    else:
        cut = head.rfind(" ", 0, room + 1)
        if cut <= 0:
            cut = room
    out = text[:cut].rstrip(" ,;:")
    if out.count("`") % 2:  # inside a code span: stop before it opened
        out = out[: out.rfind("`")].rstrip(" ,;:(")
    if not out:
        out = text[:room]
    return out + ELLIPSIS
