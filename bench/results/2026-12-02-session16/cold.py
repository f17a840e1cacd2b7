import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, "bench"); sys.path.insert(0, ".")  # run from the repository root
import request_path as rp
from derot.attest.evidence import Evidence
from derot.attest.verify import verify_evidence
from derot.crypto import kd
with tempfile.TemporaryDirectory() as tmp:
    fx = rp.Fixture(Path(tmp))
    req = fx.request()
    share_secret = 12345678901234567890
    hashed = kd.kd_point(fx.app_id, 1)
    ops = {"verify": lambda: verify_evidence(Evidence.decode(req.evidence), fx.trust),
           "share": lambda: kd.derive_share(share_secret, kd.kd_point(fx.app_id, 1), fx.transport.public),
           "check": None}
    big = bytearray(96 << 20); junk = bytes(96 << 20)
    def thrash():
        big[:] = junk  # 96 MB written: evicts L1/L2/L3
        sum(range(20000))
    for name, fn in ops.items():
        if fn is None: continue
        for mode in ("hot", "cold"):
            samples = []
            for _ in range(200):
                if mode == "cold": thrash()
                t0 = time.thread_time(); fn(); samples.append(time.thread_time() - t0)
            samples.sort()
            print(f"{name:7s} {mode}: median {samples[100]*1e3:.3f} ms  p10 {samples[20]*1e3:.3f}")
