"""Ethereum side of derot: contracts build, deployment, typed clients and the registry follower.

Modules (import what you need; this package imports nothing heavy by itself):

- ``compile``   solc-js build of ``contracts/src`` into ``contracts/build`` (``python -m derot.devnet.compile``)
- ``anvil``     start/stop a real anvil; dev accounts; ``mine``/``warp``/``snapshot``/``revert``/``reorg``
- ``deploy``    ``deploy(w3, deployer, DeployParams.devnet(...))`` → ``Deployment`` (JSON round trip)
- ``registry``  ``Registry``: typed reads (at a block hash) and writes for operators, members, app owners
- ``actions``   typed governance actions (encode/decode calldata, summaries, CLI parsing)
- ``governance`` ``Governance``: propose/vote/queue/execute, proposal summaries; ``enact`` for devnets
- ``state``     ``RegistryState`` (GovernanceSnapshot + nodes + epochs + certificate revocations)
- ``follower``  ``Follower``: state at head − confirmations, every event once, reorgs, RPC outages, logs
                checked against block blooms and receipts
- ``quorum``    ``QuorumProvider``/``connect``: k-of-m RPC endpoints that must agree (``chain_unverified``)
- ``headers``   block headers re-hashed from their fields; the logs bloom test
- ``finality``  ``EraseGuard``/``ShareRetirement``: shares are erased only on a final, proven activation
                matching this node's own transcript
- ``freshness`` ``FreshnessClock``: staleness on the wall clock (``chain_stale``)
- ``tx``        signing/sending with decoded revert reasons (``TransactionFailed``)
- ``types``     ``NodeRecord``, ``EpochRecord``, ``NodeStatus``, ``RevocationKind``, ``EpochPhase``
"""
