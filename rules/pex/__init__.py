"""pex:<env>: the env's pip requirements as a reproducible PEX."""
