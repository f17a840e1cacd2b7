// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import {IAppDelegate} from "./interfaces/IAppDelegate.sol";
import {BLS12381} from "./lib/BLS12381.sol";
import {Certificate, CertificateCodec} from "./lib/CertificateCodec.sol";
import {KeyStore} from "./lib/KeyStore.sol";

/// @title DerotRegistry: the governance state every derot node follows (docs/design.md §6).
/// @notice Owned by the TimelockController that the DerotGovernor drives. A SecurityCouncil address (set by
/// the owner) may act at once, but only in the restrictive direction: revoke, disable, suspend, freeze, raise
/// a TCB floor, abort a pending epoch. Everything that adds, allows, lowers or unrevokes is owner-only.
/// Every state change emits an event; view functions enumerate everything a node or relying party needs.
///
/// Numeric enum values are part of the ABI and mirrored in Python (node.constants, node.certs); never renumber.
contract DerotRegistry is Ownable {
    using EnumerableSet for EnumerableSet.Bytes32Set;
    using EnumerableSet for EnumerableSet.AddressSet;

    // ----------------------------------------------------------------------------------------------
    // types

    enum NodeStatus {
        NONE,
        PENDING, // registered by its operator, not yet approved
        APPROVED, // may be made a committee member by governance
        SUSPENDED, // stopped by governance or the council
        REMOVED // removed by governance; the operator may register again
    }

    enum Phase {
        NONE,
        DKG, // a fresh DKG is running: new group keys
        RESHARE, // a reshare is running: the group keys of `previous` are kept
        ACTIVE, // the current epoch
        RETIRED, // was active, superseded by a later epoch
        ABORTED // never activated and abandoned
    }

    /// @notice Kinds of revocable identifiers; see `revoke`.
    enum RevocationKind {
        NONE,
        FMSPC, // Intel platform family, 6 bytes
        CHIP_ID, // SEV-SNP chip_id of a VCEK-signed report: 64 bytes, not all zero
        GPU_FWID, // NVIDIA GPU firmware id: 1..64 bytes
        MEASUREMENT, // a measurement digest, 32 bytes (applies to every app and to nodes)
        CERT_SERIAL, // a certificate serial, 32 bytes
        EVIDENCE_HASH, // the evidence hash a certificate was issued for, 32 bytes
        PPID, // Intel platform provisioning id: 16 bytes, not all zero
        PCK_CERT, // Intel PCK certificate: SHA-256 over its issuer and serial (docs/revocation.md), 32 bytes
        GPU_DEVICE // NVIDIA GPU device: device certificate serial or UEID (leaf serial), 1..32 bytes, not all zero
    }

    /// @notice Result of `verifyCertificate`, in the order the checks run. Mirrored by node.certs.Reason.
    enum Reason {
        OK,
        MALFORMED, // not the canonical abi.encode(Certificate)
        MALFORMED_SIGNATURE, // not 128 bytes, or not a G1 subgroup point in EIP-2537 form
        WRONG_VERSION,
        WRONG_CHAIN,
        WRONG_REGISTRY,
        UNKNOWN_EPOCH,
        EPOCH_NOT_ACTIVE, // the epoch never activated
        EPOCH_KEY_RETIRED, // the epoch activated, but its keys are no longer the current group keys
        BAD_SIGNATURE,
        CERT_REVOKED, // serial or evidence hash revoked
        NOT_YET_VALID,
        EXPIRED,
        UNKNOWN_APP,
        APP_FROZEN,
        KEY_VERSION_MISMATCH, // the app's keyVersion has moved on
        PLATFORM_DISABLED,
        TCB_BELOW_FLOOR,
        MEASUREMENT_REVOKED,
        HARDWARE_REVOKED // a hardware identity the certificate lists (`hardware`) is revoked
    }

    struct Node {
        NodeStatus status;
        bytes32 identityKey; // Ed25519
        bytes32 x25519Key;
        bytes32 tlsKeyHash; // SHA-256 of the node's TLS public key (the contract is the PKI)
        bytes32 evidenceHash; // hash of the node's latest TEE evidence
        string endpoint; // gRPC host:port
    }

    /// @dev Slot 0 holds what verifyCertificate reads: phase and keyStore.
    struct Epoch {
        Phase phase;
        address keyStore; // set at activation: holds PK_sig ‖ PK_kd
        uint8 threshold;
        uint64 previous; // for a reshare: the active epoch whose keys must be kept
        uint64 startedBlock;
        uint64 activatedBlock;
        bytes32 transcriptHash; // agreed at activation
        address[] members; // member i has index i+1
    }

    struct EpochView {
        uint64 id;
        Phase phase;
        uint8 threshold;
        uint64 previous;
        uint64 startedBlock;
        uint64 activatedBlock;
        address keyStore;
        bytes32 transcriptHash;
        address[] members;
    }

    /// @dev One slot: owner, keyVersion, frozen, allowDebug, teeExceptions, gpuModels, gpuRequired.
    struct App {
        address owner;
        uint32 keyVersion;
        bool frozen;
        bool allowDebug;
        uint32 teeExceptions; // waived TEE checks, bits in node.chain.tee_policy (TEE_EXCEPTIONS)
        uint8 gpuModels; // allowed node.constants.GpuModel bits; 0 = any model
        bool gpuRequired; // the app's evidence must include an attested GPU
    }

    struct AppView {
        bytes32 appId;
        address owner;
        uint32 keyVersion;
        bool frozen;
        bool allowDebug;
        uint32 teeExceptions;
        uint8 gpuModels;
        bool gpuRequired;
        address delegate;
        uint8[] platforms; // allowed (platform, measurement) pairs
        bytes32[] measurements;
    }

    struct PlatformRule {
        bool enabled;
        uint8 tcbFloor; // node.constants.TcbStatus rank; evidence must be >= floor
    }

    struct Measurement {
        uint8 platform;
        bytes32 digest;
    }

    struct Current {
        uint64 epoch;
        address keyStore;
    }

    // ----------------------------------------------------------------------------------------------
    // constants

    uint8 public constant CERT_VERSION = 3;
    bytes public constant DST_CERT = "DEROT-V1-CERT-BLS12381G1_XMD:SHA-256_SSWU_RO_";
    uint256 public constant MAX_COMMITTEE = 255;
    /// @notice Allowed (platform, measurement) pairs per app: bounds getApp and every app page, so no app
    /// owner can make the views that nodes follow exceed a node's eth_call gas limit.
    uint256 public constant MAX_APP_MEASUREMENTS = 64;
    /// @notice Default blocks a pending epoch may take before anyone may expire it (about a day at 12 s).
    uint64 public constant DEFAULT_EPOCH_TIMEOUT = 7200;
    /// @notice Waivable TEE checks (bits 0-6, 8-16; node.chain.tee_policy). Reserved bits are never waivable.
    uint32 private constant TEE_EXCEPTIONS = 0x1FF7F;
    /// @notice GpuModel bits H100, H200, B100, B200, GB200.
    uint8 private constant GPU_MODELS = 0x1F;
    /// @notice SEV-SNP guest policy bits governance may require (SMT, MIGRATE_MA .. PAGE_SWAP_DISABLE).
    uint64 private constant SNP_POLICY_BITS = 0x3FD0000;

    // ----------------------------------------------------------------------------------------------
    // state

    address public securityCouncil;
    /// @notice Blocks after its start when a still-pending epoch may be expired by anyone (expireEpoch).
    uint64 public epochTimeout = DEFAULT_EPOCH_TIMEOUT;

    mapping(address operator => Node) private _nodes;
    EnumerableSet.AddressSet private _nodeSet;

    mapping(uint64 epoch => Epoch) private _epochs;
    Current private _current;
    uint64 public epochCount;
    uint64 public pendingEpoch;
    mapping(uint64 epoch => mapping(address member => uint256 index)) private _memberIndex;
    mapping(uint64 epoch => mapping(address member => bytes32 reportHash)) private _reports;
    mapping(uint64 epoch => mapping(bytes32 reportHash => uint256 count)) private _reportCounts;
    mapping(uint64 epoch => bytes32 reportHash) private _firstReport;

    mapping(bytes32 appId => App) private _apps;
    mapping(bytes32 appId => address delegate) private _appDelegates;
    mapping(bytes32 appId => address pendingOwner) private _pendingAppOwners;
    mapping(bytes32 appId => EnumerableSet.Bytes32Set) private _appMeasurements;
    EnumerableSet.Bytes32Set private _appIds;

    mapping(uint8 platform => PlatformRule) private _platforms;
    EnumerableSet.Bytes32Set private _platformIds;

    /// @dev Per kind, the set of revoked ids: the id itself (left-aligned) for FMSPC and the 32-byte kinds, and
    /// keccak256(uint8 kind ‖ id) for the others (then `_variableIds` keeps the bytes for enumeration).
    mapping(RevocationKind kind => EnumerableSet.Bytes32Set) private _revoked;
    mapping(bytes32 idHash => bytes id) private _variableIds;
    /// @dev keccak256(uint8 kind ‖ id) of every revoked hardware id (FMSPC, CHIP_ID, GPU_FWID, PPID, PCK_CERT,
    /// GPU_DEVICE): what a certificate's `hardware` list is checked against.
    mapping(bytes32 hardwareKey => bool) private _hardwareRevoked;
    /// @dev A 256-bit Bloom filter over the keys ever set in `_hardwareRevoked` (3 bits per key, never cleared), so
    /// `verifyCertificate` reads one slot for all of a certificate's keys and the mapping only on a filter hit.
    uint256 private _hardwareBloom;

    EnumerableSet.Bytes32Set private _nodeMeasurements;
    /// @dev keccak256(platform, digest) → the pair, for app and node measurement sets.
    mapping(bytes32 key => Measurement) private _measurementOf;

    /// @notice SEV-SNP policy set by governance: the highest VMPL accepted, and the guest policy bits in
    /// the mask must equal those in the value (default: MIGRATE_MA clear).
    uint8 private _snpMaxVmpl;
    uint64 private _snpGuestPolicyMask = uint64(1) << 18;
    uint64 private _snpGuestPolicyValue;
    /// @dev Minimum TCB_VERSION per product (0 Milan, 1 Genoa, 2 Turin; 0 = no minimum).
    uint64[3] private _snpMinTcb;

    // ----------------------------------------------------------------------------------------------
    // events

    event SecurityCouncilChanged(address indexed previousCouncil, address indexed newCouncil);

    event NodeRegistered(
        address indexed operator, bytes32 identityKey, bytes32 x25519Key, string endpoint, bytes32 tlsKeyHash,
        bytes32 evidenceHash
    );
    event NodeUpdated(address indexed operator, string endpoint, bytes32 tlsKeyHash, bytes32 evidenceHash);
    event NodeStatusChanged(address indexed operator, NodeStatus status, address indexed by);

    event EpochStarted(uint64 indexed epoch, Phase phase, uint8 threshold, uint64 previous, address[] members);
    event EpochReported(uint64 indexed epoch, address indexed member, bytes32 reportHash, uint256 agreeing);
    event EpochReportConflict(uint64 indexed epoch, address indexed member, bytes32 reportHash, bytes32 firstHash);
    event EpochActivated(uint64 indexed epoch, address keyStore, bytes32 transcriptHash);
    event EpochRetired(uint64 indexed epoch);
    event EpochAborted(uint64 indexed epoch, address indexed by);
    event EpochTimeoutSet(uint64 blocks);
    /// @notice Per reporter: the dealers its DKG run excluded (member indices) and why (node.chain.exclusions).
    event EpochExclusions(uint64 indexed epoch, address indexed member, uint8[] excluded, uint8[] reasons);

    event AppRegistered(bytes32 indexed appId, address indexed owner, bytes32 salt);
    event AppMeasurementSet(bytes32 indexed appId, uint8 indexed platform, bytes32 measurement, bool allowed);
    event AppKeyVersionRaised(bytes32 indexed appId, uint32 keyVersion);
    event AppAllowDebugSet(bytes32 indexed appId, bool allowDebug);
    event AppDelegateSet(bytes32 indexed appId, address delegate);
    event AppOwnerChanged(bytes32 indexed appId, address indexed previousOwner, address indexed newOwner);
    event AppOwnershipTransferStarted(bytes32 indexed appId, address indexed owner, address indexed pendingOwner);
    event AppFrozen(bytes32 indexed appId, bool frozen, address indexed by);
    event AppTeeExceptionsSet(bytes32 indexed appId, uint32 teeExceptions);
    event AppGpuPolicySet(bytes32 indexed appId, uint8 gpuModels, bool gpuRequired);
    event SnpPolicySet(uint8 maxVmpl, uint64 guestPolicyMask, uint64 guestPolicyValue);
    event SnpMinTcbSet(uint8 indexed product, uint64 tcb);

    event PlatformRuleSet(uint8 indexed platform, bool enabled, uint8 tcbFloor, address indexed by);
    event Revoked(RevocationKind indexed kind, bytes id, address indexed by);
    event Unrevoked(RevocationKind indexed kind, bytes id, address indexed by);
    event NodeMeasurementSet(uint8 indexed platform, bytes32 digest, bool allowed, address indexed by);

    // ----------------------------------------------------------------------------------------------
    // errors

    error NotOwnerOrCouncil(address caller);
    error NotAppOwner(bytes32 appId, address caller);
    error UnknownApp(bytes32 appId);
    error AppExists(bytes32 appId);
    error NodeExists(address operator);
    error UnknownNode(address operator);
    error BadNodeStatus(address operator, NodeStatus status);
    error BadNodeKeys();
    error BadCommittee(uint256 size, uint8 threshold);
    error DuplicateMember(address member);
    error MemberNotApproved(address member);
    error NoActiveEpoch();
    error NoPendingEpoch();
    error NotMember(uint64 epoch, address caller);
    error AlreadyReported(uint64 epoch, address member);
    error EpochClosed(uint64 epoch, Phase phase);
    error InvalidGroupKey(uint256 which);
    error KeyVersionNotRaised(uint32 current, uint32 requested);
    error BadRevocationId(RevocationKind kind, uint256 length);
    error NotRevoked(RevocationKind kind);
    error CouncilCannotLower(uint8 platform, uint8 currentFloor, uint8 requestedFloor);
    error ZeroAddress();
    error TooManyMeasurements(bytes32 appId);
    error CouncilWouldHalt(uint64 epoch, uint256 approvedMembers, uint8 threshold);
    error NotPendingAppOwner(bytes32 appId, address caller);
    error EpochNotExpired(uint64 epoch, uint64 expiresAt);
    error BadEpochTimeout(uint64 blocks);
    error BadPolicy(); // an unknown or reserved bit, a VMPL above 3, an unknown product, or mismatched lists

    // ----------------------------------------------------------------------------------------------

    constructor(address initialOwner, address council) Ownable(initialOwner) {
        securityCouncil = council;
        emit SecurityCouncilChanged(address(0), council);
    }

    modifier onlyOwnerOrCouncil() {
        if (msg.sender != owner() && msg.sender != securityCouncil) revert NotOwnerOrCouncil(msg.sender);
        _;
    }

    modifier onlyAppOwner(bytes32 appId) {
        address appOwner = _apps[appId].owner;
        if (appOwner == address(0)) revert UnknownApp(appId);
        if (msg.sender != appOwner) revert NotAppOwner(appId, msg.sender);
        _;
    }

    /// @notice Sets the SecurityCouncil (owner only; address(0) disables the council).
    function setSecurityCouncil(address council) external onlyOwner {
        emit SecurityCouncilChanged(securityCouncil, council);
        securityCouncil = council;
    }

    // ----------------------------------------------------------------------------------------------
    // nodes

    /// @notice A node operator registers its node (operator = msg.sender). Governance approves it later.
    function registerNode(
        bytes32 identityKey,
        bytes32 x25519Key,
        string calldata endpoint,
        bytes32 tlsKeyHash,
        bytes32 evidenceHash
    ) external {
        Node storage node = _nodes[msg.sender];
        if (node.status != NodeStatus.NONE && node.status != NodeStatus.REMOVED) revert NodeExists(msg.sender);
        if (identityKey == bytes32(0) || x25519Key == bytes32(0) || tlsKeyHash == bytes32(0)) revert BadNodeKeys();
        node.status = NodeStatus.PENDING;
        node.identityKey = identityKey;
        node.x25519Key = x25519Key;
        node.endpoint = endpoint;
        node.tlsKeyHash = tlsKeyHash;
        node.evidenceHash = evidenceHash;
        _nodeSet.add(msg.sender);
        emit NodeRegistered(msg.sender, identityKey, x25519Key, endpoint, tlsKeyHash, evidenceHash);
        emit NodeStatusChanged(msg.sender, NodeStatus.PENDING, msg.sender);
    }

    /// @notice The operator updates its endpoint, TLS key hash and evidence hash (identity keys are fixed).
    function updateNode(string calldata endpoint, bytes32 tlsKeyHash, bytes32 evidenceHash) external {
        Node storage node = _nodes[msg.sender];
        if (node.status == NodeStatus.NONE || node.status == NodeStatus.REMOVED) revert UnknownNode(msg.sender);
        if (tlsKeyHash == bytes32(0)) revert BadNodeKeys();
        node.endpoint = endpoint;
        node.tlsKeyHash = tlsKeyHash;
        node.evidenceHash = evidenceHash;
        emit NodeUpdated(msg.sender, endpoint, tlsKeyHash, evidenceHash);
    }

    function approveNode(address operator) external onlyOwner {
        _setNodeStatus(operator, NodeStatus.APPROVED, NodeStatus.PENDING, NodeStatus.SUSPENDED);
    }

    /// @notice Suspends a node at once. The council (not governance) may not suspend so many members of the
    /// current epoch that fewer than its threshold remain approved: it can stop bad nodes, never halt the network.
    function suspendNode(address operator) external onlyOwnerOrCouncil {
        _setNodeStatus(operator, NodeStatus.SUSPENDED, NodeStatus.PENDING, NodeStatus.APPROVED);
        if (msg.sender != owner()) _requireLiveCommittee();
    }

    function _requireLiveCommittee() private view {
        uint64 id = _current.epoch;
        if (id == 0) return;
        Epoch storage e = _epochs[id];
        uint256 approved;
        uint256 n = e.members.length;
        for (uint256 i = 0; i < n; i++) {
            if (_nodes[e.members[i]].status == NodeStatus.APPROVED) approved++;
        }
        if (approved < e.threshold) revert CouncilWouldHalt(id, approved, e.threshold);
    }

    function removeNode(address operator) external onlyOwner {
        NodeStatus status = _nodes[operator].status;
        if (status == NodeStatus.NONE || status == NodeStatus.REMOVED) revert BadNodeStatus(operator, status);
        _nodes[operator].status = NodeStatus.REMOVED;
        emit NodeStatusChanged(operator, NodeStatus.REMOVED, msg.sender);
    }

    function _setNodeStatus(address operator, NodeStatus to, NodeStatus fromA, NodeStatus fromB) private {
        NodeStatus status = _nodes[operator].status;
        if (status != fromA && status != fromB) revert BadNodeStatus(operator, status);
        _nodes[operator].status = to;
        emit NodeStatusChanged(operator, to, msg.sender);
    }

    // ----------------------------------------------------------------------------------------------
    // epochs

    /// @notice Starts a fresh DKG (new group keys) with an ordered member list and threshold t,
    /// floor(n/2)+1 <= t <= n. A pending epoch is aborted.
    function startDkg(address[] calldata members, uint8 threshold) external onlyOwner returns (uint64) {
        return _startEpoch(members, threshold, Phase.DKG, 0);
    }

    /// @notice Starts a reshare of the current epoch's keys to a new member list / threshold.
    /// It can only activate with the same group keys.
    function startReshare(address[] calldata members, uint8 threshold) external onlyOwner returns (uint64) {
        if (_current.epoch == 0) revert NoActiveEpoch();
        return _startEpoch(members, threshold, Phase.RESHARE, _current.epoch);
    }

    /// @notice Sets how many blocks a pending epoch may take before anyone may expire it (owner only).
    function setEpochTimeout(uint64 blocks) external onlyOwner {
        if (blocks == 0) revert BadEpochTimeout(blocks);
        epochTimeout = blocks;
        emit EpochTimeoutSet(blocks);
    }

    /// @notice Anyone may abort the pending epoch once `epochTimeout` blocks have passed since it started
    /// without activation, so a DKG that can no longer activate (stale or conflicting reports) never
    /// blocks the next one. The current epoch stays active.
    function expireEpoch() external {
        uint64 id = pendingEpoch;
        if (id == 0) revert NoPendingEpoch();
        uint64 expiresAt = _epochs[id].startedBlock + epochTimeout;
        if (block.number < expiresAt) revert EpochNotExpired(id, expiresAt);
        _abortPending();
    }

    /// @notice Abandons the pending epoch (the current one stays active).
    function abortPendingEpoch() external onlyOwnerOrCouncil {
        if (pendingEpoch == 0) revert NoPendingEpoch();
        _abortPending();
    }

    function _startEpoch(address[] calldata members, uint8 threshold, Phase phase, uint64 previous)
        private
        returns (uint64 id)
    {
        uint256 n = members.length;
        if (n == 0 || n > MAX_COMMITTEE || threshold > n || threshold < n / 2 + 1) revert BadCommittee(n, threshold);
        if (pendingEpoch != 0) _abortPending();
        id = ++epochCount;
        Epoch storage e = _epochs[id];
        for (uint256 i = 0; i < n; i++) {
            address member = members[i];
            if (_nodes[member].status != NodeStatus.APPROVED) revert MemberNotApproved(member);
            if (_memberIndex[id][member] != 0) revert DuplicateMember(member);
            _memberIndex[id][member] = i + 1;
        }
        e.phase = phase;
        e.threshold = threshold;
        e.previous = previous;
        e.startedBlock = uint64(block.number);
        e.members = members;
        pendingEpoch = id;
        emit EpochStarted(id, phase, threshold, previous, members);
    }

    function _abortPending() private {
        uint64 id = pendingEpoch;
        _epochs[id].phase = Phase.ABORTED;
        pendingEpoch = 0;
        emit EpochAborted(id, msg.sender);
    }

    /// @notice A member reports the outcome of the epoch's DKG or reshare: both group keys in EIP-2537 form
    /// (256 bytes each; the contract needs the affine form for the pairing precompile and checks subgroup
    /// membership once per distinct report) and the transcript hash. The epoch activates when `threshold`
    /// members report the same values (for a reshare: only if the keys equal the previous epoch's).
    /// A report that differs from an earlier one is recorded and flagged, not refused. Only members whose
    /// node is APPROVED may report (a suspended or removed member cannot help activate). A member may
    /// replace its own report with a different one (after recomputing a transcript), which withdraws its
    /// vote for the old one. `excluded`/`reasons` are this member's own view of which dealers its run excluded
    /// and why (dealer indices: of `previous` for a reshare): emitted (EpochExclusions), not part of the
    /// agreed report (docs/dkg.md).
    function reportEpoch(
        uint64 epoch,
        bytes calldata pkSig,
        bytes calldata pkKd,
        bytes32 transcriptHash,
        uint8[] calldata excluded,
        uint8[] calldata reasons
    ) external {
        Epoch storage e = _epochs[epoch];
        Phase phase = e.phase;
        if (phase != Phase.DKG && phase != Phase.RESHARE && phase != Phase.ACTIVE) revert EpochClosed(epoch, phase);
        if (_memberIndex[epoch][msg.sender] == 0) revert NotMember(epoch, msg.sender);
        if (_nodes[msg.sender].status != NodeStatus.APPROVED) revert MemberNotApproved(msg.sender);
        if (excluded.length != reasons.length || excluded.length > MAX_COMMITTEE) revert BadPolicy();

        bytes memory keys = abi.encodePacked(pkSig, pkKd);
        bytes32 reportHash = keccak256(abi.encodePacked(keys, transcriptHash));
        bytes32 previousReport = _reports[epoch][msg.sender];
        if (previousReport == reportHash) revert AlreadyReported(epoch, msg.sender);
        if (previousReport != bytes32(0)) _reportCounts[epoch][previousReport] -= 1;
        uint256 agreeing = _reportCounts[epoch][reportHash] + 1;
        if (agreeing == 1) {
            if (!BLS12381.isValidG2(pkSig)) revert InvalidGroupKey(0);
            if (!BLS12381.isValidG2(pkKd)) revert InvalidGroupKey(1);
        }
        _reports[epoch][msg.sender] = reportHash;
        _reportCounts[epoch][reportHash] = agreeing;
        emit EpochReported(epoch, msg.sender, reportHash, agreeing);
        if (excluded.length != 0) emit EpochExclusions(epoch, msg.sender, excluded, reasons);

        bytes32 first = _firstReport[epoch];
        if (first == bytes32(0)) {
            _firstReport[epoch] = reportHash;
        } else if (first != reportHash) {
            emit EpochReportConflict(epoch, msg.sender, reportHash, first);
        }

        if (phase == Phase.ACTIVE || agreeing < e.threshold) return;
        if (phase == Phase.RESHARE && KeyStore.addressOf(keys) != _epochs[e.previous].keyStore) return;
        _activate(epoch, e, keys, transcriptHash);
    }

    function _activate(uint64 epoch, Epoch storage e, bytes memory keys, bytes32 transcriptHash) private {
        address store = KeyStore.write(keys);
        e.phase = Phase.ACTIVE;
        e.keyStore = store;
        e.transcriptHash = transcriptHash;
        e.activatedBlock = uint64(block.number);
        uint64 old = _current.epoch;
        if (old != 0) {
            _epochs[old].phase = Phase.RETIRED;
            emit EpochRetired(old);
        }
        _current = Current(epoch, store);
        if (pendingEpoch == epoch) pendingEpoch = 0;
        emit EpochActivated(epoch, store, transcriptHash);
    }

    // ----------------------------------------------------------------------------------------------
    // apps

    /// @notice Registers an app without permission. appId = keccak256(abi.encode(msg.sender, salt)), so an
    /// appId cannot be squatted. keyVersion starts at 1.
    function registerApp(bytes32 salt) external returns (bytes32 appId) {
        appId = appIdOf(msg.sender, salt);
        if (_apps[appId].owner != address(0)) revert AppExists(appId);
        _apps[appId].owner = msg.sender;
        _apps[appId].keyVersion = 1;
        _appIds.add(appId);
        emit AppRegistered(appId, msg.sender, salt);
    }

    function appIdOf(address appOwner, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(appOwner, salt));
    }

    /// @notice The app owner allows or disallows a (platform, measurement digest) pair.
    function setAppMeasurement(bytes32 appId, uint8 platform, bytes32 measurement, bool allowed)
        external
        onlyAppOwner(appId)
    {
        bytes32 key = _measurementKey(platform, measurement);
        if (allowed) {
            _rememberMeasurement(key, platform, measurement);
            if (_appMeasurements[appId].add(key) && _appMeasurements[appId].length() > MAX_APP_MEASUREMENTS) {
                revert TooManyMeasurements(appId);
            }
        } else {
            _appMeasurements[appId].remove(key);
        }
        emit AppMeasurementSet(appId, platform, measurement, allowed);
    }

    /// @notice Raises keyVersion: rotates the app's derived keys and retires certificates of older versions.
    function raiseKeyVersion(bytes32 appId, uint32 keyVersion) external onlyAppOwner(appId) {
        uint32 current = _apps[appId].keyVersion;
        if (keyVersion <= current) revert KeyVersionNotRaised(current, keyVersion);
        _apps[appId].keyVersion = keyVersion;
        emit AppKeyVersionRaised(appId, keyVersion);
    }

    function setAppAllowDebug(bytes32 appId, bool allowDebug) external onlyAppOwner(appId) {
        _apps[appId].allowDebug = allowDebug;
        emit AppAllowDebugSet(appId, allowDebug);
    }

    /// @notice Waives named TEE checks for this app (bits: TEE_EXCEPTIONS; reserved bits revert).
    function setAppTeeExceptions(bytes32 appId, uint32 teeExceptions) external onlyAppOwner(appId) {
        if (teeExceptions & ~TEE_EXCEPTIONS != 0) revert BadPolicy();
        _apps[appId].teeExceptions = teeExceptions;
        emit AppTeeExceptionsSet(appId, teeExceptions);
    }

    /// @notice The GPU models the app accepts (GpuModel bits, 0 = any) and whether it needs a GPU at all.
    function setAppGpuPolicy(bytes32 appId, uint8 gpuModels, bool gpuRequired) external onlyAppOwner(appId) {
        if (gpuModels & ~GPU_MODELS != 0) revert BadPolicy();
        _apps[appId].gpuModels = gpuModels;
        _apps[appId].gpuRequired = gpuRequired;
        emit AppGpuPolicySet(appId, gpuModels, gpuRequired);
    }

    /// @notice Hands the measurement decision to the app's own IAppDelegate contract (address(0) to undo).
    function setAppDelegate(bytes32 appId, address delegate) external onlyAppOwner(appId) {
        _appDelegates[appId] = delegate;
        emit AppDelegateSet(appId, delegate);
    }

    /// @notice Step one of an ownership transfer: names the next owner, who must accept. The current owner
    /// keeps every power until then and may name someone else (address(0) cancels).
    function transferAppOwnership(bytes32 appId, address newOwner) external onlyAppOwner(appId) {
        _pendingAppOwners[appId] = newOwner;
        emit AppOwnershipTransferStarted(appId, msg.sender, newOwner);
    }

    /// @notice Step two: the named owner takes the app over.
    function acceptAppOwnership(bytes32 appId) external {
        address pending = _pendingAppOwners[appId];
        if (pending == address(0) || msg.sender != pending) revert NotPendingAppOwner(appId, msg.sender);
        address previous = _apps[appId].owner;
        _apps[appId].owner = pending;
        delete _pendingAppOwners[appId];
        emit AppOwnerChanged(appId, previous, pending);
    }

    function pendingAppOwner(bytes32 appId) external view returns (address) {
        return _pendingAppOwners[appId];
    }

    function freezeApp(bytes32 appId) external onlyOwnerOrCouncil {
        _setFrozen(appId, true);
    }

    function unfreezeApp(bytes32 appId) external onlyOwner {
        _setFrozen(appId, false);
    }

    function _setFrozen(bytes32 appId, bool frozen) private {
        if (_apps[appId].owner == address(0)) revert UnknownApp(appId);
        _apps[appId].frozen = frozen;
        emit AppFrozen(appId, frozen, msg.sender);
    }

    // ----------------------------------------------------------------------------------------------
    // platforms, revocations, node measurements

    function enablePlatform(uint8 platform) external onlyOwner {
        _setPlatform(platform, true, _platforms[platform].tcbFloor);
    }

    function disablePlatform(uint8 platform) external onlyOwnerOrCouncil {
        _setPlatform(platform, false, _platforms[platform].tcbFloor);
    }

    /// @notice Sets a platform's TCB floor. The council may only raise it.
    function setTcbFloor(uint8 platform, uint8 tcbFloor) external onlyOwnerOrCouncil {
        uint8 current = _platforms[platform].tcbFloor;
        if (msg.sender != owner() && tcbFloor <= current) revert CouncilCannotLower(platform, current, tcbFloor);
        _setPlatform(platform, _platforms[platform].enabled, tcbFloor);
    }

    function _setPlatform(uint8 platform, bool enabled, uint8 tcbFloor) private {
        _platforms[platform] = PlatformRule(enabled, tcbFloor);
        _platformIds.add(bytes32(uint256(platform)));
        emit PlatformRuleSet(platform, enabled, tcbFloor, msg.sender);
    }

    /// @notice SEV-SNP: the highest VMPL accepted (0-3) and the guest policy bits required (within
    /// SNP_POLICY_BITS; `value` only inside `mask`). Governance only.
    function setSnpPolicy(uint8 maxVmpl, uint64 mask, uint64 value) external onlyOwner {
        if (maxVmpl > 3 || mask & ~SNP_POLICY_BITS != 0 || value & ~mask != 0) revert BadPolicy();
        (_snpMaxVmpl, _snpGuestPolicyMask, _snpGuestPolicyValue) = (maxVmpl, mask, value);
        emit SnpPolicySet(maxVmpl, mask, value);
    }

    /// @notice SEV-SNP: the minimum TCB_VERSION of a product (0 Milan, 1 Genoa, 2 Turin; 0 = none). Governance only.
    function setSnpMinTcb(uint8 product, uint64 tcb) external onlyOwner {
        if (product > 2) revert BadPolicy();
        _snpMinTcb[product] = tcb;
        emit SnpMinTcbSet(product, tcb);
    }

    /// @notice The SEV-SNP policy (setSnpPolicy, setSnpMinTcb).
    function snpPolicy()
        external
        view
        returns (uint8 maxVmpl, uint64 guestPolicyMask, uint64 guestPolicyValue, uint64[3] memory minTcb)
    {
        return (_snpMaxVmpl, _snpGuestPolicyMask, _snpGuestPolicyValue, _snpMinTcb);
    }

    /// @notice Revokes an identifier at once (owner or council). Lengths: FMSPC 6; CHIP_ID 64; GPU_FWID 1..64;
    /// PPID 16; GPU_DEVICE 1..32; MEASUREMENT, CERT_SERIAL, EVIDENCE_HASH and PCK_CERT 32. CHIP_ID, PPID and
    /// GPU_DEVICE must not be all zero (a masked id names no machine). Revoking twice is a no-op.
    /// A revoked hardware id also fails every certificate that lists it (`verifyCertificate`).
    function revoke(RevocationKind kind, bytes calldata id) external onlyOwnerOrCouncil {
        (bool valid, bytes32 key) = _revocationKey(kind, id);
        if (!valid) revert BadRevocationId(kind, id.length);
        if (_revoked[kind].add(key)) {
            if (_isVariableKind(kind)) _variableIds[key] = id;
            if (_isHardwareKind(kind)) {
                bytes32 hardwareKey = keccak256(abi.encodePacked(uint8(kind), id));
                _hardwareRevoked[hardwareKey] = true;
                _hardwareBloom |= _bloomBits(hardwareKey);
            }
            emit Revoked(kind, id, msg.sender);
        }
    }

    /// @notice Lifts a revocation (owner only).
    function unrevoke(RevocationKind kind, bytes calldata id) external onlyOwner {
        (bool valid, bytes32 key) = _revocationKey(kind, id);
        if (!valid) revert BadRevocationId(kind, id.length);
        if (!_revoked[kind].remove(key)) revert NotRevoked(kind);
        if (_isVariableKind(kind)) delete _variableIds[key];
        if (_isHardwareKind(kind)) delete _hardwareRevoked[keccak256(abi.encodePacked(uint8(kind), id))];
        emit Unrevoked(kind, id, msg.sender);
    }

    function allowNodeMeasurement(uint8 platform, bytes32 digest) external onlyOwner {
        bytes32 key = _measurementKey(platform, digest);
        _rememberMeasurement(key, platform, digest);
        _nodeMeasurements.add(key);
        emit NodeMeasurementSet(platform, digest, true, msg.sender);
    }

    function disallowNodeMeasurement(uint8 platform, bytes32 digest) external onlyOwnerOrCouncil {
        _nodeMeasurements.remove(_measurementKey(platform, digest));
        emit NodeMeasurementSet(platform, digest, false, msg.sender);
    }

    /// @dev Kinds whose set key is a hash, so `_variableIds` keeps their bytes for enumeration.
    function _isVariableKind(RevocationKind kind) private pure returns (bool) {
        return kind == RevocationKind.CHIP_ID || kind == RevocationKind.GPU_FWID || kind == RevocationKind.PPID
            || kind == RevocationKind.GPU_DEVICE;
    }

    /// @dev Kinds that name hardware: a certificate lists keccak256(uint8 kind ‖ id) for each of them.
    function _isHardwareKind(RevocationKind kind) private pure returns (bool) {
        return kind == RevocationKind.FMSPC || _isVariableKind(kind) || kind == RevocationKind.PCK_CERT;
    }

    /// @dev Set key of a revocation: the id left-aligned for FMSPC and the 32-byte kinds, keccak256(kind ‖ id) for
    /// the variable ones; `valid` is false for a length (or an all-zero id) the kind does not accept.
    function _revocationKey(RevocationKind kind, bytes calldata id) private pure returns (bool valid, bytes32 key) {
        uint256 len = id.length;
        if (kind == RevocationKind.NONE) return (false, bytes32(0));
        if (kind == RevocationKind.FMSPC) return (len == 6, bytes32(id));
        if (!_isVariableKind(kind)) return (len == 32, bytes32(id));
        if (kind == RevocationKind.CHIP_ID) valid = len == 64 && !_isZero(id);
        else if (kind == RevocationKind.PPID) valid = len == 16 && !_isZero(id);
        else if (kind == RevocationKind.GPU_DEVICE) valid = len != 0 && len <= 32 && !_isZero(id);
        else valid = len != 0 && len <= 64;
        key = keccak256(abi.encodePacked(uint8(kind), id));
    }

    /// @dev The Bloom filter bits of a hardware key: bytes 0, 1 and 2 of the (uniform) keccak256 key as bit indices.
    function _bloomBits(bytes32 hardwareKey) private pure returns (uint256) {
        return (uint256(1) << uint8(hardwareKey[0])) | (uint256(1) << uint8(hardwareKey[1]))
            | (uint256(1) << uint8(hardwareKey[2]));
    }

    function _isZero(bytes calldata id) private pure returns (bool) {
        for (uint256 i = 0; i < id.length; i++) {
            if (id[i] != 0) return false;
        }
        return true;
    }

    function _measurementKey(uint8 platform, bytes32 digest) private pure returns (bytes32) {
        return keccak256(abi.encodePacked(platform, digest));
    }

    /// @dev Records the (platform, digest) behind a set key, for enumeration.
    function _rememberMeasurement(bytes32 key, uint8 platform, bytes32 digest) private {
        Measurement storage m = _measurementOf[key];
        if (m.digest != digest || m.platform != platform) {
            _measurementOf[key] = Measurement(platform, digest);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // certificates

    /// @notice Verifies a certificate (docs/design.md §4) and its BLS signature at the current block time, applying
    /// the current revocations. `sig` is the 128-byte EIP-2537 encoding of the G1 signature.
    /// @return ok true iff reason == OK.
    /// @return reason the first check that failed, in `Reason` order.
    function verifyCertificate(bytes calldata cert, bytes calldata sig) external view returns (bool ok, Reason reason) {
        reason = verifyCertificateAt(cert, sig, block.timestamp);
        ok = reason == Reason.OK;
    }

    /// @notice Like verifyCertificate, with the validity window evaluated at `time` (Unix seconds) and the
    /// revocations and epochs of the current state.
    function verifyCertificateAt(bytes calldata cert, bytes calldata sig, uint256 time)
        public
        view
        returns (Reason)
    {
        (bool decoded, Certificate memory c) = CertificateCodec.decode(cert);
        if (!decoded) return CertificateCodec.otherVersion(cert, CERT_VERSION) ? Reason.WRONG_VERSION : Reason.MALFORMED;
        if (sig.length != BLS12381.G1_SIZE) return Reason.MALFORMED_SIGNATURE;
        (Reason reason, address store) = _checkIssuer(c);
        if (reason != Reason.OK) return reason;
        reason = _checkSignature(cert, sig, store);
        if (reason != Reason.OK) return reason;
        return _checkState(c, time);
    }

    /// @dev Format, chain, registry and epoch checks; returns the key store of the certificate's epoch.
    function _checkIssuer(Certificate memory c) private view returns (Reason, address) {
        if (c.version != CERT_VERSION) return (Reason.WRONG_VERSION, address(0));
        if (c.chainId != block.chainid) return (Reason.WRONG_CHAIN, address(0));
        if (c.registry != address(this)) return (Reason.WRONG_REGISTRY, address(0));
        Epoch storage e = _epochs[c.epoch];
        Phase phase = e.phase;
        if (phase == Phase.NONE) return (Reason.UNKNOWN_EPOCH, address(0));
        if (phase != Phase.ACTIVE && phase != Phase.RETIRED) return (Reason.EPOCH_NOT_ACTIVE, address(0));
        address store = _current.keyStore;
        if (e.keyStore != store) return (Reason.EPOCH_KEY_RETIRED, address(0));
        return (Reason.OK, store);
    }

    function _checkSignature(bytes calldata cert, bytes calldata sig, address store) private view returns (Reason) {
        bytes memory pkSig = KeyStore.read(store, 0, BLS12381.G2_SIZE);
        (bool wellFormed, bool valid) = BLS12381.verify(sig, pkSig, keccak256(cert), DST_CERT);
        if (!wellFormed) return Reason.MALFORMED_SIGNATURE;
        if (!valid) return Reason.BAD_SIGNATURE;
        return Reason.OK;
    }

    /// @dev Revocations, validity window, app and platform policy, in Reason order.
    function _checkState(Certificate memory c, uint256 time) private view returns (Reason) {
        if (_revoked[RevocationKind.CERT_SERIAL].contains(c.serial)) return Reason.CERT_REVOKED;
        if (_revoked[RevocationKind.EVIDENCE_HASH].contains(c.evidenceHash)) return Reason.CERT_REVOKED;
        if (time < c.notBefore) return Reason.NOT_YET_VALID;
        if (time > c.notAfter) return Reason.EXPIRED;

        App memory app = _apps[c.appId];
        if (app.owner == address(0)) return Reason.UNKNOWN_APP;
        if (app.frozen) return Reason.APP_FROZEN;
        if (app.keyVersion != c.keyVersion) return Reason.KEY_VERSION_MISMATCH;

        PlatformRule memory rule = _platforms[c.platform];
        if (!rule.enabled) return Reason.PLATFORM_DISABLED;
        if (c.tcbStatus < rule.tcbFloor) return Reason.TCB_BELOW_FLOOR;
        if (_revoked[RevocationKind.MEASUREMENT].contains(c.measurement)) return Reason.MEASUREMENT_REVOKED;
        uint256 n = c.hardware.length;
        if (n == 0) return Reason.OK;
        uint256 bloom = _hardwareBloom;
        for (uint256 i = 0; i < n; i++) {
            bytes32 h = c.hardware[i];
            uint256 bits = _bloomBits(h);
            if (bloom & bits == bits && _hardwareRevoked[h]) return Reason.HARDWARE_REVOKED;
        }
        return Reason.OK;
    }

    /// @notice RFC 9380 hash_to_G1 of a 32-byte digest with DST_CERT, EIP-2537 encoding (for cross-checks).
    function hashToG1(bytes32 digest) external view returns (bytes memory) {
        return BLS12381.hashToG1(digest, DST_CERT);
    }

    // ----------------------------------------------------------------------------------------------
    // views

    function getNode(address operator) external view returns (Node memory) {
        return _nodes[operator];
    }

    function nodeCount() external view returns (uint256) {
        return _nodeSet.length();
    }

    /// @notice Operators and records of nodes [start, start+count) in registration order.
    function nodes(uint256 start, uint256 count) external view returns (address[] memory ops, Node[] memory recs) {
        uint256 end = _clamp(start, count, _nodeSet.length());
        ops = new address[](end - start);
        recs = new Node[](end - start);
        for (uint256 i = start; i < end; i++) {
            ops[i - start] = _nodeSet.at(i);
            recs[i - start] = _nodes[ops[i - start]];
        }
    }

    /// @return epoch the current (ACTIVE) epoch, 0 if none.
    function currentEpoch() external view returns (uint64) {
        return _current.epoch;
    }

    function getEpoch(uint64 epoch) public view returns (EpochView memory v) {
        Epoch storage e = _epochs[epoch];
        v = EpochView({
            id: epoch,
            phase: e.phase,
            threshold: e.threshold,
            previous: e.previous,
            startedBlock: e.startedBlock,
            activatedBlock: e.activatedBlock,
            keyStore: e.keyStore,
            transcriptHash: e.transcriptHash,
            members: e.members
        });
    }

    /// @notice The group keys of an activated epoch, EIP-2537 form (empty before activation).
    function epochKeys(uint64 epoch) external view returns (bytes memory pkSig, bytes memory pkKd) {
        address store = _epochs[epoch].keyStore;
        if (store == address(0)) return (pkSig, pkKd);
        pkSig = KeyStore.read(store, 0, BLS12381.G2_SIZE);
        pkKd = KeyStore.read(store, BLS12381.G2_SIZE, BLS12381.G2_SIZE);
    }

    /// @return index the 1-based member index of `member` in `epoch` (0 if not a member).
    function memberIndex(uint64 epoch, address member) external view returns (uint256 index) {
        return _memberIndex[epoch][member];
    }

    function reportOf(uint64 epoch, address member) external view returns (bytes32) {
        return _reports[epoch][member];
    }

    function reportCount(uint64 epoch, bytes32 reportHash) external view returns (uint256) {
        return _reportCounts[epoch][reportHash];
    }

    function getApp(bytes32 appId) public view returns (AppView memory v) {
        App memory app = _apps[appId];
        EnumerableSet.Bytes32Set storage set = _appMeasurements[appId];
        uint256 n = set.length();
        v.appId = appId;
        v.owner = app.owner;
        v.keyVersion = app.keyVersion;
        v.frozen = app.frozen;
        v.allowDebug = app.allowDebug;
        v.teeExceptions = app.teeExceptions;
        v.gpuModels = app.gpuModels;
        v.gpuRequired = app.gpuRequired;
        v.delegate = _appDelegates[appId];
        v.platforms = new uint8[](n);
        v.measurements = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            Measurement memory m = _measurementOf[set.at(i)];
            v.platforms[i] = m.platform;
            v.measurements[i] = m.digest;
        }
    }

    function appCount() external view returns (uint256) {
        return _appIds.length();
    }

    /// @notice App ids [start, start+count) in registration order (to read apps one by one).
    function appIds(uint256 start, uint256 count) external view returns (bytes32[] memory ids) {
        uint256 end = _clamp(start, count, _appIds.length());
        ids = new bytes32[](end - start);
        for (uint256 i = start; i < end; i++) {
            ids[i - start] = _appIds.at(i);
        }
    }

    /// @notice Apps [start, start+count) in registration order.
    function apps(uint256 start, uint256 count) external view returns (AppView[] memory out) {
        uint256 end = _clamp(start, count, _appIds.length());
        out = new AppView[](end - start);
        for (uint256 i = start; i < end; i++) {
            out[i - start] = getApp(_appIds.at(i));
        }
    }

    /// @notice Whether `measurement` on `platform` may run `appId` now: false if the app is unknown or frozen;
    /// the delegate decides when set (a delegate that reverts means no); else the app's allowed pairs.
    function isAppAllowed(bytes32 appId, uint8 platform, bytes32 measurement) external view returns (bool) {
        App memory app = _apps[appId];
        if (app.owner == address(0) || app.frozen) return false;
        address delegate = _appDelegates[appId];
        if (delegate != address(0)) {
            // Low-level: a delegate without code (an EOA) or one returning anything but one ABI bool means no,
            // where a high-level call would revert while decoding.
            if (delegate.code.length == 0) return false;
            (bool success, bytes memory answer) =
                delegate.staticcall(abi.encodeCall(IAppDelegate.isAppAllowed, (appId, platform, measurement)));
            if (!success || answer.length != 32) return false;
            return abi.decode(answer, (uint256)) == 1;
        }
        return _appMeasurements[appId].contains(_measurementKey(platform, measurement));
    }

    function platformRule(uint8 platform) external view returns (PlatformRule memory) {
        return _platforms[platform];
    }

    /// @notice Every platform that was ever configured, with its rule.
    function platformRules() external view returns (uint8[] memory ids, PlatformRule[] memory rules) {
        uint256 n = _platformIds.length();
        ids = new uint8[](n);
        rules = new PlatformRule[](n);
        for (uint256 i = 0; i < n; i++) {
            ids[i] = uint8(uint256(_platformIds.at(i)));
            rules[i] = _platforms[ids[i]];
        }
    }

    function isRevoked(RevocationKind kind, bytes calldata id) external view returns (bool) {
        (bool valid, bytes32 key) = _revocationKey(kind, id);
        return valid && _revoked[kind].contains(key);
    }

    function revocationCount(RevocationKind kind) external view returns (uint256) {
        return _revoked[kind].length();
    }

    /// @notice Revoked ids of one kind [start, start+count), as bytes of their original length. Lists are only
    /// read in pages, so no list can outgrow a node's eth_call gas limit.
    function revocationsPage(RevocationKind kind, uint256 start, uint256 count) external view returns (bytes[] memory ids) {
        EnumerableSet.Bytes32Set storage set = _revoked[kind];
        uint256 end = _clamp(start, count, set.length());
        ids = new bytes[](end - start);
        for (uint256 i = start; i < end; i++) {
            bytes32 key = set.at(i);
            if (_isVariableKind(kind)) ids[i - start] = _variableIds[key];
            else if (kind == RevocationKind.FMSPC) ids[i - start] = abi.encodePacked(bytes6(key));
            else ids[i - start] = abi.encodePacked(key);
        }
    }

    function nodeMeasurementCount() external view returns (uint256) {
        return _nodeMeasurements.length();
    }

    /// @notice Allowed node measurements [start, start+count).
    function nodeMeasurementsPage(uint256 start, uint256 count)
        external
        view
        returns (uint8[] memory platforms, bytes32[] memory digests)
    {
        uint256 end = _clamp(start, count, _nodeMeasurements.length());
        platforms = new uint8[](end - start);
        digests = new bytes32[](end - start);
        for (uint256 i = start; i < end; i++) {
            Measurement memory m = _measurementOf[_nodeMeasurements.at(i)];
            platforms[i - start] = m.platform;
            digests[i - start] = m.digest;
        }
    }

    function _clamp(uint256 start, uint256 count, uint256 length) private pure returns (uint256 end) {
        if (start >= length) return start;
        end = count > length - start ? length : start + count;
    }
}
