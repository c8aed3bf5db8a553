"""gRPC servicers: convert the request, call one service function, convert the result."""
