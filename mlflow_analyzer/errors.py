"""The error hierarchy. Every failure a user can cause surfaces as one of these.

The CLI turns an ``AnalyzerError`` into one line on stderr and its ``exit_code``;
anything else is a bug and is reported as an internal error (exit 3).

    AnalyzerError            exit 1
    +-- UsageError           exit 2  bad flags or arguments
    +-- SourceError          exit 1  a tracking store cannot be reached or read
    |   +-- NotFoundError    exit 1  unknown experiment or trace id
    +-- InputError           exit 1  a malformed, truncated or non-trace file
        +-- MalformedTrace   exit 1  one trace that cannot be read (a source skips it)
"""


class AnalyzerError(Exception):
    exit_code = 1


class UsageError(AnalyzerError):
    exit_code = 2


class SourceError(AnalyzerError):
    pass


class NotFoundError(SourceError):
    pass


class InputError(AnalyzerError):
    pass


class MalformedTrace(InputError):
    """One trace that cannot be read, saying where, which trace, which field and why.

    Raised by the normalizer at the boundary; a multi-trace source skips the trace and counts
    it, a single-trace command exits with this one line. ``where`` is the file (``file:line``
    for JSONL) or the store, filled in by the source that read the document.
    """

    def __init__(self, field: str, problem: str, *, trace_id: str | None = None, where: str | None = None):
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.trace_id = trace_id
        self.where = where

    def within(self, prefix: str) -> "MalformedTrace":
        """The same problem one level up: ``prefix`` is the path of the enclosing value."""
        if not self.field:
            self.field = prefix
        elif self.field.startswith("["):
            self.field = prefix + self.field
        else:
            self.field = f"{prefix}.{self.field}"
        return self

    def at(self, where: str | None) -> "MalformedTrace":
        if where and not self.where:
            self.where = where
        return self

    def __str__(self) -> str:
        parts = []
        if self.where:
            parts.append(self.where)
        if self.trace_id:
            parts.append(f"trace {self.trace_id}")
        parts.append(f"{self.field}: {self.problem}" if self.field else self.problem)
        return ": ".join(parts)
