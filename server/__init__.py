"""Transport and wiring: gRPC servicers, interceptors, config, the composition root and the CLI."""
