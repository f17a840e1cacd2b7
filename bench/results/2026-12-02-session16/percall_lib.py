"""Per-thread CPU of a process from /proc (session 16: percall.py, perreq.py)."""
import os
CLK = os.sysconf("SC_CLK_TCK")
def threads(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        f = s.rsplit(") ", 1)[1].split()
        key = "main" if t == str(pid) else name.rstrip("0123456789-_")
        out[key] = out.get(key, 0) + (int(f[11]) + int(f[12])) / CLK
    return out
def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}

