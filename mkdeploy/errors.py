"""Error types whose message is a single line naming the file and the fix; the CLI prints them plainly."""


class MkdError(Exception):
    """Base class: an expected failure the user can act on (printed without a traceback)."""


class AudioError(MkdError):
    """An audio file that cannot be decoded or holds no audio."""


class ModelError(MkdError):
    """A missing, incomplete or mismatched model directory."""


class DataError(MkdError):
    """A bad manifest or data set."""


class OutputExistsError(MkdError):
    """An output that exists and would be overwritten without --force."""
