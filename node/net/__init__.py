"""Node networking: gRPC servers and clients (Peer and RootOfTrust services), mTLS pinned by the registry, gateway fan-out."""
