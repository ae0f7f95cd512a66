"""Errors a user can act on. Anything raised as an `APMError` carries a one-line message meant for people:
the CLI prints it without a traceback and the app shows it in the page."""


class APMError(Exception):
    """Base class for user-facing errors."""


class InputError(APMError, ValueError):
    """A file, image or array given by the user cannot be used (wrong shape, broken, too large, ...)."""


class WeightsUnavailableError(APMError, RuntimeError):
    """Pretrained weights are not in the local cache and cannot be downloaded."""
