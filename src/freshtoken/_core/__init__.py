"""The rules, with no I/O: tokens, the clock, a credential's state, refresh policy."""
