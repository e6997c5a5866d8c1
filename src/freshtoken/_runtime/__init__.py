"""What freshtoken runs on, below the wire and the stores: the flight host (one event loop in
one daemon thread, with a few worker threads) and the connections to token endpoints it holds
(pooled, kept alive, capped per issuer). It imports nothing of freshtoken but ``errors``."""
