import sys, collections
incl = collections.Counter(); selfc = collections.Counter(); total = 0; idle = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n); frames = stack.split(";")
    if not frames or not frames[0].startswith("_run_module_as_main"):
        continue
    if frames[-1].startswith("select (") or "_PollLikeSelector.select" in frames[-1] or frames[-1].startswith("EpollSelector.select"):
        idle += n; continue
    total += n
    selfc[frames[-1].split(" (")[0] + " " + frames[-1].split("/")[-1]] += n
    seen = set()
    for fr in frames[1:]:
        key = fr.split(" (")[0] + " " + fr.split("/")[-1].split(":")[0]
        if key not in seen:
            incl[key] += n; seen.add(key)
print("main busy samples", total, "idle(select)", idle)
for k, v in incl.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 70):
    print(f"{v/total*100:5.1f}% {k}")
print("--- self")
for k, v in selfc.most_common(30):
    print(f"{v/total*100:5.1f}% {k[:140]}")
