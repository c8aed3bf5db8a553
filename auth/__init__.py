"""Signed-token authentication for partners and operator staff."""
