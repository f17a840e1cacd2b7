// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title The timelock that owns DerotRegistry. The Governor is its only proposer; the Governor and the
/// SecurityCouncil are its cancellers; anyone may execute a ready operation. The deployer renounces the
/// admin role once roles are set.
/// @notice The council may cancel a queued proposal during the delay (a veto, which only restricts), except
/// one that replaces the council (`setSecurityCouncil` on any target) or changes this timelock's roles: only
/// a proposer (the Governor) may cancel those, so a rogue council can delay its own removal by at most one
/// governance cycle but never block it.
contract DerotTimelock is TimelockController {
    bytes4 private constant SET_SECURITY_COUNCIL = bytes4(keccak256("setSecurityCouncil(address)"));

    /// @notice Operations that only a proposer may cancel (see the contract notice).
    mapping(bytes32 id => bool) public councilProof;

    error CancelNotAllowed(bytes32 id);

    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}

    function schedule(
        address target,
        uint256 value,
        bytes calldata data,
        bytes32 predecessor,
        bytes32 salt,
        uint256 delay
    ) public override {
        super.schedule(target, value, data, predecessor, salt, delay);
        if (_touchesCouncil(target, data)) councilProof[hashOperation(target, value, data, predecessor, salt)] = true;
    }

    function scheduleBatch(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata payloads,
        bytes32 predecessor,
        bytes32 salt,
        uint256 delay
    ) public override {
        super.scheduleBatch(targets, values, payloads, predecessor, salt, delay);
        for (uint256 i = 0; i < targets.length; i++) {
            if (_touchesCouncil(targets[i], payloads[i])) {
                councilProof[hashOperationBatch(targets, values, payloads, predecessor, salt)] = true;
                break;
            }
        }
    }

    function cancel(bytes32 id) public override {
        if (councilProof[id] && !hasRole(PROPOSER_ROLE, msg.sender)) revert CancelNotAllowed(id);
        super.cancel(id);
    }

    function _touchesCouncil(address target, bytes calldata data) private view returns (bool) {
        if (data.length < 4) return false;
        bytes4 selector = bytes4(data[:4]);
        if (selector == SET_SECURITY_COUNCIL) return true;
        return target == address(this)
            && (selector == this.grantRole.selector || selector == this.revokeRole.selector);
    }
}
