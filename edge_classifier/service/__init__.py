"""Service integration: how the daemon talks to systemd and to journald.

- :mod:`~edge_classifier.service.systemd`: ``sd_notify`` (``READY=1``, ``STATUS=``, ``RELOADING=1``,
  ``STOPPING=1``) through :class:`Notifier`, and the watchdog policy "ping only while frames really
  flow" through :class:`WatchdogGate`.
- :mod:`~edge_classifier.service.logs`: :func:`configure_logging`, which writes sd-daemon ``<N>``
  priority prefixes when stderr is the journal and a timestamped format on a terminal.

Everything here is a no-op outside systemd, so ``edge-classifier run`` behaves the same in a shell.
"""

from edge_classifier.service.logs import configure_logging
from edge_classifier.service.systemd import Notifier
from edge_classifier.service.watchdog import WatchdogGate

__all__ = ["Notifier", "WatchdogGate", "configure_logging"]
