"""Partners, their signing keys and their effective-dated contracts (the per-partner exchange rates)."""
