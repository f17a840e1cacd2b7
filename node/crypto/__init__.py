"""Cryptography: BLS12-381 backend, polynomials, DKG and resharing, threshold BLS, key derivation, sealed boxes."""
