"""Peer-port lookups per call at n = 64 (session 14): python bench/results/2026-12-01-session14/peer_lookup_microbench.py"""
import sys, time
sys.path.insert(0, "tests/service")
sys.path.insert(0, ".")
from conftest import Committee
from derot.service import peering
from derot.net import tls
import dataclasses
c = Committee.random(64, 43)
state = c.state()
ident = tls.generate_identity()
op = state.committee.members[-1]
nodes = dict(state.nodes); nodes[op] = dataclasses.replace(nodes[op], tls_key_hash=tls.spki_hash(ident.cert_pem))
state = dataclasses.replace(state, nodes=nodes)
class Ctx:
    def auth_context(self): return {"x509_pem_cert": [ident.cert_pem]}
ctx = Ctx()
N = 20000
t = time.process_time()
for _ in range(N):
    who = peering.Peering.caller_operator(ctx, state)
    peering.Peering.authorize(who, state)
print(f"{(time.process_time()-t)/N*1e6:.1f} us per call (caller_operator + authorize), n=64")
