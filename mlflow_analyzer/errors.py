"""The error hierarchy. Every failure a user can cause surfaces as one of these.

The CLI turns an ``AnalyzerError`` into one line on stderr and its ``exit_code``;
anything else is a bug and is reported as an internal error (exit 3).

    AnalyzerError            exit 1
    +-- UsageError           exit 2  bad flags or arguments
    +-- SourceError          exit 1  a tracking store cannot be reached or read
    |   +-- NotFoundError    exit 1  unknown experiment or trace id
    +-- InputError           exit 1  a malformed, truncated or non-trace file
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
