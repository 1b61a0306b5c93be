"""Error types whose message is a single line naming the file and the fix; the CLI prints them plainly."""


class MkdError(Exception):
    """Base class: an expected failure the user can act on (printed without a traceback)."""


class AudioError(MkdError):
    """An audio file that cannot be decoded or holds no audio."""


class AudioTooLong(AudioError):
    """Audio longer than a limit (the server's ``--max-audio-seconds``)."""

    def __init__(self, name: str, seconds: float, limit: float):
        self.seconds, self.limit = seconds, limit
        super().__init__(
            f"{name}: {seconds:.0f} s of audio is over the {limit:g} s limit; split the audio or raise --max-audio-seconds"
        )


class ModelError(MkdError):
    """A missing, incomplete or mismatched model directory."""


class DataError(MkdError):
    """A bad manifest or data set."""


class ExportError(MkdError):
    """An export ran but failed validation or conversion (nothing is written)."""


class OutputExistsError(MkdError):
    """An output that exists and would be overwritten without --force."""


class MissingExtraError(MkdError):
    """An optional dependency is not installed: the message names the extra that installs it, literally
    (``mkdeploy[serve]``), so the suggested command fixes it."""

    def __init__(self, extra: str, what: str, missing: str, hint: str = ""):
        super().__init__(
            f"{what} needs the mkdeploy[{extra}] extra ({missing} is missing): pip install 'mkdeploy[{extra}]'" + hint
        )
