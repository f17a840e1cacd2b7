"""The Peer port's caller identification memoises the TLS key hash per certificate (issue 15 section 4).

Attacks kept as tests: a certificate presented after a pinned node's was cached must be identified by its own
key (a cache entry answers only for the exact bytes it was computed from), and a flood of distinct certificates
cannot grow the cache past its bound."""

from __future__ import annotations

import dataclasses

import pytest

from derot.net import status, tls
from derot.net.status import Refusal
from derot.service import peering
from derot.service.peering import Peering, caller_key_hash


class _Context:
    def __init__(self, pem: bytes):
        self.pem = pem

    def auth_context(self):
        return {"x509_pem_cert": [self.pem]}


def _state_pinning(committee, identity: tls.TlsIdentity):
    """The committee's state with member 1's registered TLS key set to ``identity``'s."""
    state = committee.state()
    operator = state.committee.members[0]
    nodes = dict(state.nodes)
    nodes[operator] = dataclasses.replace(nodes[operator], tls_key_hash=tls.spki_hash(identity.cert_pem))
    return dataclasses.replace(state, nodes=nodes), operator


def test_the_cached_hash_is_the_certificates_own():
    ident = tls.generate_identity()
    assert caller_key_hash(ident.cert_pem) == tls.spki_hash(ident.cert_pem)
    assert caller_key_hash(ident.cert_pem) == tls.spki_hash(ident.cert_pem)  # a hit: the same answer


def test_an_attackers_certificate_is_not_identified_as_a_cached_member(committee):
    member = tls.generate_identity()
    state, operator = _state_pinning(committee, member)
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator  # now cached
    # same subject name, another key: must not be taken for the member
    attacker = tls.generate_identity()
    with pytest.raises(Refusal) as refused:
        Peering.caller_operator(_Context(attacker.cert_pem), state)
    assert refused.value.reason == status.NOT_A_MEMBER
    # and the member is still the member afterwards (the attacker's lookup did not displace or alter it)
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator


def test_a_flood_of_certificates_keeps_the_cache_bounded(committee):
    member = tls.generate_identity()
    state, operator = _state_pinning(committee, member)
    caller_key_hash.cache_clear()
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator
    for _ in range(peering.SPKI_CACHE_SIZE + 20):  # more distinct certificates than the cache holds
        flood = tls.generate_identity().cert_pem
        with pytest.raises(Refusal):
            Peering.caller_operator(_Context(flood), state)
    info = caller_key_hash.cache_info()
    assert info.currsize == peering.SPKI_CACHE_SIZE
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator  # evicted, recomputed, same answer
