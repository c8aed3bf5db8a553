"""Members and the identifiers (phone, email, member number) that find them at checkout."""
