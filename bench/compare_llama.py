#!/usr/bin/env python3
"""Side-by-side speed of `muninn bench` and llama.cpp's `llama-bench` on one GGUF.

Rows: pp512, tg128, and tg128 after a 4096- and a 16384-token context in the KV cache (both
tools' -d), each at 1 and 2 threads. The two programs run interleaved: every round runs each
program once per thread count, the order alternating between rounds, so that a change in the
machine's load hits both. `uptime`'s load averages are recorded before every run.

llama-bench runs with `--repack 0` (its AMX repacked Q4_1 path dies with SIGILL in VMs that do
not enable AMX tiles) and with `-fa 0,1`; each row compares muninn with llama.cpp's faster
flash-attention setting. A row's figure is the median of all its samples over all rounds.

  bench/compare_llama.py --llama-bench /work/llama/.../build/bin/llama-bench \\
      --rounds 3 --json /tmp/compare.json
  bench/compare_llama.py --llama-bench LB --dry-run    # print the commands, run nothing

Only the Python standard library is used. Exit status: 0 on success, 2 for bad arguments, 1 when a
benchmark program fails (its stderr is shown).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def int_list(text):
    """'1,2' -> [1, 2]; every value an integer >= 0."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return values


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Interleaved muninn bench vs llama-bench comparison (pp, tg, tg at depth).")
    p.add_argument("--llama-bench", required=True, help="path of the llama-bench binary")
    p.add_argument("--muninn", default=os.path.join(ROOT, "build", "tools", "muninn"),
                   help="path of the muninn binary (default: build/tools/muninn)")
    p.add_argument("-m", "--model",
                   default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                   help="GGUF file both programs load")
    p.add_argument("-p", "--n-prompt", type=positive_int, default=512)
    p.add_argument("-n", "--n-gen", type=positive_int, default=128)
    p.add_argument("-d", "--depths", type=int_list, default=[4096, 16384],
                   help="depths for the extra tgN rows (comma-separated; default 4096,16384)")
    p.add_argument("-t", "--threads", type=int_list, default=[1, 2],
                   help="thread counts (comma-separated; default 1,2)")
    p.add_argument("--rounds", type=positive_int, default=3,
                   help="interleaved rounds for pp/tg at depth 0 (default 3)")
    p.add_argument("--depth-rounds", type=positive_int, default=None,
                   help="rounds for the depth rows (default: --rounds); each round builds the "
                        "depth context once per program and flash-attention setting")
    p.add_argument("-r", "--repetitions", type=positive_int, default=2,
                   help="repetitions inside each program run (default 2)")
    p.add_argument("--fa", type=int_list, default=[0, 1],
                   help="llama-bench flash-attention settings to try (default 0,1)")
    p.add_argument("--json", dest="json_path", default=None,
                   help="write the results here (default: print only)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if 0 in args.threads:
        p.error("--threads: every thread count must be >= 1")
    if any(f not in (0, 1) for f in args.fa):
        p.error("--fa: settings are 0 and 1")
    if 0 in args.depths:
        p.error("--depths: depth 0 is always measured (pp and tg rows); give only depths > 0")
    if args.depth_rounds is None:
        args.depth_rounds = args.rounds
    return args


def muninn_cmd(a, threads, depths, with_pp):
    cmd = [a.muninn, "bench", "-m", a.model, "-t", str(threads), "-r", str(a.repetitions),
           "-p", str(a.n_prompt if with_pp else 0), "-n", str(a.n_gen),
           "-d", ",".join(str(d) for d in depths), "--json"]
    if any(d > 0 for d in depths):
        # SmolLM2 was trained on 8192 positions; speed past them is what llama-bench measures too.
        cmd.append("--allow-ctx-overflow")
    return cmd


def llama_cmd(a, threads, depths, with_pp):
    return [a.llama_bench, "-m", a.model, "-t", str(threads), "-r", str(a.repetitions),
            "-p", str(a.n_prompt if with_pp else 0), "-n", str(a.n_gen),
            "-d", ",".join(str(d) for d in depths), "--repack", "0",
            "-fa", ",".join(str(f) for f in a.fa), "-o", "json"]


def test_name(n_prompt, n_gen, n_depth):
    name = f"pp{n_prompt}" if n_prompt > 0 else f"tg{n_gen}"
    return name + (f" @ d{n_depth}" if n_depth > 0 else "")


def parse_muninn(text):
    """muninn bench --json -> [(test, threads, fa=None, samples)]."""
    rows = []
    for r in json.loads(text):
        rows.append((r["test"], int(r["n_threads"]), None, [float(s) for s in r["samples_ts"]]))
    return rows


def parse_llama(text):
    """llama-bench -o json -> [(test, threads, fa, samples)], plus the build commit."""
    rows, commit = [], None
    for r in json.loads(text):
        test = test_name(int(r["n_prompt"]), int(r["n_gen"]), int(r.get("n_depth", 0)))
        fa = r.get("flash_attn")
        fa = int(fa) if isinstance(fa, (bool, int)) else fa
        rows.append((test, int(r["n_threads"]), fa, [float(s) for s in r["samples_ts"]]))
        commit = r.get("build_commit", commit)
    return rows, commit


def load_average():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def plan(a):
    """The runs in order: (round, program, threads, command)."""
    runs = []
    for rnd in range(max(a.rounds, a.depth_rounds)):
        for threads in a.threads:
            pieces = []
            if rnd < a.rounds:
                pieces.append(([0], True))
            if rnd < a.depth_rounds:
                pieces.append((a.depths, False))
            for depths, with_pp in pieces:
                pair = [("muninn", muninn_cmd(a, threads, depths, with_pp)),
                        ("llama.cpp", llama_cmd(a, threads, depths, with_pp))]
                if rnd % 2 == 1:
                    pair.reverse()
                runs.extend((rnd, prog, threads, cmd) for prog, cmd in pair)
    return runs


def summarize(samples, row_order):
    """samples: {(test, threads): {"muninn": [...], ("llama.cpp", fa): [...]}} -> rows."""
    rows = []
    for key in row_order:
        test, threads = key
        s = samples[key]
        m = statistics.median(s["muninn"]) if s.get("muninn") else None
        per_fa = {fa: statistics.median(v) for (prog, fa), v in
                  ((k, v) for k, v in s.items() if k != "muninn") if v}
        best_fa = max(per_fa, key=per_fa.get) if per_fa else None
        best = per_fa[best_fa] if per_fa else None
        rows.append({"test": test, "threads": threads,
                     "muninn_ts": m, "muninn_samples": s.get("muninn", []),
                     "llama_ts_by_fa": {str(fa): v for fa, v in per_fa.items()},
                     "llama_best_ts": best, "llama_best_fa": best_fa,
                     "ratio": (m / best) if m and best else None})
    return rows


def print_table(rows):
    print("| test | threads | muninn t/s | llama.cpp t/s (fa 0 / fa 1) | best fa | muninn / llama.cpp |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fa = " / ".join(f"{r['llama_ts_by_fa'][k]:.1f}" if k in r["llama_ts_by_fa"] else "—"
                        for k in ("0", "1"))
        m = f"{r['muninn_ts']:.1f}" if r["muninn_ts"] else "—"
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] else "—"
        print(f"| {r['test']} | {r['threads']} | {m} | {fa} | {r['llama_best_fa']} | {ratio} |")


def main(argv):
    a = parse_args(argv)
    runs = plan(a)
    if a.dry_run:
        for rnd, prog, threads, cmd in runs:
            print(f"# round {rnd + 1}, {prog}, {threads} thread(s)")
            print(" ".join(cmd))
        return 0
    for path, what in ((a.muninn, "--muninn"), (a.llama_bench, "--llama-bench")):
        if not os.access(path, os.X_OK):
            print(f"compare_llama: {what} {path} is not an executable file", file=sys.stderr)
            return 2
    if not os.path.isfile(a.model):
        print(f"compare_llama: model {a.model} not found", file=sys.stderr)
        return 2

    samples, row_order, log, commit = {}, [], [], None
    started = datetime.datetime.now(datetime.timezone.utc)
    for i, (rnd, prog, threads, cmd) in enumerate(runs):
        load = load_average()
        print(f"[{i + 1}/{len(runs)}] round {rnd + 1} {prog} -t {threads} (load {load[0]:.2f} "
              f"{load[1]:.2f} {load[2]:.2f}): {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = datetime.datetime.now()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        secs = (datetime.datetime.now() - t0).total_seconds()
        if proc.returncode != 0:
            print(f"compare_llama: {prog} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}",
                  file=sys.stderr)
            return 1
        if prog == "muninn":
            parsed = parse_muninn(proc.stdout)
        else:
            parsed, commit = parse_llama(proc.stdout)
        for test, thr, fa, vals in parsed:
            key = (test, thr)
            if key not in samples:
                samples[key] = {}
                row_order.append(key)
            slot = "muninn" if prog == "muninn" else ("llama.cpp", fa)
            samples[key].setdefault(slot, []).extend(vals)
        log.append({"round": rnd + 1, "program": prog, "threads": threads, "command": cmd,
                    "load_average": load, "seconds": secs})

    rows = summarize(samples, row_order)
    print_table(rows)
    loads = [r["load_average"][0] for r in log]
    print(f"\nload average (1 min) before each run: min {min(loads):.2f}, max {max(loads):.2f}; "
          f"llama.cpp build {commit}", file=sys.stderr)
    if a.json_path:
        out = {"date_utc": started.isoformat(timespec="seconds"),
               "machine": cpu_model(), "nproc": os.cpu_count(),
               "llama_build_commit": commit, "rounds": a.rounds, "depth_rounds": a.depth_rounds,
               "repetitions": a.repetitions, "rows": rows, "runs": log}
        with open(a.json_path, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
