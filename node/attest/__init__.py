"""Attestation: evidence parsers and verifiers (TDX, SGX, SEV-SNP, NVIDIA GPU, devnet roots) and the policy engine.

Entry points (import the submodules; this package imports nothing heavy):

- ``derot.attest.verify.verify_evidence(evidence, trust, at=None) -> Claims``
- ``derot.attest.evidence.Evidence`` (``encode``/``decode``, protobuf ``derot.v1.Evidence``)
- ``derot.attest.trust.TrustConfig`` (``production_defaults(...)`` / ``devnet(roots)``)
- ``derot.attest.policy.PolicyEngine.default(...).decide(claims, snapshot, request) -> PolicyVerdict``
- ``derot.attest.binding.RequestBinding`` (report_data of a request), ``derot.attest.devnet`` (devnet roots/TEEs)

Modules, one concern each: ``errors`` (exception types and reason codes), ``claims``, ``evidence``,
``intel_quote`` (DCAP quote parser), ``intel`` (dcap-qvl verification), ``intel_dcap`` (independent
Python DCAP verifier for quotes dcap-qvl refuses by its own policy), ``collateral`` (PCCS, cache,
bundles), ``sev_snp``, ``nvidia_gpu``, ``devnet``, ``trust``, ``verify``, ``binding``, ``replay``,
``policy``, ``snapshot`` (governance input).
"""
