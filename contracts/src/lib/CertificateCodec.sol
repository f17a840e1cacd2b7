// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @notice A derot certificate (docs/design.md §4, version 3). Its wire form is `abi.encode(cert)` of this struct,
/// i.e. the 19-field tuple as one ABI parameter (first word 0x20), so `abi.decode(b, (Certificate))` reads it.
/// `hardware` (version 2) lists keccak256(uint8 RevocationKind ‖ id) of every hardware identity the evidence
/// was verified with, sorted ascending, at most MAX_HARDWARE (docs/revocation.md). `gpuCount` (version 3) is the
/// number of NVIDIA GPUs attested with the CPU evidence and `gpuModels` the OR of their GpuModel bits
/// (H100=1, H200=2, B100=4, B200=8, GB200=16; derot.constants.GpuModel), so a relying contract can require a GPU.
struct Certificate {
    uint8 version;
    uint256 chainId;
    address registry;
    uint64 epoch;
    bytes32 serial;
    bytes32 appId;
    uint32 keyVersion;
    uint8 keyType;
    bytes subjectKey;
    uint8 platform;
    bytes32 measurement;
    bytes32 evidenceHash;
    uint8 tcbStatus;
    uint64 notBefore;
    uint64 notAfter;
    uint64 policyBlock;
    bytes32[] hardware;
    uint8 gpuCount;
    uint32 gpuModels;
}

/// @title Strict decoder for certificates.
/// @notice Accepts exactly the canonical encodings `abi.encode(Certificate)`: the outer offset is 0x20, the
/// subjectKey offset is 0x260, the hardware offset follows the padded subjectKey, every integer fits its type,
/// hardware has at most MAX_HARDWARE entries, the length is exact and the padding is zero.
/// Anything else is refused without reverting, so verification can return a reason code.
/// The off-chain decoder (node/certs) accepts the same set: decode, re-encode, compare.
library CertificateCodec {
    uint256 private constant HEAD = 0x20; // start of the tuple
    uint256 private constant SUBJECT_KEY_OFFSET = 0x260; // 19 head words
    uint256 private constant DATA = HEAD + SUBJECT_KEY_OFFSET + 0x20; // 0x2a0: start of subjectKey bytes
    uint256 internal constant MAX_HARDWARE = 32;

    /// @notice True if `cert` does not decode but names a version other than `version` (word 1 of the tuple), so
    /// a verifier can say WRONG_VERSION for a certificate of another format instead of MALFORMED.
    function otherVersion(bytes calldata cert, uint8 version) internal pure returns (bool) {
        return cert.length >= HEAD + 0x20 && _word(cert, 0) == HEAD && _word(cert, HEAD) != version;
    }

    function decode(bytes calldata cert) internal pure returns (bool ok, Certificate memory c) {
        if (cert.length < DATA + 0x20) return (false, c);
        if (_word(cert, 0) != HEAD) return (false, c);
        uint256 v;
        (ok, v) = _uint(cert, 0, 8);
        if (!ok) return (false, c);
        c.version = uint8(v);
        c.chainId = _word(cert, HEAD + 0x20);
        (ok, v) = _uint(cert, 2, 160);
        if (!ok) return (false, c);
        c.registry = address(uint160(v));
        (ok, v) = _uint(cert, 3, 64);
        if (!ok) return (false, c);
        c.epoch = uint64(v);
        c.serial = bytes32(_word(cert, HEAD + 4 * 0x20));
        c.appId = bytes32(_word(cert, HEAD + 5 * 0x20));
        (ok, v) = _uint(cert, 6, 32);
        if (!ok) return (false, c);
        c.keyVersion = uint32(v);
        (ok, v) = _uint(cert, 7, 8);
        if (!ok) return (false, c);
        c.keyType = uint8(v);
        if (_word(cert, HEAD + 8 * 0x20) != SUBJECT_KEY_OFFSET) return (false, c);
        (ok, v) = _uint(cert, 9, 8);
        if (!ok) return (false, c);
        c.platform = uint8(v);
        c.measurement = bytes32(_word(cert, HEAD + 10 * 0x20));
        c.evidenceHash = bytes32(_word(cert, HEAD + 11 * 0x20));
        (ok, v) = _uint(cert, 12, 8);
        if (!ok) return (false, c);
        c.tcbStatus = uint8(v);
        (ok, v) = _uint(cert, 13, 64);
        if (!ok) return (false, c);
        c.notBefore = uint64(v);
        (ok, v) = _uint(cert, 14, 64);
        if (!ok) return (false, c);
        c.notAfter = uint64(v);
        (ok, v) = _uint(cert, 15, 64);
        if (!ok) return (false, c);
        c.policyBlock = uint64(v);
        (ok, v) = _uint(cert, 17, 8);
        if (!ok) return (false, c);
        c.gpuCount = uint8(v);
        (ok, v) = _uint(cert, 18, 32);
        if (!ok) return (false, c);
        c.gpuModels = uint32(v);

        uint256 len = _word(cert, DATA - 0x20);
        if (len > cert.length) return (false, c);
        uint256 padded = (len + 31) & ~uint256(31);
        if (cert.length < DATA + padded + 0x20) return (false, c);
        if (padded != len && (_word(cert, DATA + padded - 0x20) << ((len % 32) * 8)) != 0) return (false, c);
        c.subjectKey = cert[DATA:DATA + len];
        (ok, c.hardware) = _hardware(cert, SUBJECT_KEY_OFFSET + 0x20 + padded);
        return (ok, c);
    }

    /// @dev The bytes32[] at tuple offset `offset` (field 16 must point there) ending the encoding exactly.
    function _hardware(bytes calldata cert, uint256 offset) private pure returns (bool, bytes32[] memory list) {
        if (_word(cert, HEAD + 16 * 0x20) != offset) return (false, list);
        uint256 n = _word(cert, HEAD + offset);
        if (n > MAX_HARDWARE || cert.length != HEAD + offset + 0x20 + n * 0x20) return (false, list);
        list = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            list[i] = bytes32(_word(cert, HEAD + offset + 0x20 * (i + 1)));
        }
        return (true, list);
    }

    function _uint(bytes calldata cert, uint256 field, uint256 bits) private pure returns (bool, uint256) {
        uint256 v = _word(cert, HEAD + field * 0x20);
        return (v >> bits == 0, v);
    }

    function _word(bytes calldata data, uint256 offset) private pure returns (uint256 w) {
        assembly ("memory-safe") {
            w := calldataload(add(data.offset, offset))
        }
    }
}
