"""The node process: configuration, sealed storage, chain following, DKG driving, serving, metrics, lifecycle."""
