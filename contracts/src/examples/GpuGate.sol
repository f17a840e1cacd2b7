// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Certificate} from "../lib/CertificateCodec.sol";

interface ICertificateVerifier {
    function verifyCertificate(bytes calldata cert, bytes calldata sig) external view returns (bool ok, uint8 reason);
}

/// @notice Example relying contract: accepts a derot certificate only if the registry verifies it (signature,
/// epoch, validity, revocations) and the app ran with at least `minGpus` attested NVIDIA GPUs, every one of a
/// model in `allowedModels` (GpuModel bits: H100=1, H200=2, B100=4, B200=8, GB200=16). A GPU derot did not
/// recognise carries bit 31, which no allowed mask holds, so it never passes a model check.
contract GpuGate {
    ICertificateVerifier public immutable registry;
    uint8 public immutable minGpus;
    uint32 public immutable allowedModels;

    error CertificateRefused(uint8 reason);
    error TooFewGpus(uint8 gpuCount, uint8 minGpus);
    error GpuModelNotAllowed(uint32 gpuModels, uint32 allowedModels);

    constructor(ICertificateVerifier registry_, uint8 minGpus_, uint32 allowedModels_) {
        registry = registry_;
        minGpus = minGpus_;
        allowedModels = allowedModels_;
    }

    /// @notice The certified app and subject key, or a revert naming why the certificate is not enough.
    function check(bytes calldata cert, bytes calldata sig) external view returns (bytes32 appId, bytes memory key) {
        (bool ok, uint8 reason) = registry.verifyCertificate(cert, sig);
        if (!ok) revert CertificateRefused(reason);
        Certificate memory c = abi.decode(cert, (Certificate));
        if (c.gpuCount < minGpus) revert TooFewGpus(c.gpuCount, minGpus);
        if (c.gpuCount > 0 && (c.gpuModels == 0 || c.gpuModels & ~allowedModels != 0)) {
            revert GpuModelNotAllowed(c.gpuModels, allowedModels);
        }
        return (c.appId, c.subjectKey);
    }
}
