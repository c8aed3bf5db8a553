"""Checkout use cases: quote, earn, hold, capture, release, redeem, return, balance; exactly once."""
