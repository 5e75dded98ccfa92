"""The node protocol: the vocabulary and the limits the control plane and a node's agent share.

Imported by both sides (standard library only: nodes have no Django), so each relay state and
each limit of the status report is defined here once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

__all__ = [
    "LAST_ERROR_CHARS",
    "LOG_LINES_KEPT",
    "RELAY_STATES",
    "REPORTED_STATES",
    "REPORT_BUDGET_BYTES",
    "REPORT_MAX_BYTES",
    "DisplayState",
    "RelayState",
    "agent_secret",
    "attach_new_log",
]


def agent_secret(node_token: str) -> str:
    """What the control plane presents to a node's agent (nudges, snapshots): derived from the
    node's token, which only the node holds. The control plane keeps it encrypted beside the
    token's hash: a copy of its database alone can neither pass as the node nor command it."""
    return hmac.new(node_token.encode(), b"rig agent requests v1", hashlib.sha256).hexdigest()


class RelayState(StrEnum):
    """Where a relay is in its life, as its node reports it.

    STARTING: process launched, no picture yet. LIVE: video frames with advancing timestamps
    reached the target within the last ``live_window`` seconds. RECONNECTING: waiting to
    retry, or retried and not live yet (also a running relay whose picture stopped). FAILED:
    rig has given up: ``failed_after`` attempts in a row never went live (a wrong key, a
    destination that now resolves inward; never for a spec that does not give up, such as a
    shared encoder and what it feeds). It tries again when ordered (restart,
    a changed destination, a new session), or as soon as a destination that was unreachable
    answers again. STOPPED: ordered stopped or removed.
    """

    STARTING = "starting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


class DisplayState(StrEnum):
    """States only the control plane shows: where no node speaks for the relay."""

    PENDING = "pending"  # wanted by the live session, not reported yet
    DISABLED = "disabled"  # the destination is switched off
    UNKNOWN = "unknown"  # its node has not reported for RIG_RELAY_REPORT_FRESH_S


# The states a node reports; and every state the API shows, in the documented order.
REPORTED_STATES: tuple[str, ...] = tuple(RelayState)
RELAY_STATES: tuple[str, ...] = (
    DisplayState.PENDING,
    *RelayState,
    DisplayState.DISABLED,
    DisplayState.UNKNOWN,
)

# The control plane takes status reports up to REPORT_MAX_BYTES (other requests: 64 KiB). An
# agent keeps each report within REPORT_BUDGET_BYTES of JSON: the relay figures always go (100
# relays with long errors are about 50 KB), log lines fill what is left, the rest goes next time.
REPORT_MAX_BYTES = 1024 * 1024
REPORT_BUDGET_BYTES = 256 * 1024
LAST_ERROR_CHARS = 300  # a relay's last error as reported (the log keeps the whole lines)
LOG_LINES_KEPT = 100  # lines of a relay's log the control plane keeps


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def attach_new_log(
    report: Any, new_log: Sequence[tuple[dict[str, Any], Sequence[str]]]
) -> list[int]:
    """Put each relay's new log lines into its entry of ``report`` (``newLog``, left out when
    there are none), oldest first,
    as long as the whole report stays within REPORT_BUDGET_BYTES. Returns how many lines of
    each relay went in: the rest waits for the next report."""
    room = REPORT_BUDGET_BYTES - _size(report)
    taken = []
    for entry, lines in new_log:
        sent: list[str] = []
        for line in lines:
            cost = _size(line) + (1 if sent else len(',"newLog":[]'))
            if cost > room:
                break
            sent.append(line)
            room -= cost
        if sent:
            entry["newLog"] = sent
        taken.append(len(sent))
    return taken
