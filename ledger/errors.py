"""Refusals the ledger's rules give, whoever asks: checkout, support adjustments, card feeds."""

from common.errors import FailedPrecondition


class InsufficientPoints(FailedPrecondition):
    """A spend or deduction asks for more points than the member has available (held points excluded)."""

    reason = "INSUFFICIENT_POINTS"
