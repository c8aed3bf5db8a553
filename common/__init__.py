"""Shared kernel: error root, clock, database engine, unit of work."""
