// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @title Group keys stored as contract code (the SSTORE2 pattern).
/// @notice An epoch's two group keys (PK_sig ‖ PK_kd, 512 bytes in EIP-2537 form) are written once as the
/// runtime code of a data contract created with CREATE2 (salt = keccak256(keys)). Equal keys give the same
/// address, so a reshare that keeps the keys reuses the store, and comparing store addresses compares keys.
/// Reading PK_sig costs one EXTCODECOPY (~2.7k gas) instead of eight cold SLOADs (16.8k).
/// The code starts with STOP (0x00), so calling the store does nothing.
library KeyStore {
    uint256 internal constant KEYS_SIZE = 512;

    /// @dev Init code prefix: PUSH2 size, DUP1, PUSH1 12, PUSH1 0, CODECOPY, PUSH1 0, RETURN (12 bytes),
    /// followed by the runtime code 0x00 ‖ keys.
    function _initCode(bytes memory keys) private pure returns (bytes memory) {
        uint16 size = uint16(keys.length + 1);
        return abi.encodePacked(hex"61", size, hex"80600c6000396000f3", hex"00", keys);
    }

    function addressOf(bytes memory keys) internal view returns (address) {
        bytes32 hash = keccak256(
            abi.encodePacked(bytes1(0xff), address(this), keccak256(keys), keccak256(_initCode(keys)))
        );
        return address(uint160(uint256(hash)));
    }

    /// @notice Returns the store holding `keys`, creating it if it does not exist yet.
    function write(bytes memory keys) internal returns (address store) {
        store = addressOf(keys);
        if (store.code.length != 0) return store;
        bytes memory init = _initCode(keys);
        bytes32 salt = keccak256(keys);
        assembly ("memory-safe") {
            store := create2(0, add(init, 0x20), mload(init), salt)
        }
        require(store != address(0), "KeyStore: create2 failed");
    }

    /// @notice Reads `size` bytes at `offset` of the stored keys.
    function read(address store, uint256 offset, uint256 size) internal view returns (bytes memory out) {
        out = new bytes(size);
        assembly ("memory-safe") {
            extcodecopy(store, add(out, 0x20), add(offset, 1), size)
        }
    }
}
