"""Loading the Edge TPU delegate (libedgetpu) through the runtime's ``load_delegate``.

``load_delegate`` raises OSError when libedgetpu is not installed and ValueError when the
library is there but no Edge TPU answers; both become :class:`AcceleratorUnavailable`
carrying a message a user can act on.
"""

from __future__ import annotations

import sys
from typing import Any

from edge_classifier.engine.runtime import Runtime

__all__ = ["EDGETPU_LIBRARY", "AcceleratorUnavailable", "library_problem", "load_edgetpu_delegate"]

EDGETPU_LIBRARY = {"linux": "libedgetpu.so.1", "darwin": "libedgetpu.1.dylib", "win32": "edgetpu.dll"}.get(
    sys.platform, "libedgetpu.so.1"
)


class AcceleratorUnavailable(Exception):
    """The delegate did not load; ``str()`` says why. Internal: callers decide what it means."""


def library_problem() -> str | None:
    """Why the Edge TPU runtime library cannot be loaded, or None when it can.

    Only ``dlopen``s the library (the same failure ``load_delegate`` gives first, OSError)
    without creating a delegate, so it opens no device: a cheap check before starting a
    worker process that would only fail the same way.
    """
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        return (f"the Edge TPU runtime {EDGETPU_LIBRARY} is not installed ({exc}); "
                "install libedgetpu1-std (see the README's troubleshooting)")
    return None


def load_edgetpu_delegate(runtime: Runtime, device: str = "") -> Any:
    """The Edge TPU delegate for ``device`` ('' for any, 'usb', 'usb:0', 'pci:0', ...)."""
    options = {"device": device} if device else {}
    try:
        return runtime.load_delegate(EDGETPU_LIBRARY, options)
    except OSError as exc:
        _disarm_half_built_delegate(exc)
        raise AcceleratorUnavailable(
            f"the Edge TPU runtime {EDGETPU_LIBRARY} is not installed ({exc.strerror or exc}); "
            "install libedgetpu1-std (see the README's troubleshooting)"
        ) from None
    except ValueError as exc:
        _disarm_half_built_delegate(exc)
        which = f"Edge TPU '{device}'" if device else "Edge TPU"
        raise AcceleratorUnavailable(
            f"no {which} found: {EDGETPU_LIBRARY} loaded but could not open the device "
            f"({str(exc).splitlines()[-1] if str(exc) else 'no detail'})"
        ) from None


def _disarm_half_built_delegate(exc: BaseException) -> None:
    """Stop the runtime's Delegate.__del__ from complaining about a failed load.

    When ``Delegate.__init__`` fails before it sets ``_library``, its ``__del__`` later
    raises AttributeError as an "unraisable" exception. The half-built object is the
    ``self`` of a frame in the traceback; giving it ``_library = None`` makes its
    ``__del__`` a no-op, which is what a delegate that never loaded should be.
    """
    error: BaseException | None = exc
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            candidate = tb.tb_frame.f_locals.get("self")
            if type(candidate).__name__ == "Delegate" and not hasattr(candidate, "_library"):
                candidate._library = None  # type: ignore[union-attr]
            tb = tb.tb_next
        error = error.__context__
