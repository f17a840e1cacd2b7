// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @notice An app owner's own policy contract. When an app sets a delegate, the registry (and every
/// node, at its confirmed block) asks it instead of the app's allowed-measurement list.
interface IAppDelegate {
    /// @return allowed whether `measurement` on `platform` may run app `appId`.
    function isAppAllowed(bytes32 appId, uint8 platform, bytes32 measurement) external view returns (bool allowed);
}
