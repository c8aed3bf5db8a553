"""The double-entry, append-only points ledger, its lots and their spending lineage."""
