"""Refusals the ledger's rules give, whoever asks: checkout, support adjustments, card feeds."""

from common.errors import FailedPrecondition


class InsufficientPoints(FailedPrecondition):
    """A spend or deduction asks for more points than the member has available (held points excluded)."""

    reason = "INSUFFICIENT_POINTS"


class RecipientHasDebt(FailedPrecondition):
    """Points transferred to a member who owes points would go to repay the debt, not to the member:
    the transfer is refused rather than turned into a repayment nobody asked for."""

    reason = "RECIPIENT_HAS_DEBT"
