"""The Peer port identifies its caller by the TLS key hash of the certificate it presented; parsing that
certificate on every call is worth memoising (issue 15 section 4), and these tests hold any such cache to
account, whatever its shape.

Attacks kept as tests: a certificate presented after a pinned node's must be identified by its own key (a
cache entry answers only for the exact bytes it was computed from), and a flood of distinct certificates
must neither displace a member's identity nor grow any cache without bound."""

from __future__ import annotations

import dataclasses

import pytest

from derot.net import status, tls
from derot.net.status import Refusal
from derot.service import peering
from derot.service.peering import Peering


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


def _caches():
    """The memo caches of the peering module (functools caches), if it has any."""
    return [obj for obj in vars(peering).values() if callable(getattr(obj, "cache_info", None))]


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


def test_a_flood_of_certificates_keeps_every_cache_bounded(committee):
    member = tls.generate_identity()
    state, operator = _state_pinning(committee, member)
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator
    for _ in range(300):  # distinct certificates, none registered
        with pytest.raises(Refusal):
            Peering.caller_operator(_Context(tls.generate_identity().cert_pem), state)
    assert Peering.caller_operator(_Context(member.cert_pem), state) == operator
    for cache in _caches():
        size = cache.cache_parameters()["maxsize"]
        assert size is not None and cache.cache_info().currsize <= size, f"{cache} is unbounded"
