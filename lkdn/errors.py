"""The root of lkdn's clear errors: :class:`LkdnError`.

Every error that lkdn raises for a bad input (options, data, checkpoints, downloads, exports, a
diverged run) derives from :class:`LkdnError` and keeps its builtin base too
(``SchemaError`` is a ``ValueError``, ``MissingExtraError`` an ``ImportError``), so callers that
catch the builtin type keep working. A command catches :class:`LkdnError` once, prints one
``error: ...`` line and exits with status 1 (:func:`lkdn.utils.run`); anything else is a bug
and keeps its traceback. This module imports nothing, so every layer may use it.
"""


class LkdnError(Exception):
    """A clear error: its message names the file, key or value at fault, and is all the user needs."""


class CommandError(LkdnError, ValueError):
    """A command's arguments name something unusable or do not fit together; the message names the option."""
