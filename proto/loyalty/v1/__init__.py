"""loyalty.v1: generated messages and gRPC stubs. Do not edit; run `make proto`."""
