"""Error types that reach the user.

Library code raises these with a message that names the failing value and the fix; the command
line turns them into a one-line error and a non-zero exit status.
"""


class MicroVQAError(Exception):
    """An error caused by the user's input, configuration or environment."""


class ConfigError(MicroVQAError):
    """An invalid configuration value or command-line option."""


class SourceError(MicroVQAError):
    """A source that cannot be opened or read as a whole (one bad sample is rejected instead)."""


class MissingDependencyError(MicroVQAError, ImportError):
    """An optional package that the requested feature needs is not installed."""


class UnitError(MicroVQAError):
    """A failure confined to one work unit, such as a source file that cannot be downloaded.

    The stage finishes its other units and then fails; a rerun retries the failed units. Any
    other exception stops the stage at once (the finished units are kept either way).
    """


class DownloadError(SourceError, UnitError):
    """A file that could not be downloaded: not found, or the transfer kept failing."""
