"""Per-node CPU by thread category between two epoch times: thread_cpu_window.py LOG T0 T1 (session 15)."""
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
a = min(rows, key=lambda r: abs(r["t"] - t0)); b = min(rows, key=lambda r: abs(r["t"] - t1))
n = b["procs"]; dt = b['t']-a['t']
print(f"window {dt:.1f} s, {n} processes")
for k, vb in b["agg"].items():
    va = a["agg"].get(k, [0]*5)
    d = [vb[i]-va[i] for i in range(4)]
    print(f"  {k:14s} thr {vb[4]:4d} user {d[0]/n:.3f} sys {d[1]/n:.3f} s/node; vol ctx {d[2]/n/dt:7.0f}/s/node inv {d[3]/n/dt:6.0f}/s/node")
