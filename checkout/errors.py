"""What can go wrong at checkout, each a stable reason a POS can act on."""

from common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ledger.errors import InsufficientPoints as InsufficientPoints  # checkout's refusal too


class InvalidBasket(InvalidArgument):
    reason = "INVALID_BASKET"


class InvalidPoints(InvalidArgument):
    reason = "INVALID_POINTS"


class InvalidHoldTtl(InvalidArgument):
    reason = "INVALID_HOLD_TTL"


class CurrencyMismatch(InvalidArgument):
    reason = "CURRENCY_MISMATCH"


class BasketRequired(InvalidArgument):
    reason = "BASKET_REQUIRED"


class ReceiptAlreadyEarned(AlreadyExists):
    reason = "RECEIPT_ALREADY_EARNED"


class NotACharity(FailedPrecondition):
    reason = "NOT_A_CHARITY"
    is_business_outcome = False


class TransactionLimitExceeded(FailedPrecondition):
    reason = "POINTS_PER_TRANSACTION_LIMIT_EXCEEDED"


class DailyIssuanceCapExceeded(FailedPrecondition):
    reason = "DAILY_ISSUANCE_CAP_EXCEEDED"


class BasketShareExceeded(FailedPrecondition):
    reason = "BASKET_SHARE_LIMIT_EXCEEDED"


class HoldNotFound(NotFound):
    reason = "HOLD_NOT_FOUND"


class HoldExpired(FailedPrecondition):
    reason = "HOLD_EXPIRED"


class HoldAlreadyResolved(FailedPrecondition):
    reason = "HOLD_ALREADY_RESOLVED"


class CaptureExceedsHold(FailedPrecondition):
    reason = "CAPTURE_EXCEEDS_HOLD"


class PurchaseNotFound(NotFound):
    reason = "PURCHASE_NOT_FOUND"


class ReturnExceedsPurchase(FailedPrecondition):
    reason = "RETURN_EXCEEDS_PURCHASE"


class ReceiptMemberMismatch(FailedPrecondition):
    reason = "RECEIPT_BELONGS_TO_ANOTHER_MEMBER"


class InvalidOfflineBatch(InvalidArgument):
    reason = "INVALID_OFFLINE_BATCH"


class InvalidBusinessTime(InvalidArgument):
    reason = "INVALID_BUSINESS_TIME"


class OfflineAllowanceExceeded(FailedPrecondition):
    reason = "OFFLINE_ALLOWANCE_EXCEEDED"
