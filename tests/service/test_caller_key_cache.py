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


# The Peer port's lookups are indexed once per registry state (peering._StateIndex). A stale index would let a
# removed member or a replaced key through until the next state, so each new state must be honoured at once,
# and the index must be keyed on the state object, not on anything two states can share (a block number).

def test_a_replaced_tls_key_is_refused_in_the_very_next_state(committee):
    first, second = tls.generate_identity(), tls.generate_identity()
    state, operator = _state_pinning(committee, first)
    assert Peering.caller_operator(_Context(first.cert_pem), state) == operator  # indexes ``state``
    nodes = dict(state.nodes)
    nodes[operator] = dataclasses.replace(nodes[operator], tls_key_hash=tls.spki_hash(second.cert_pem))
    rekeyed = dataclasses.replace(state, nodes=nodes)  # same block: only the key changed
    assert rekeyed.block_number == state.block_number
    with pytest.raises(Refusal) as refused:
        Peering.caller_operator(_Context(first.cert_pem), rekeyed)
    assert refused.value.reason == status.NOT_A_MEMBER
    assert Peering.caller_operator(_Context(second.cert_pem), rekeyed) == operator
    assert Peering.caller_operator(_Context(first.cert_pem), state) == operator  # each state its own answer


def test_a_member_dropped_from_the_epoch_is_refused_in_the_very_next_state(committee):
    state = committee.state()
    epoch = state.committee
    member = epoch.members[0]
    Peering.authorize(member, state)  # indexes ``state``
    smaller = dataclasses.replace(epoch, members=epoch.members[1:])
    dropped = dataclasses.replace(state, epochs={**state.epochs, epoch.id: smaller})
    assert dropped.block_number == state.block_number and dropped.committee.members == epoch.members[1:]
    with pytest.raises(Refusal) as refused:
        Peering.authorize(member, dropped)
    assert refused.value.metadata == {"status": "not_in_epoch"}
    Peering.authorize(epoch.members[1], dropped)
    Peering.authorize(member, state)
