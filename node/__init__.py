"""derot: a decentralized root of trust for TEEs.

Sub-packages, one concern each (see docs/design.md §2):
``crypto`` (BLS12-381, DKG, threshold BLS, key derivation), ``attest`` (evidence verifiers and policy),
``chain`` (contracts client), ``certs`` (certificates), ``net`` (gRPC), ``service`` (the node process),
``app`` (SDK for TEE apps and relying parties), ``cli`` (the ``derot`` command).
"""

__version__ = "0.1.0"
