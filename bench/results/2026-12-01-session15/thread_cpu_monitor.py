"""Every 1 s, per thread category of the derot node processes (main = the event loop, else the thread name): user
and system CPU and context switches, appended as JSON lines to argv[1]. Stop with SIGINT (session 15)."""
import os, signal, sys, time, collections, json
HZ = os.sysconf("SC_CLK_TCK")
out = open(sys.argv[1], "w")
stop = False
def on(sig, frm):
    global stop; stop = True
signal.signal(signal.SIGINT, on); signal.signal(signal.SIGTERM, on)
last = {}
def nodes():
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try: cmd = open(f"/proc/{pid}/cmdline","rb").read()
        except OSError: continue
        if b"derot.cli.main\0node\0run" in cmd: yield pid
while not stop:
    for pid in list(nodes()):
        try: tids = os.listdir(f"/proc/{pid}/task")
        except OSError: continue
        for tid in tids:
            try:
                s = open(f"/proc/{pid}/task/{tid}/stat").read()
                st = open(f"/proc/{pid}/task/{tid}/status").read()
            except OSError: continue
            comm = s[s.index("(")+1:s.rindex(")")]
            f = s[s.rindex(")")+2:].split()
            vol = int(st.split("voluntary_ctxt_switches:")[1].split()[0])
            inv = int(st.split("nonvoluntary_ctxt_switches:")[1].split()[0])
            cat = "main" if tid == pid else comm
            last[(pid, tid)] = (cat, int(f[11]) / HZ, int(f[12]) / HZ, vol, inv)
    agg = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    for (cat, u, s_, v, i) in last.values():
        a = agg[cat]; a[0] += u; a[1] += s_; a[2] += v; a[3] += i; a[4] += 1
    out.write(json.dumps({"t": time.time(), "agg": agg, "procs": len({p for p, _ in last})}) + "\n"); out.flush()
    time.sleep(1.0)
