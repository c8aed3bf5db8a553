"""The canonical statement CSV, pinned byte for byte.

Every closed statement stores ``csv_sha256``, the SHA-256 of ``statement_csv`` at the time it closed,
and anyone may re-render the statement later and check the hash. A failure here means that the CSV
now renders differently (a line description in ``settlement.netting.DESCRIPTIONS``, a header, a
column, the number or date formats, the quoting, the line endings...): every statement already
stored would no longer reproduce its hash.

Never update the pinned digest casually to make this pass. A change to the canonical CSV needs a
deliberate plan for the statements already closed (for example a CSV version kept per statement and
the old renderer kept for them); only then pin the new digest, together with that plan.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal

from settlement.documents import LineView, PaymentView, StatementView, statement_csv
from settlement.netting import LineType

# Pinned when the canonical CSV was first defined; see the module docstring before changing it.
PINNED_SHA256 = "43219db7d34f3ed6df3d5cb42a1ca1091f0e4953df048ea8a443e27288a7318f"


def golden_statement() -> StatementView:
    """A March statement of an ON_REDEMPTION partner with every kind of row the CSV has.

    Figures as ``netting.statement_figures`` computes them: prices with 7 leading decimal zeros and with
    trailing zeros, prior-period adjustments naming their original transactions, zero-priced issuance and
    breakage, a rounding line, a negative opening position and the NET row's description, which holds a
    comma (quoted).
    """
    lines = [
        LineView(1, LineType.ISSUANCE, "", "", 10_000, Decimal("0"), Decimal("0"), 0, 3),
        LineView(2, LineType.ISSUANCE_REVERSAL, "", "", 2, Decimal("0.0025"), Decimal("0.005"), 0, 1),
        LineView(3, LineType.CONSUMPTION, "", "", 3, Decimal("0.0000001"), Decimal("-0.0000003"), 0, 1),
        LineView(4, LineType.CONSUMPTION, "", "", 6_000, Decimal("0.012"), Decimal("-72"), -7_200, 12),
        LineView(5, LineType.REDEMPTION, "", "", 2, Decimal("0.0025"), Decimal("0.005"), 0, 1),
        LineView(6, LineType.REDEMPTION, "", "", 30_000, Decimal("0.0090"), Decimal("270"), 27_000, 40),
        LineView(7, LineType.BREAKAGE, "", "", 700, Decimal("0"), Decimal("0"), 0, 5),
        LineView(8, LineType.CONSUMPTION_REVERSAL, "2026-01", "T-3ZX9P", 333, Decimal("0.0123"), Decimal("4.0959"),
                 410, 2),
        LineView(9, LineType.REDEMPTION_REFUND, "2026-02", "T-7QK2M", 1_500, Decimal("0.009"), Decimal("-13.5"),
                 -1_350, 1),
        # Two half-cents rounded half-even to 0.00 each, but a cent together: the net is one cent more.
        LineView(10, LineType.ROUNDING, "", "", 0, Decimal("0"), Decimal("0"), 1, 0),
    ]  # fmt: skip
    return StatementView(
        statement_id="2026-03/partner-c/EUR", period="2026-03", period_starts_at=datetime(2026, 3, 1, tzinfo=UTC),
        period_ends_at=datetime(2026, 4, 1, tzinfo=UTC), partner_id="partner-c", partner_name="Partner C, Ltd",
        currency="EUR", opening_position_minor=-2_550, net_minor=18_861, closing_position_minor=16_311,
        net_exact=Decimal("188.6058997"), due_date=date(2026, 4, 15), item_count=64, items_sha256="a" * 64,
        csv_sha256="", closed_at=datetime(2026, 4, 1, 0, 5, tzinfo=UTC), paid_minor=0, lines=lines,
        # Payments are not part of the canonical CSV: paying a statement never changes its hash.
        payments=[PaymentView("pay-1", "2026-03/partner-c/EUR", "OUTBOUND", 10_000, date(2026, 4, 10), "BANK-1",
                              datetime(2026, 4, 10, 9, 0, tzinfo=UTC), "fin-alice")],
    )  # fmt: skip


def test_the_canonical_statement_csv_renders_exactly_as_stored_statements_were_hashed() -> None:
    content = statement_csv(golden_statement())

    assert hashlib.sha256(content).hexdigest() == PINNED_SHA256, (
        "the canonical statement CSV changed: stored statements would no longer reproduce their csv_sha256 "
        "(read this module's docstring before touching the digest). It now renders:\n" + content.decode()
    )
