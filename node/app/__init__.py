"""SDK for TEE apps and relying parties: get evidence, derive keys, obtain and verify certificates."""
