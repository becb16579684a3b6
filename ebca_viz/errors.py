"""The package's own input-validation errors, and how the command line tells them from bugs.

:class:`EbcaVizError` (a ``ValueError``; :class:`EbcaVizTypeError` is also a ``TypeError``) is what
validation code raises for bad input: the command line prints it as one ``error: ...`` line. Any other
exception is a bug (ours or a library's) and keeps its traceback: :func:`is_user_error` decides.
"""
from __future__ import annotations

import linecache
import os

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class EbcaVizError(ValueError):
    """Bad input to ebca_viz (a setting, a path, a model that cannot run the request)."""


class EbcaVizTypeError(EbcaVizError, TypeError):
    """Bad input of the wrong type."""


def _raised_by_package(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by an explicit ``raise`` statement in ebca_viz's own code (its
    validation), not by a library or a failing operation inside the package."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    fname = os.path.abspath(tb.tb_frame.f_code.co_filename)
    if not fname.startswith(_PACKAGE_DIR):
        return False
    line = linecache.getline(fname, tb.tb_lineno).strip()
    # a raise that spans lines reports its first line
    return line.startswith("raise ")


def is_user_error(exc: BaseException) -> bool:
    """True for the package's validation errors: :class:`EbcaVizError`, or a ``ValueError`` /
    ``TypeError`` / ``FileNotFoundError`` raised explicitly by ebca_viz code. False for everything
    else, e.g. a ``ValueError`` raised inside diffusers or torch (a bug, not a mistake of the user)."""
    if isinstance(exc, EbcaVizError):
        return True
    return isinstance(exc, (ValueError, TypeError, FileNotFoundError)) and _raised_by_package(exc)


__all__ = ["EbcaVizError", "EbcaVizTypeError", "is_user_error"]
