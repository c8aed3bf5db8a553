"""The whole schema's metadata: every domain package's tables."""

from auth import models as auth_models
from cards import models as cards_models
from checkout import models as checkout_models
from common import idempotency
from common.db import Base
from ledger import models as ledger_models
from members import models as members_models
from partners import models as partners_models
from programme import models as programme_models
from settlement import models as settlement_models

metadata = Base.metadata

__all__ = [
    "auth_models",
    "cards_models",
    "checkout_models",
    "idempotency",
    "ledger_models",
    "members_models",
    "metadata",
    "partners_models",
    "programme_models",
    "settlement_models",
]
