"""Hazardous materials: arithmetic that is variable-time or works on points without subgroup checks.

Only the DKG's batched commitment checks (:mod:`batch`) and polynomial/Lagrange helpers (:mod:`poly`)
live here. Callers must read each module's invariants: nothing in this package is safe on secret
scalars in a timing-observable setting, or on untrusted points outside the documented projection.
"""
