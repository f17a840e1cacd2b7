// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IAppDelegate} from "../interfaces/IAppDelegate.sol";

/// @notice Smallest useful app delegate: its owner keeps an allowlist of (platform, measurement) pairs that
/// applies to every app pointing at it. Real apps would put their own release process here.
contract AllowlistDelegate is IAppDelegate, Ownable {
    mapping(uint8 platform => mapping(bytes32 measurement => bool)) public allowed;

    event AllowlistChanged(uint8 indexed platform, bytes32 indexed measurement, bool allowed);

    constructor(address initialOwner) Ownable(initialOwner) {}

    function setAllowed(uint8 platform, bytes32 measurement, bool isAllowed) external onlyOwner {
        allowed[platform][measurement] = isAllowed;
        emit AllowlistChanged(platform, measurement, isAllowed);
    }

    function isAppAllowed(bytes32, uint8 platform, bytes32 measurement) external view returns (bool) {
        return allowed[platform][measurement];
    }
}
