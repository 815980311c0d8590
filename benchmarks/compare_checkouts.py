"""Time two checkouts of this project side by side: ``lkdn.Upscaler`` inference and a channels_last training step.

    git worktree add /tmp/lkdn-before <commit>
    python benchmarks/compare_checkouts.py --before /tmp/lkdn-before [--after .] [--rounds 7] [--threads 2]

Every (checkout, candidate) pair runs in its own Python process that imports ``lkdn`` from its
checkout, builds its candidate once and then times one call per request; the parent sends the
requests round by round, in rotated order, so a slow period of a shared machine falls on every
candidate alike (docs/benchmarks.md). Candidates:

* ``Upscaler(optimize=True)`` (``from_config`` of the shipped test YAML, official weights when
  found in the reference lookup order, else random ones) for LKDN x4, LKDN-S x4 (training form)
  and BSRN x4, LR 320x180, batch 1, float32;
* one training step of LKDN x4 as ``train.channels_last: true`` runs it (channels_last weights and
  batch, L1, Adam), batch 4, LR patch 48.

Prints a Markdown table: median and min-max per candidate and checkout, the ratio
``before / after`` of the medians (above 1: the second checkout is faster) and, for inference,
the peak memory held by tensors during one call (``lkdn.profiling.peak_memory``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INFERENCE = {
    "LKDN x4": ("options/test/LKDN/test_LKDN_x4.yml", "LKDN/LKDN_x4.pth"),
    "LKDN-S x4 (training form)": ("options/test/LKDN/test_LKDN-S_x4.yml", "LKDN/LKDN-S_x4.pth"),
    "BSRN x4": ("options/test/BSRN/test_BSRN_x4.yml", "BSRN/BSRN_x4.pth"),
}
TRAIN = "LKDN x4 training step, channels_last"

WORKER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
import lkdn
spec = json.loads(sys.argv[2])
torch.manual_seed(0)
if spec["kind"] == "inference":
    kwargs = {"weights": spec["weights"]} if spec["weights"] else {}
    if not spec["weights"]:
        import yaml
        opt = yaml.safe_load(open(spec["yml"]))
        net = lkdn.build_network(opt["network_g"])
        up = lkdn.Upscaler(net, device="cpu")
    else:
        up = lkdn.Upscaler.from_config(spec["yml"], device="cpu", **kwargs)
    x = torch.rand(1, 3, 180, 320)
    def call():
        up(x)
    def memory():
        from lkdn.profiling import peak_memory
        return peak_memory(up, x)["peak_mb"]
else:
    net = lkdn.build_network({"type": "LKDN", "upscale": 4}).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr = torch.rand(4, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    hr = torch.rand(4, 3, 192, 192).contiguous(memory_format=torch.channels_last)
    def call():
        loss = torch.nn.functional.l1_loss(net(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    def memory():
        return float("nan")
call()  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "memory":
        print(f"{memory():.3f}", flush=True)
        continue
    start = time.perf_counter()
    call()
    print(f"{(time.perf_counter() - start) * 1e3:.3f}", flush=True)
'''


class Worker:
    def __init__(self, checkout: Path, spec: dict, threads: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(checkout), json.dumps(spec), str(threads)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=checkout, env={**os.environ, "LKDN_OFFLINE": "1"},
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker for {checkout} {spec} did not start (got {line!r})")

    def ask(self, request: str) -> float:
        self.proc.stdin.write(f"{request}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the first checkout (e.g. a git worktree)")
    parser.add_argument("--after", type=Path, default=ROOT, help="the second checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    from lkdn.zoo import find_reference  # this checkout's reference lookup order

    specs = {}
    for name, (yml, weights) in INFERENCE.items():
        found = find_reference("pretrained", *Path(weights).parts)
        specs[name] = {"kind": "inference", "yml": str(ROOT / yml), "weights": str(found) if found else None}
    specs[TRAIN] = {"kind": "train"}
    times: dict[tuple[str, str], list[float]] = {}
    memory: dict[tuple[str, str], float] = {}
    for name, spec in specs.items():  # one candidate at a time: its two workers interleaved
        workers = {side: Worker(path, spec, args.threads) for side, path in checkouts.items()}
        order = list(workers)
        for r in range(args.rounds):
            for side in order[r % 2:] + order[: r % 2]:
                times.setdefault((name, side), []).append(workers[side].ask("run"))
        for side, worker in workers.items():
            memory[(name, side)] = worker.ask("memory")
            worker.close()
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, {args.rounds} rounds; "
          f"before = {checkouts['before']}, after = {checkouts['after']}\n")
    print("| candidate | before ms (median, min-max) | after ms (median, min-max) | before / after | "
          "peak MB before / after |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in specs:
        b, a = times[(name, "before")], times[(name, "after")]
        mb, ma = statistics.median(b), statistics.median(a)
        weights = "" if specs[name].get("weights", True) else " (random weights)"
        peak = memory[(name, "before")], memory[(name, "after")]
        peaks = "" if peak[0] != peak[0] else f"{peak[0]:.0f} / {peak[1]:.0f}"
        print(f"| {name}{weights} | {mb:.0f} ({min(b):.0f}-{max(b):.0f}) | {ma:.0f} ({min(a):.0f}-{max(a):.0f}) | "
              f"{mb / ma:.2f}x | {peaks} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
