// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @title BLS12-381 signature verification over the EIP-2537 precompiles.
/// @notice Signatures are G1 points, public keys G2 points, both in the EIP-2537 affine encoding
/// (each base-field element left-padded to 64 bytes: G1 = 128 bytes, G2 = 256 bytes).
/// Hashing to G1 follows RFC 9380, suite BLS12381G1_XMD:SHA-256_SSWU_RO_, for 32-byte messages:
/// expand_message_xmd over the SHA-256 precompile (128 bytes), two field elements reduced mod p with the
/// MODEXP precompile (base^1 mod p), MAP_FP_TO_G1 on each (the precompile also clears the cofactor, and
/// clear_cofactor is linear, so the sum equals RFC 9380's clear_cofactor(Q0 + Q1)), then G1ADD.
/// The code works in one scratch buffer above the free-memory pointer, so a verification allocates nothing.
library BLS12381 {
    /// @dev Precompiles get all the remaining gas (no stipend: the registry cannot be upgraded, and a fixed
    /// stipend would turn every valid signature into a refusal after a repricing). EIP-2537 precompiles burn
    /// what they get when they refuse an input, so a refused signature costs the caller 63/64 of its gas;
    /// that is the caller's gas, and an eth_call has plenty. Today's prices (Pectra, unchanged in Osaka:
    /// PAIRING_CHECK 32,600·k + 37,700; G2MSM k=1 22,500) are only a lower bound: with less than that
    /// left the call reverts with InsufficientGas instead of answering.
    uint256 private constant PAIRING2_PRICE = 102_900;
    uint256 private constant G2MSM1_PRICE = 22_500;

    uint256 internal constant G1_SIZE = 128;
    uint256 internal constant G2_SIZE = 256;

    error InsufficientGas();
    error PrecompileFailed();

    /// @notice RFC 9380 hash_to_curve to G1 (suite BLS12381G1_XMD:SHA-256_SSWU_RO_) of a 32-byte message.
    /// @return point the EIP-2537 encoding (128 bytes) of the hashed point.
    function hashToG1(bytes32 message, bytes memory dst) internal view returns (bytes memory point) {
        point = new bytes(G1_SIZE);
        uint256 out;
        uint256 scratch;
        assembly ("memory-safe") {
            out := add(point, 0x20)
            scratch := mload(0x40)
        }
        _hashToG1(out, scratch, message, dst);
    }

    /// @notice Checks e(sig, G2) == e(H(message), publicKey).
    /// @param sig 128-byte EIP-2537 G1 point (length checked by the caller).
    /// @param publicKey 256-byte EIP-2537 G2 point, already known to be a valid non-identity subgroup point.
    /// @return wellFormed false when the precompile refuses sig (not on the curve, not in the subgroup,
    ///         non-canonical field element or padding).
    /// @return valid true when the pairing equation holds.
    function verify(bytes calldata sig, bytes memory publicKey, bytes32 message, bytes memory dst)
        internal
        view
        returns (bool wellFormed, bool valid)
    {
        // buffer: [sig 128][-G2 256][H(m) 128][publicKey 256] = 768 bytes, then scratch for hashing
        uint256 buf;
        assembly ("memory-safe") {
            buf := mload(0x40)
            calldatacopy(buf, sig.offset, 128)
            let g := add(buf, 0x80)
            mstore(g, 0x00000000000000000000000000000000024aa2b2f08f0a91260805272dc51051)
            mstore(add(g, 0x20), 0xc6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8)
            mstore(add(g, 0x40), 0x0000000000000000000000000000000013e02b6052719f607dacd3a088274f65)
            mstore(add(g, 0x60), 0x596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e)
            mstore(add(g, 0x80), 0x000000000000000000000000000000000d1b3cc2c7027888be51d9ef691d77bc)
            mstore(add(g, 0xa0), 0xb679afda66c73f17f9ee3837a55024f78c71363275a75d75d86bab79f74782aa)
            mstore(add(g, 0xc0), 0x0000000000000000000000000000000013fa4d4a0ad8b1ce186ed5061789213d)
            mstore(add(g, 0xe0), 0x993923066dddaf1040bc3ff59f825c78df74f2d75467e25e0f55f8a00fa030ed)
            mcopy(add(buf, 0x200), add(publicKey, 0x20), 256)
        }
        _hashToG1(buf + 0x180, buf + 0x300, message, dst);
        _requireGas(PAIRING2_PRICE);
        assembly ("memory-safe") {
            wellFormed := staticcall(gas(), 0x0f, buf, 768, 0x00, 0x20) // PAIRING_CHECK
            valid := and(wellFormed, eq(mload(0x00), 1))
        }
    }

    /// @notice True iff `point` is a 256-byte EIP-2537 encoding of a non-identity point of the G2 subgroup.
    /// @dev G2MSM checks curve and subgroup membership of its inputs (EIP-2537), so a 1-term MSM by 1 is
    /// the cheapest on-chain membership test (22,500 gas).
    function isValidG2(bytes memory point) internal view returns (bool) {
        if (point.length != G2_SIZE) return false;
        bool nonZero;
        for (uint256 i = 0; i < G2_SIZE; i += 32) {
            bytes32 w;
            assembly ("memory-safe") {
                w := mload(add(add(point, 0x20), i))
            }
            if (w != bytes32(0)) {
                nonZero = true;
                break;
            }
        }
        if (!nonZero) return false;
        bytes memory input = abi.encodePacked(point, uint256(1));
        _requireGas(G2MSM1_PRICE);
        (bool success,) = address(0x0e).staticcall(input); // G2MSM, all remaining gas
        return success;
    }

    /// @dev Writes hash_to_G1(message) (128 bytes) at `out`, using 0x300 bytes of memory at `s`.
    /// Scratch layout (offsets from s):
    ///   0x000 MODEXP input: [64][1][64][base 64 at 0x060][exponent 0x01 at 0x0a0][p, 64 bytes at 0x0a1]
    ///   0x100 two MAP_FP_TO_G1 outputs = the G1ADD input (256 bytes)
    ///   0x200 SHA-256 input: Z_pad(64) ‖ msg ‖ I2OSP(128,2) ‖ 0x00 ‖ DST ‖ len(DST); the b_i inputs
    ///         (b0 xor b_{i-1}) ‖ i ‖ DST ‖ len(DST) start at 0x242 and reuse the same DST_prime bytes.
    ///         Once every b_i is known, this region receives each reduced field element (MODEXP output,
    ///         MAP_FP_TO_G1 input).
    function _hashToG1(uint256 out, uint256 s, bytes32 message, bytes memory dst) private view {
        uint256 dlen = dst.length;
        require(dlen > 0 && dlen <= 255, "BLS12381: bad DST");
        bool ok = true;
        assembly ("memory-safe") {
            let h := add(s, 0x200)
            // b0 = H(Z_pad ‖ msg ‖ 0x0080 ‖ 0x00 ‖ DST ‖ dlen)
            mstore(h, 0)
            mstore(add(h, 0x20), 0)
            mstore(add(h, 0x40), message)
            mstore(add(h, 0x60), 0x0080000000000000000000000000000000000000000000000000000000000000)
            mcopy(add(h, 0x63), add(dst, 0x20), dlen)
            mstore8(add(add(h, 0x63), dlen), dlen)
            ok := and(ok, staticcall(gas(), 0x02, h, add(0x64, dlen), 0x00, 0x20))
            let b0 := mload(0x00)
            // b_i = H((b0 xor b_{i-1}) ‖ i ‖ DST ‖ dlen), hashed from h+0x42
            let bl := add(0x22, dlen)
            let at := add(h, 0x42)
            mstore(at, b0)
            mstore8(add(h, 0x62), 1)
            ok := and(ok, staticcall(gas(), 0x02, at, bl, 0x00, 0x20))
            let b1 := mload(0x00)
            mstore(at, xor(b0, b1))
            mstore8(add(h, 0x62), 2)
            ok := and(ok, staticcall(gas(), 0x02, at, bl, 0x00, 0x20))
            let b2 := mload(0x00)
            mstore(at, xor(b0, b2))
            mstore8(add(h, 0x62), 3)
            ok := and(ok, staticcall(gas(), 0x02, at, bl, 0x00, 0x20))
            let b3 := mload(0x00)
            mstore(at, xor(b0, b3))
            mstore8(add(h, 0x62), 4)
            ok := and(ok, staticcall(gas(), 0x02, at, bl, 0x00, 0x20))
            let b4 := mload(0x00)

            // MODEXP(base, 1, p) for u0 = (b1 ‖ b2) mod p and u1 = (b3 ‖ b4) mod p
            mstore(s, 64)
            mstore(add(s, 0x20), 1)
            mstore(add(s, 0x40), 64)
            mstore(add(s, 0x60), b1)
            mstore(add(s, 0x80), b2)
            mstore8(add(s, 0xa0), 1)
            mstore(add(s, 0xa1), 0x000000000000000000000000000000001a0111ea397fe69a4b1ba7b6434bacd7)
            mstore(add(s, 0xc1), 0x64774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab)
            ok := and(ok, staticcall(gas(), 0x05, s, 0xe1, h, 0x40))
            ok := and(ok, staticcall(gas(), 0x10, h, 0x40, add(s, 0x100), 0x80)) // MAP_FP_TO_G1
            mstore(add(s, 0x60), b3)
            mstore(add(s, 0x80), b4)
            ok := and(ok, staticcall(gas(), 0x05, s, 0xe1, h, 0x40))
            ok := and(ok, staticcall(gas(), 0x10, h, 0x40, add(s, 0x180), 0x80)) // MAP_FP_TO_G1
            ok := and(ok, staticcall(gas(), 0x0b, add(s, 0x100), 0x100, out, 0x80)) // G1ADD
        }
        if (!ok) revert PrecompileFailed();
    }

    /// @dev EIP-150 forwards at most 63/64 of the remaining gas: make sure at least `price` arrives.
    function _requireGas(uint256 price) private view {
        if (gasleft() < price + price / 63 + 2_000) revert InsufficientGas();
    }
}
