"""The package's errors: one vocabulary for every mistake a user can make, and how the CLI shows them.

Every error ebca_viz raises on purpose is an instance of :class:`EbcaVizError` and of one of the
classes below. Each class is also the builtin exception the code raised before it had a name, so
``except ValueError`` / ``pytest.raises(FileNotFoundError)`` keep working:

==========================  ==========================  ============================================
class                       also a                      raised when
==========================  ==========================  ============================================
:class:`InvalidSetting`     ``ValueError``              a setting / argument has a value that cannot
                                                        work (out of range, unknown name, conflicts)
:class:`InvalidType`        ``TypeError``               an argument has the wrong type
:class:`UnsupportedModel`   ``TypeError``, ``ValueError``  the model / pipeline / UNet cannot run the
                                                        request (architecture, channels, prediction)
:class:`MissingFile`        ``FileNotFoundError``       a file or folder the call needs is not there
:class:`RefusedFile`        ``ValueError``              a file is there but refused: corrupt, its
                                                        header or fingerprint disagrees with its
                                                        content or with the request, or it is a pickle
:class:`NonFinite`          ``ValueError``              a tensor of the sampling loop became NaN/inf
:class:`StateError`         ``RuntimeError``            the call does not fit the current state: a
                                                        trace used twice or outside its ``with``, a
                                                        second controller on the same UNet, a budget
:class:`NotFound`           ``KeyError``, ``IndexError``  a name or position asked of a result is not
                                                        in it
==========================  ==========================  ============================================

Messages name the parameter, the value and the fix. ``Class.of(param, value, fix, why=None)`` builds
that sentence: ``"steps=0: must be >= 1; fix: pass steps=1 or more"``.

Anything that is not an :class:`EbcaVizError` is a bug (ours or a library's): the command line
prints ``error: <message>`` for the first and keeps the traceback for the second
(:func:`is_user_error`). A genuine internal invariant may still raise a builtin; its ``raise`` line
is marked ``# internal invariant`` (tests/test_errors_vocabulary.py checks that every other raise in
the package uses this vocabulary).
"""
from __future__ import annotations

__all__ = ["EbcaVizError", "InvalidSetting", "InvalidType", "UnsupportedModel", "MissingFile", "RefusedFile",
           "NonFinite", "StateError", "NotFound", "EbcaVizTypeError", "is_user_error", "VOCABULARY"]


def _show(value, limit: int = 80) -> str:
    """A short readable form of ``value`` for a message (tensors and arrays by shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "dtype", None) is not None and not isinstance(value, (int, float)):
        return f"<{type(value).__name__} shape={tuple(shape)} dtype={value.dtype}>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EbcaVizError(Exception):
    """Root of the package's errors: a mistake in what the user asked for, not a bug. Raise one of the
    subclasses below (never this class itself); catch this one to handle every user error."""

    @classmethod
    def of(cls, param: str, value, fix: str, why: str | None = None):
        """The error for parameter ``param`` given ``value``: ``"param=value: why; fix: fix"``."""
        head = f"{param}={_show(value)}"
        return cls(f"{head}: {why}; fix: {fix}" if why else f"{head}; fix: {fix}")


class InvalidSetting(EbcaVizError, ValueError):
    """A setting or argument whose value cannot work: out of range, an unknown name, two settings that
    contradict each other, a prompt word that is not in the prompt. The most common class."""


class InvalidType(EbcaVizError, TypeError):
    """An argument of the wrong type (a string where a number is needed, a list of the wrong things)."""


EbcaVizTypeError = InvalidType  # the earlier name


class UnsupportedModel(EbcaVizError, TypeError, ValueError):
    """The model, pipeline or UNet cannot run the request: a transformer (DiT) pipeline, a UNet without
    cross-attention, an inpainting UNet where a text-to-image one is needed, an unknown prediction
    type. Both a ``TypeError`` and a ``ValueError`` because the code raised both for these cases."""


class MissingFile(EbcaVizError, FileNotFoundError):
    """A file or folder the call needs does not exist (weights, a result to compare with, an image)."""

    def __str__(self) -> str:  # FileNotFoundError(msg) prints msg, keep it so with errno-less calls
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class RefusedFile(EbcaVizError, ValueError):
    """A file that exists but is refused: corrupt or half-written, a result / trace / weights file
    whose header or fingerprint disagrees with its content or with what it is compared with, or
    pickled weights (never unpickled: that could run code)."""


class NonFinite(EbcaVizError, ValueError):
    """A tensor of the sampling loop became NaN or infinite; the message names the setting to lower."""


class StateError(EbcaVizError, RuntimeError):
    """The call does not fit the current state of an object: a trace used twice or read outside its
    ``with``, a loaded trace asked for its live UNet, a second controller that conflicts with one
    already installed on the UNet, a trace over its memory budget."""


class NotFound(EbcaVizError, KeyError, IndexError):
    """A name or position asked of a result or a history that is not in it (a ``KeyError`` and an
    ``IndexError``, as the lookups raised before)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


VOCABULARY: dict[type, tuple[type, ...]] = {
    InvalidSetting: (ValueError,), InvalidType: (TypeError,), UnsupportedModel: (TypeError, ValueError),
    MissingFile: (FileNotFoundError,), RefusedFile: (ValueError,), NonFinite: (ValueError,),
    StateError: (RuntimeError,), NotFound: (KeyError, IndexError),
}
"""Each class of the vocabulary and the builtins it also is."""


def is_user_error(exc: BaseException) -> bool:
    """True exactly for the package's errors (instances of :class:`EbcaVizError`): the CLI prints them
    as one line. Anything else, e.g. a ``ValueError`` raised inside diffusers or torch, is a bug and
    keeps its traceback."""
    return isinstance(exc, EbcaVizError)
