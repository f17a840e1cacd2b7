"""Devnet-only tooling: the anvil runner, the solc-js compiler, anvil governance shortcuts and the
local network orchestrator. The node runtime never imports this package (a test checks that)."""
