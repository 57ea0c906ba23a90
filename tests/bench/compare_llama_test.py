#!/usr/bin/env python3
"""Tests bench/compare_llama.py without running a model: argument checks, the interleaved plan
(--dry-run), and a full run against fake `muninn` and `llama-bench` programs that print canned
JSON in each program's format, checking medians, the best flash-attention setting and ratios."""

import json
import os
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "compare_llama.py")

# A fake program: reads its own argv and prints JSON rows for the tests it was asked for.
FAKE_MUNINN = r'''#!/usr/bin/env python3
import json, sys
a = sys.argv[1:]
assert a[0] == "bench", a
get = lambda f: a[a.index(f) + 1]
t, p, n = int(get("-t")), int(get("-p")), int(get("-n"))
depths = [int(d) for d in get("-d").split(",")]
if any(depths):
    assert "--allow-ctx-overflow" in a, a
rows = []
for d in depths:
    at = f" @ d{d}" if d else ""
    if p: rows.append({"test": f"pp{p}{at}", "n_threads": t, "samples_ts": [300.0 * t, 310.0 * t]})
    if n: rows.append({"test": f"tg{n}{at}", "n_threads": t, "samples_ts": [100.0 / (1 + d / 4096)] * 2})
print(json.dumps(rows))
'''

FAKE_LLAMA = r'''#!/usr/bin/env python3
import json, sys
a = sys.argv[1:]
get = lambda f: a[a.index(f) + 1]
assert get("--repack") == "0" and get("-o") == "json", a
t, p, n = int(get("-t")), int(get("-p")), int(get("-n"))
rows = []
for d in [int(x) for x in get("-d").split(",")]:
    for fa in [int(x) for x in get("-fa").split(",")]:
        # fa 1 is faster at depth, fa 0 at depth 0.
        speed = 50.0 * (1.2 if (fa == 1) == (d > 0) else 1.0)
        if p: rows.append({"build_commit": "abc1234", "n_prompt": p, "n_gen": 0, "n_depth": d,
                           "n_threads": t, "flash_attn": fa, "samples_ts": [speed * 2, speed * 2]})
        if n: rows.append({"build_commit": "abc1234", "n_prompt": 0, "n_gen": n, "n_depth": d,
                           "n_threads": t, "flash_attn": fa, "samples_ts": [speed, speed]})
print(json.dumps(rows))
'''


def run(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True)


class CompareLlamaTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.muninn = self.write("muninn", FAKE_MUNINN)
        self.llama = self.write("llama-bench", FAKE_LLAMA)
        self.model = os.path.join(self.dir, "model.gguf")
        open(self.model, "w").close()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def test_bad_arguments_are_clear_errors(self):
        for bad, msg in ((["--threads", "0"], "--threads"), (["--depths", "4k"], "--depths"),
                         (["--rounds", "0"], "--rounds"), (["--fa", "2"], "--fa"),
                         (["--depths", "0,4096"], "depth 0")):
            r = run(["--llama-bench", self.llama, "--dry-run"] + bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn(msg, r.stderr, bad)
        r = run([])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--llama-bench", r.stderr)
        r = run(["--llama-bench", os.path.join(self.dir, "missing"), "--muninn", self.muninn,
                 "-m", self.model])
        self.assertEqual(r.returncode, 2)
        self.assertIn("not an executable file", r.stderr)

    def test_dry_run_interleaves_and_alternates_the_order(self):
        r = run(["--llama-bench", "LB", "--muninn", "MU", "-m", "M", "--rounds", "2",
                 "--depth-rounds", "1", "--threads", "1", "--dry-run"])
        self.assertEqual(r.returncode, 0, r.stderr)
        cmds = [l for l in r.stdout.splitlines() if not l.startswith("#")]
        self.assertEqual(len(cmds), 6)  # round 1: pp/tg + depth pair; round 2: pp/tg pair only
        self.assertTrue(cmds[0].startswith("MU bench") and cmds[1].startswith("LB "))
        self.assertIn("-d 4096,16384", cmds[2])
        self.assertTrue(cmds[4].startswith("LB ") and cmds[5].startswith("MU bench"))
        for c in cmds:
            if c.startswith("LB "):
                self.assertIn("--repack 0", c)
                self.assertIn("-fa 0,1", c)

    def test_run_reports_medians_best_fa_and_ratios(self):
        out = os.path.join(self.dir, "out.json")
        r = run(["--llama-bench", self.llama, "--muninn", self.muninn, "-m", self.model,
                 "--rounds", "2", "--depth-rounds", "1", "--json", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| tg128 @ d4096 | 1 |", r.stdout)
        with open(out) as f:
            j = json.load(f)
        self.assertEqual(j["llama_build_commit"], "abc1234")
        rows = {(x["test"], x["threads"]): x for x in j["rows"]}
        self.assertEqual(len(rows), 8)  # pp512, tg128, tg128 @ d4096, @ d16384 × 1, 2 threads
        pp2 = rows[("pp512", 2)]
        self.assertAlmostEqual(pp2["muninn_ts"], 610.0)
        self.assertEqual(pp2["llama_best_fa"], 0)
        self.assertAlmostEqual(pp2["llama_best_ts"], 120.0)
        self.assertAlmostEqual(pp2["ratio"], 610.0 / 120.0)
        d = rows[("tg128 @ d4096", 1)]
        self.assertEqual(d["llama_best_fa"], 1)
        self.assertAlmostEqual(d["llama_best_ts"], 60.0)
        self.assertAlmostEqual(d["ratio"], 50.0 / 60.0)
        self.assertEqual(len(j["runs"]), 2 * 2 * 2 + 2 * 2)
        self.assertTrue(all(len(x["load_average"]) == 3 for x in j["runs"]))

    def test_a_failing_program_stops_the_run(self):
        bad = self.write("bad-llama", "#!/bin/sh\necho 'SIGILL in tilezero' >&2\nexit 132\n")
        r = run(["--llama-bench", bad, "--muninn", self.muninn, "-m", self.model, "--rounds", "1"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("tilezero", r.stderr)


if __name__ == "__main__":
    unittest.main()
