"""Exceptions of the scoring core."""


class ScoringError(Exception):
    """Base class of every error raised by the scoring core."""


class RulesError(ScoringError):
    """A rules file is invalid; the message names the file, the rule and the field."""


class InvalidEvent(ScoringError):
    """An input record cannot be scored; `reason` is a stable code, the message is for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
