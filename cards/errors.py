"""Errors of the card integration, each with a stable reason."""

from __future__ import annotations

from common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied


class NotACardIssuer(PermissionDenied):
    reason = "NOT_A_CARD_ISSUER"


class InvalidCardToken(InvalidArgument):
    reason = "INVALID_CARD_TOKEN"


class InvalidCardItem(InvalidArgument):
    reason = "INVALID_CARD_ITEM"


class CardTokenAlreadyLinked(FailedPrecondition):
    reason = "CARD_TOKEN_ALREADY_LINKED"


class CardLinkNotFound(NotFound):
    reason = "CARD_LINK_NOT_FOUND"


class CardNotLinked(FailedPrecondition):
    reason = "CARD_NOT_LINKED"


class CardItemConflict(FailedPrecondition):
    """The same item key arrived again with different content: the first delivery stands."""

    reason = "CARD_ITEM_CONFLICT"
    is_business_outcome = False


class CardCurrencyMismatch(FailedPrecondition):
    reason = "CARD_CURRENCY_MISMATCH"


class ReversalWindowClosed(FailedPrecondition):
    reason = "REVERSAL_WINDOW_CLOSED"


class ReversalExceedsClearing(FailedPrecondition):
    reason = "REVERSAL_EXCEEDS_CLEARING"


class MerchantAlreadyMapped(AlreadyExists):
    reason = "MERCHANT_ALREADY_MAPPED"


class MerchantNotFound(NotFound):
    reason = "CARD_MERCHANT_NOT_FOUND"
