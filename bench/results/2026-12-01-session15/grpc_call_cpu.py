"""Per-call CPU of a gRPC aio unary call over mutual TLS, client and server in separate processes (session 15).

Run from the repository root: .venv/bin/python bench/results/2026-12-01-session15/grpc_call_cpu.py
The server answers SubmitDkgMessage with an empty Ack (AUTH=1: it also reads the auth context)."""
import asyncio, os, sys, time, multiprocessing as mp
import grpc
sys.path.insert(0, os.getcwd())
from derot import _proto
from derot.net import tls

def server_proc(ident, port_q, stop_ev, cpu_q):
    async def main():
        pb = _proto.load("node_pb2"); g = _proto.load("node_pb2_grpc")
        class Peer(g.PeerServicer):
            async def SubmitDkgMessage(self, request, context):
                if os.environ.get("AUTH"): context.auth_context()
                return pb.Ack()
        server = grpc.aio.server()
        g.add_PeerServicer_to_server(Peer(), server)
        creds = grpc.ssl_server_credentials([(ident.key_pem, ident.cert_pem)], root_certificates=ident.cert_pem, require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        port_q.put(port)
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        t = os.times(); cpu_q.put(t.user + t.system)
        await server.stop(0)
    if os.environ.get('UV'):
        import uvloop; uvloop.run(main())
    else:
        asyncio.run(main())

async def client(ident, port, calls, conc, size):
    pb = _proto.load("node_pb2"); g = _proto.load("node_pb2_grpc")
    creds = grpc.ssl_channel_credentials(root_certificates=ident.cert_pem, private_key=ident.key_pem, certificate_chain=ident.cert_pem)
    ch = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=tls.channel_options())
    stub = g.PeerStub(ch)
    req = pb.DkgEnvelope(epoch=1, message=os.urandom(size))
    await stub.SubmitDkgMessage(req)
    t0 = os.times(); w0 = time.time()
    sem = asyncio.Semaphore(conc)
    async def one():
        async with sem:
            await stub.SubmitDkgMessage(req)
    await asyncio.gather(*(one() for _ in range(calls)))
    t1 = os.times()
    return (t1.user + t1.system - t0.user - t0.system), time.time() - w0

if __name__ == "__main__":
    ident = tls.generate_identity()
    for size, conc in ((2700, 1), (2700, 63), (30000, 63)):
        port_q, stop_ev, cpu_q = mp.Queue(), mp.Event(), mp.Queue()
        p = mp.Process(target=server_proc, args=(ident, port_q, stop_ev, cpu_q)); p.start()
        port = port_q.get()
        time.sleep(0.5)
        # server baseline CPU before calls is read via /proc
        def pcpu(pid):
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        s0 = pcpu(p.pid)
        calls = 3000
        c, w = asyncio.run(client(ident, port, calls, conc, size))
        s1 = pcpu(p.pid)
        stop_ev.set(); p.join()
        print(f"size {size} conc {conc}: client {c/calls*1e3:.3f} ms/call, server {(s1-s0)/calls*1e3:.3f} ms/call, wall {w/calls*1e3:.3f} ms/call")
