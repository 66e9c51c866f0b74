"""Fault tests: cut connections to, and stop, private servers the tests start themselves."""
