"""One error tree. An error's class decides a task's fate; a subclass docstring is its default message."""

from __future__ import annotations


class CrossdockError(Exception):
    """Something went wrong in crossdock."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- delivery and source errors: connectors raise these, the engine alone maps them ---------------


class DeliveryError(CrossdockError):
    """A source or target call did not succeed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: seconds the remote side asked us to wait (Retry-After), if any
        self.retry_after = retry_after
        #: method, url, status code, duration, response excerpt: shown in the export log
        self.details = details or {}


class TransientError(DeliveryError):
    """A temporary failure (timeout, connection refused, 5xx, 429): it may succeed if tried again."""


class PermanentError(DeliveryError):
    """A failure that trying again will not fix (4xx, invalid response, transform error)."""


# --- record-level outcomes at import or export --------------------------------------------------


class RecordFiltered(CrossdockError):
    """A filter step dropped the record."""


class RecordRejected(CrossdockError):
    """The record failed validation or a transform step."""


# --- configuration and usage errors: exit code 2 ------------------------------------------------


class ConfigError(CrossdockError):
    """The project configuration is invalid."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.detail}"
        return f"{where}: {self.detail}"


class ConfigErrors(CrossdockError):
    """The project configuration has errors."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.message for e in errors))


class StepConfigError(CrossdockError):
    """A transformer step or expression is invalid.

    ``path`` is the key path inside the step list (e.g. ``(2, "set", "value")``) so the config loader can turn it
    into a file:line reference.
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        self.path = path
        super().__init__(message)


class UsageError(CrossdockError):
    """The command was called wrongly."""


# --- task actions --------------------------------------------------------------------------------


class TransitionRefused(CrossdockError):
    """That status change is not allowed."""


class TaskNotFound(CrossdockError):
    """No task has that id."""


class SourceError(CrossdockError):
    """The source could not be read; the run stopped and no partial batch was written."""


# --- the database ----------------------------------------------------------------------------------


class StoreUnavailable(CrossdockError):
    """The database cannot be used right now (unreachable, restarting, full or locked); try again later.

    Stores raise it instead of their driver's error, so the engine can wait the outage out without knowing the
    backend: nothing that was not committed is lost, and whatever was committed stays.
    """

    @property
    def no_space(self) -> bool:
        """The disk is full: a person has to free space, so a run should not wait, and every try would write into
        the little space left (the reserve that lets the run record why it failed)."""
        return any(text in self.message for text in _NO_SPACE)


#: how the stores' drivers say the disk is full
_NO_SPACE = ("database or disk is full", "No space left on device", "could not extend file")


def describe_error(exc: BaseException) -> str:
    """One line for a person: our errors say what they are; others get their type, and their cause if it adds one."""
    if isinstance(exc, CrossdockError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in line:
        line += f" (caused by {type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return line
