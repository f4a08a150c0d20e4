"""The user-facing error hierarchy.

Only ``cli.main`` maps these to exit codes; library code raises them and never exits. Any other
exception escaping to the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "MdpTrtError",
    "InputError",
    "UnsupportedGraph",
    "BackendUnavailable",
    "InfeasibleBudget",
    "VerificationFailed",
    "BudgetNotConfirmed",
    "Interrupted",
]


class MdpTrtError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug.

    The message speaks in library terms: a parameter the user set is named as the keyword
    argument between backquotes, as in "`group_size` 0 must be >= 1", and listed in
    ``parameters``, so that a front end can spell it its own way (``cli`` prints
    ``--group-size``) without parsing text it did not write: paths and quoted runtime errors in
    the message are never taken for a parameter."""

    exit_code = 1

    def __init__(self, message: str, *, parameters: tuple[str, ...] = ()):
        super().__init__(message)
        self.parameters = parameters


class InputError(MdpTrtError):
    """Bad usage or bad input: a missing file, a malformed model, a bad flag value (exit 2)."""

    exit_code = 2


class UnsupportedGraph(InputError):
    """The graph uses something the tool cannot handle at all (names the node and the fix)."""

    def __init__(self, message: str, *, node: str | None = None, op_type: str | None = None):
        where = f"node {node!r} ({op_type}): " if node else ""
        super().__init__(where + message)
        self.node = node
        self.op_type = op_type


class BackendUnavailable(InputError):
    """The requested latency backend cannot run here (missing package or device)."""


class InfeasibleBudget(MdpTrtError):
    """No plan meets the latency budget (exit 3); carries the smallest achievable latency."""

    exit_code = 3

    def __init__(self, message: str, *, min_latency: float, unit: str = "ms",
                 parameters: tuple[str, ...] = ()):
        super().__init__(message, parameters=parameters)
        self.min_latency = min_latency
        self.unit = unit


class VerificationFailed(MdpTrtError):
    """The pruned model does not compute what the masked original computes (a bug; exit 4)."""

    exit_code = 4


class BudgetNotConfirmed(MdpTrtError):
    """After every round the best plan is measured over the budget beyond the tolerance (exit 5;
    its files are written so the user can inspect it; ``--allow-over`` accepts it)."""

    exit_code = 5


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP, raised where the program was (``cli.main`` installs the
    handlers) so that every ``finally`` and staging clean-up runs as for Ctrl-C. A
    BaseException: library code that catches ``Exception`` must not swallow it."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum = signum
        self.name = name
        self.exit_code = 128 + signum
