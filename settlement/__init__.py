"""Settlement: periods, statements and netting through the operator (built in the settlement issue)."""
