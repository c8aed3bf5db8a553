"""Client SDK for partners and operator tools."""
