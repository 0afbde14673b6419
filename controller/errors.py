"""Errors a user can cause, each carrying its exit code and, where known, a location."""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_FAILURE = 1  # a failure at run time, or changes refused
EXIT_BAD_INPUT = 2  # bad input or usage


@dataclass(frozen=True)
class Location:
    """Where in a file a problem sits: `file:line: field`."""

    file: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}" if self.field else where


@dataclass(frozen=True)
class Problem:
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ServeopsError(Exception):
    """A failure serveops reports to the user as a message, never as a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServeopsError):
    """The user's input is wrong: nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class ValidationFailed(BadInput):
    """One or more problems found in deployment files; each names file, line and field."""

    files = "deployment files"  # what the problems are in, for the message

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        n = len(problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in {self.files}:\n{lines}")


class Unreachable(ServeopsError):
    """The Ray dashboard or the MLflow registry could not be reached."""


class Refused(ServeopsError):
    """A change was refused (stale plan, conflict with an application serveops does not own)."""


class StalePlan(Refused):
    """The live state (or the branch) moved since the plan was made: make a new plan."""
