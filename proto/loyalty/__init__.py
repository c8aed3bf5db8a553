"""Generated Python code for the loyalty protos (see proto/loyalty/v1/*.proto)."""
