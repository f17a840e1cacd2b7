"""Attestation: evidence parsers and verifiers (TDX, SGX, SEV-SNP, NVIDIA GPU, devnet roots) and the policy engine."""
