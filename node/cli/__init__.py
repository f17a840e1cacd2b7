"""The ``derot`` command line: one module per command group (node, gov, app, attest, devnet)."""
