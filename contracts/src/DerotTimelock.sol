// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title The timelock that owns DerotRegistry. The Governor is its only proposer and canceller;
/// anyone may execute a ready operation. The deployer renounces the admin role once roles are set.
contract DerotTimelock is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
