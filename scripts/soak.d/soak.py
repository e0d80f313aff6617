#!/usr/bin/env python3
"""The body of scripts/soak: a chaos soak of a real local cluster.

A proxy and five storage servers (each in its own network namespace, with a small tmpfs as
its disk) run while clients upload, overwrite, delete, download and list through `oss`, first
without faults (the calm phase), then while a fault driver injects one fault at a time at
random moments: SIGKILL and restart of a storage server, SIGSTOP and SIGCONT, SIGKILL and
restart of the proxy, a storage server's link cut and restored, its disk filled and freed, a
server added or removed. Every operation's start, end and result is recorded; at the end,
with every fault undone and `oss repair --wait` run, the history is checked:

- no operation failed (an absent name answering "not found" is not a failure);
- every download returned the bytes of an upload of that name that it could have seen: one
  that began before the read ended and that no acknowledged write or delete had superseded
  before the read began; "not found" likewise needs a delete (or nothing yet) it could see;
- every name ever touched reads back a value it may hold after the last write, and `oss check`
  finds every replica of it good (or deleted) on servers of the ring, without repairing;
- no daemon died unless the driver killed it, and none grew past its memory bound.

Standard library only. Needs root (network namespaces, tmpfs); run through scripts/soak.
"""

import argparse
import bisect
import concurrent.futures
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench.d"))
from bench import vm_hwm, write_secret  # noqa: E402

MiB = 1 << 20
USER = "soak"
HOT = [f"{USER}/hot/h{i:02}" for i in range(16)]
COLD_DIRS = 20
# How long one `oss` command may run before the soak calls it hung.
OP_TIMEOUT = 180
# Peak RSS above which a daemon counts as leaking (it streams in bounded buffers: promise 5).
RSS_BOUND = 256 * MiB
# The ring fault adds or removes this server (it starts outside the ring).
SPARE = 4
STORAGE_PORT = 7100
FAULTS = ["kill", "stop", "proxy", "net", "disk", "ring"]

ABSENT = "absent"


def now():
    return time.monotonic()


def md5_hex(b):
    return hashlib.md5(b).hexdigest()


def file_md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def sh(*argv, check=True):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.returncode}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss(proc, known):
    """The larger of `known` and a running process's peak RSS (it may exit meanwhile)."""
    if proc is None or proc.poll() is not None:
        return known
    try:
        return max(known, vm_hwm(proc.pid))
    except Exception:
        return known


def log(msg):
    print(f"soak {datetime.datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# The cluster


class Storage:
    """A storage server in network namespace NS with a tmpfs of `disk_mb` as its disk."""

    def __init__(self, soak, i):
        self.soak, self.i = soak, i
        tag = soak.tag
        self.ns = f"osssoak{tag}s{i}"
        self.host_if, self.ns_if = f"os{tag}h{i}", f"os{tag}n{i}"
        self.ip = f"10.231.{i}.2"
        self.addr = f"{self.ip}:{STORAGE_PORT}"
        self.mnt = os.path.join(soak.work, f"disk-{i}")
        self.data = os.path.join(self.mnt, "data")
        self.filler = os.path.join(self.mnt, "filler")
        self.proc = None
        self.starts = 0
        self.peak_rss = 0
        self.net_up = True
        self.stopped = False
        os.makedirs(self.mnt)
        sh("mount", "-t", "tmpfs", "-o", f"size={soak.args.disk_mb}m", "tmpfs", self.mnt)
        soak.cleanups.append(lambda: sh("umount", "-l", self.mnt, check=False))
        os.makedirs(self.data)
        sh("ip", "netns", "add", self.ns)
        soak.cleanups.append(lambda: sh("ip", "netns", "del", self.ns, check=False))
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"10.231.{i}.1/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        self.in_ns("ip", "addr", "add", f"{self.ip}/30", "dev", self.ns_if)
        self.in_ns("ip", "link", "set", self.ns_if, "up")
        self.in_ns("ip", "link", "set", "lo", "up")

    def in_ns(self, *argv, check=True):
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def start(self):
        self.starts += 1
        self.proc = self.soak.spawn(
            f"storaged-{self.i}",
            ["ip", "netns", "exec", self.ns, self.soak.exe("oss-storaged"), "--listen", self.addr,
             "--data", self.data, "--secret-file", self.soak.secret])
        self.soak.wait_listening(self.proc, f"storaged-{self.i}")

    # Faults, each with its undo.
    def kill(self):
        self.note_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def cut(self):
        # The namespace's end goes down: the host's end stays up without carrier, so packets
        # to the server are dropped, not refused, as with a pulled cable.
        self.in_ns("ip", "link", "set", self.ns_if, "down")
        self.net_up = False

    def mend(self):
        self.in_ns("ip", "link", "set", self.ns_if, "up")
        self.net_up = True

    def fill(self):
        st = os.statvfs(self.mnt)
        free = st.f_bavail * st.f_frsize
        with open(self.filler, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, max(free - 4096, 4096))
            except OSError:
                pass

    def unfill(self):
        try:
            os.unlink(self.filler)
        except FileNotFoundError:
            pass

    def note_rss(self):
        self.peak_rss = peak_rss(self.proc, self.peak_rss)

    def tmp_files(self):
        d = os.path.join(self.data, "tmp")
        return len(os.listdir(d)) if os.path.isdir(d) else 0


class Soak:
    def __init__(self, args):
        self.args = args
        self.tag = os.getpid() % 10000
        self.work = os.path.abspath(args.work)
        self.bin = os.path.abspath(args.bin)
        self.logs = os.path.join(self.work, "logs")
        self.scratch = os.path.join(self.work, "scratch")
        self.cleanups = []
        self.daemons = []
        self.lock = threading.Lock()
        self.history = []  # Op dicts
        self.faults = []  # fault records
        self.anomalies = []
        self.expected_exits = set()  # pids the driver killed
        self.stop_workload = threading.Event()
        self.faulting = threading.Event()
        self.phase = "calm"
        self.proxy = None
        self.proxy_starts = 0
        self.proxy_peak_rss = 0
        os.makedirs(self.logs)
        os.makedirs(self.scratch)

    # ---- processes

    def exe(self, name):
        return os.path.join(self.bin, name)

    def spawn(self, name, argv):
        out = open(os.path.join(self.logs, f"{name}.out"), "ab")
        err = open(os.path.join(self.logs, f"{name}.err"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.close()
        err.close()
        p.soak_name = name
        p.soak_log_at = os.path.getsize(os.path.join(self.logs, f"{name}.out"))
        self.daemons.append(p)
        return p

    def wait_listening(self, p, name, timeout=30):
        path = os.path.join(self.logs, f"{name}.out")
        deadline = now() + timeout
        while now() < deadline:
            with open(path, "rb") as f:
                f.seek(p.soak_log_at)
                if b"listening on" in f.read():
                    return
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}) during start-up; see {path}")
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start within {timeout}s; see {path}")

    def start_proxy(self):
        self.proxy_starts += 1
        disks = []
        for s in self.storage[:SPARE]:
            disks += ["--disk", s.addr]
        self.proxy = self.spawn(
            "proxy",
            [self.exe("oss-proxy"), "--listen", self.proxy_addr, "--state", self.state,
             "--secret-file", self.secret, "--partitions", "1024", "--replicas", "2", *disks])
        self.wait_listening(self.proxy, "proxy")

    def kill_proxy(self):
        self.note_proxy_rss()
        self.expected_exits.add(self.proxy.pid)
        self.proxy.send_signal(signal.SIGKILL)
        self.proxy.wait()

    def note_proxy_rss(self):
        self.proxy_peak_rss = peak_rss(self.proxy, self.proxy_peak_rss)

    def setup(self):
        self.secret = os.path.join(self.work, "secret")
        write_secret(self.secret)
        self.state = os.path.join(self.work, "proxy")
        self.proxy_addr = f"127.0.0.1:{free_port()}"
        self.storage = [Storage(self, i) for i in range(SPARE + 1)]
        for s in self.storage:
            s.start()
        self.start_proxy()
        self.admin_key = os.path.join(self.state, "admin.key")
        self.user_key = os.path.join(self.work, "soak.key")
        r = self.oss_admin("user", "add", USER)
        if r.returncode != 0:
            raise RuntimeError(f"oss user add {USER}: {r.stderr.strip()}")
        with open(self.user_key, "w") as f:
            f.write(r.stdout)
        self.in_ring = {s.addr for s in self.storage[:SPARE]}

    def teardown(self):
        for s in getattr(self, "storage", []):
            if s.stopped:
                s.thaw()
        for p in self.daemons:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = now() + 10
        for p in self.daemons:
            try:
                p.wait(timeout=max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for c in reversed(self.cleanups):
            c()

    # ---- oss commands

    def oss(self, key, *args, timeout=OP_TIMEOUT):
        argv = [self.exe("oss"), "--proxy", self.proxy_addr, "--key-file", key, *map(str, args)]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, -1, "", f"hung for more than {timeout}s")

    def oss_admin(self, *args, timeout=OP_TIMEOUT):
        return self.oss(self.admin_key, *args, timeout=timeout)

    def status(self):
        r = self.oss_admin("status", "--json", timeout=30)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def healthy(self):
        """Fully redundant, as the proxy knows it: every server of the ring online, no job
        running, and no copy on a stand-in waiting to go home."""
        st = self.status()
        if st is None:
            return False, None
        ok = (all(s["state"] == "Online" for s in st["servers"])
              and not any(j["running"] for j in st["jobs"])
              and st["replicator"]["pending"] == 0)
        return ok, st

    def bring_back(self, st):
        """A server declared offline and answering again is out of the ring until an admin adds
        it back: the operator's part, done as an operator would."""
        for s in st["servers"]:
            if s["state"] == "Back":
                r = self.oss_admin("add-disk", s["addr"])
                log(f"  add-disk {s['addr']} (it came back out of the ring): "
                    f"{(r.stdout or r.stderr).strip()}")
                self.in_ring.add(s["addr"])

    def wait_healthy(self, timeout=180):
        t0 = now()
        while now() - t0 < timeout:
            ok, st = self.healthy()
            if ok:
                return now() - t0
            if st is not None:
                self.bring_back(st)
                self.in_ring = {s["addr"] for s in st["servers"] if s["state"] != "Back"}
            time.sleep(0.2)
        return None

    # ---- the workload

    def record(self, op):
        with self.lock:
            self.history.append(op)

    def client(self, c):
        rng = random.Random(f"{self.args.seed}-client-{c}")
        scratch = os.path.join(self.scratch, f"c{c}")
        os.makedirs(scratch, exist_ok=True)
        up, down = os.path.join(scratch, "up"), os.path.join(scratch, "down")
        seq = 0
        while not self.stop_workload.is_set():
            seq += 1
            x = rng.random()
            name = rng.choice(HOT) if rng.random() < 0.5 else self.cold_name(rng)
            op = {"client": c, "seq": seq, "name": name, "phase": self.phase}
            if x < 0.40:
                size = self.size(rng)
                body = random.Random(f"{self.args.seed}-{c}-{seq}").randbytes(size)
                with open(up, "wb") as f:
                    f.write(body)
                op.update(kind="upload", value=md5_hex(body), size=size)
                self.run_op(op, "upload", name, up)
            elif x < 0.75:
                try:
                    os.unlink(down)
                except FileNotFoundError:
                    pass
                op.update(kind="download")
                self.run_op(op, "download", name, down)
                if op["status"] == "ok":
                    op["value"] = file_md5(down)
                    op["size"] = os.path.getsize(down)
                elif op["status"] == "notfound":
                    op["value"] = ABSENT
            elif x < 0.90:
                op.update(kind="delete")
                self.run_op(op, "delete", name)
            else:
                target = name.rsplit("/", 1)[0] + "/"
                op.update(kind="list", name=target)
                self.run_op(op, "list", target)
                if op["status"] == "ok":
                    op["listed"] = [line.strip() for line in op.pop("stdout").splitlines()
                                    if line.strip()]
            op.pop("stdout", None)
            self.record(op)

    def cold_name(self, rng):
        return f"{USER}/cold/d{rng.randrange(COLD_DIRS):02}/c{rng.randrange(self.args.cold):05}"

    @staticmethod
    def size(rng):
        x = rng.random()
        if x < 0.05:
            return 0
        if x < 0.45:
            return rng.randrange(1, 4096)
        if x < 0.85:
            return rng.randrange(4096, 256 << 10)
        if x < 0.97:
            return rng.randrange(256 << 10, 2 * MiB)
        return rng.randrange(2 * MiB, 8 * MiB + 1)

    def run_op(self, op, *args):
        op["start"] = now()
        r = self.oss(self.user_key, *args)
        op["end"] = now()
        err = r.stderr.strip().splitlines()
        if r.returncode == 0:
            op["status"] = "ok"
        elif err and "not found" in err[-1]:
            op["status"] = "notfound"
        else:
            op["status"] = "failed"
            op["error"] = err[-1] if err else f"exit {r.returncode}"
        op["stdout"] = r.stdout

    # ---- faults

    def fault_driver(self):
        rng = random.Random(f"{self.args.seed}-faults")
        kinds = self.args.faults
        while not self.stop_workload.is_set():
            if self.stop_workload.wait(rng.uniform(1.0, 4.0)):
                break
            kind = rng.choice(kinds)
            hold = rng.uniform(0.5, 3.0) if kind == "proxy" else rng.uniform(1.0, 8.0)
            members = [s for s in self.storage if s.addr in self.in_ring]
            victim = rng.choice(members)
            rec = {"kind": kind, "start": now(), "hold": round(hold, 2)}
            try:
                self.inject(rec, kind, victim, hold)
            except Exception as e:  # a fault that could not be injected is a soak bug
                self.anomalies.append(f"fault {kind}: {e}")
                log(f"fault {kind} failed: {e}")
            took = self.wait_healthy()
            rec["to_healthy"] = None if took is None else round(took, 2)
            self.faults.append(rec)
            log(f"fault {rec['kind']} {rec.get('target', '')} held {hold:.1f}s; fully redundant "
                f"again after {rec['to_healthy']}s")
            if took is None:
                self.anomalies.append(f"fault {kind} on {rec.get('target')}: the cluster was not "
                                      "healthy again within 180 s")

    def inject(self, rec, kind, s, hold):
        if kind == "proxy":
            rec["target"] = "proxy"
            self.kill_proxy()
            time.sleep(hold)
            self.start_proxy()
            return
        if kind == "ring":
            spare = self.storage[SPARE]
            if spare.addr in self.in_ring:
                rec["target"] = f"remove {spare.addr}"
                r = self.oss_admin("remove-disk", spare.addr)
                self.in_ring.discard(spare.addr)
            else:
                rec["target"] = f"add {spare.addr}"
                r = self.oss_admin("add-disk", spare.addr)
                self.in_ring.add(spare.addr)
            if r.returncode != 0:
                raise RuntimeError(r.stderr.strip())
            return
        rec["target"] = s.addr
        if kind == "kill":
            self.expected_exits.add(s.proc.pid)
            s.kill()
            time.sleep(hold)
            s.start()
        elif kind == "stop":
            s.freeze()
            time.sleep(hold)
            s.thaw()
        elif kind == "net":
            s.cut()
            time.sleep(hold)
            s.mend()
        elif kind == "disk":
            s.fill()
            time.sleep(hold)
            s.unfill()

    def watchdog(self):
        """Peak RSS of every daemon, and deaths the driver did not cause."""
        while not self.stop_workload.wait(0.5):
            self.sample()

    def sample(self):
        self.note_proxy_rss()
        for s in self.storage:
            s.note_rss()
        for p in self.daemons:
            rc = p.poll()
            if rc is not None and p.pid not in self.expected_exits:
                self.expected_exits.add(p.pid)
                self.anomalies.append(f"{p.soak_name} (pid {p.pid}) died on its own: exit {rc}")

    # ---- the run

    def run_phase(self, phase, secs, faults):
        self.phase = phase
        self.stop_workload.clear()
        n0 = len(self.history)
        threads = [threading.Thread(target=self.client, args=(c,), daemon=True)
                   for c in range(self.args.clients)]
        threads.append(threading.Thread(target=self.watchdog, daemon=True))
        driver = None
        if faults:
            driver = threading.Thread(target=self.fault_driver, daemon=True)
            threads.append(driver)
        t0 = now()
        for t in threads:
            t.start()
        time.sleep(secs)
        self.stop_workload.set()
        for t in threads:
            t.join()
        wall = now() - t0
        ops = self.history[n0:]
        done = len(ops)
        moved = sum(o.get("size", 0) for o in ops if o["status"] == "ok")
        log(f"{phase}: {done} operations in {wall:.1f}s")
        return {"phase": phase, "seconds": round(wall, 1), "ops": done,
                "ops_per_s": round(done / wall, 1), "mb_per_s": round(moved / wall / 1e6, 2),
                "failed": sum(1 for o in ops if o["status"] == "failed")}

    def undo_everything(self):
        for s in self.storage:
            if s.stopped:
                s.thaw()
            if not s.net_up:
                s.mend()
            s.unfill()
            if s.proc.poll() is not None:
                s.start()
        if self.proxy.poll() is not None:
            self.start_proxy()

    def final_check(self):
        """After `oss repair --wait`: every name reads back a value it may hold, and `oss check`
        finds its replicas good (or deleted) without having to repair them."""
        r = self.oss_admin("repair", "--wait", timeout=600)
        if r.returncode != 0:
            self.anomalies.append(f"oss repair --wait failed: {r.stderr.strip()}")
        names = sorted({o["name"] for o in self.history if o["kind"] != "list"})

        def one(job):
            i, name = job
            path = os.path.join(self.scratch, f"final-{i % 8}-{i}")
            op = {"client": -1, "seq": 0, "name": name, "phase": "final", "kind": "download"}
            self.run_op(op, "download", name, path)
            op.pop("stdout", None)
            if op["status"] == "ok":
                op["value"] = file_md5(path)
                os.unlink(path)
            elif op["status"] == "notfound":
                op["value"] = ABSENT
            chk = self.oss_admin("check", name, timeout=60)
            text = chk.stdout + chk.stderr
            # Every replica missing: a name never stored (or a reclaimed tombstone).
            states = re.findall(r"\b(good|deleted|missing|corrupt)\b", chk.stdout)
            mixed = any(x in ("missing", "corrupt") for x in states) and \
                any(x in ("good", "deleted") for x in states)
            bad = None
            if "(before repair)" in text or mixed or "corrupt" in states:
                bad = f"{name}: {' / '.join(text.strip().splitlines())}"
            return op, bad

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, enumerate(names)))
        reads = [op for op, _ in results]
        not_redundant = [bad for _, bad in results if bad]
        self.history.extend(reads)
        for n in not_redundant:
            self.anomalies.append(f"not fully redundant after repair: {n}")
        tmp = {s.addr: s.tmp_files() for s in self.storage}
        for addr, n in tmp.items():
            if n:
                self.anomalies.append(f"{addr} holds {n} temp files after the run")
        return len(names)


# ---------------------------------------------------------------------------------------------
# The history check


def check_history(history):
    """Anomalies of a history: reads that could not have seen what they returned.

    A write (upload or delete) w of a name is superseded before time t if an acknowledged
    write of that name began after w ended and ended before t (the proxy's timestamps order
    them). A read r may return the value of w if w began before r ended and was not superseded
    before r began. Unacknowledged (failed) writes may or may not have happened: they may be
    seen, but supersede nothing. So may a delete that answered "not found": its tombstone is
    written all the same (as in Swift), and it wins over an upload still in flight whose
    timestamp is older. The initial state, before any write, is "absent".
    """
    anomalies = []
    by_name = {}
    for o in history:
        by_name.setdefault(o["name"], []).append(o)
    for name, ops in by_name.items():
        writes = [o for o in ops if o["kind"] in ("upload", "delete")]
        acked = sorted((o for o in writes if o["status"] == "ok"), key=lambda o: o["start"])
        starts = [o["start"] for o in acked]
        # suffix_min_end[i]: the earliest end among acked writes starting at or after starts[i]
        suffix = [float("inf")] * (len(acked) + 1)
        for i in range(len(acked) - 1, -1, -1):
            suffix[i] = min(acked[i]["end"], suffix[i + 1])

        def superseded_at(end):
            """When a write that ended at `end` is superseded for sure (inf: never)."""
            return suffix[bisect.bisect_right(starts, end)]

        initial = {"start": float("-inf"), "end": float("-inf"), "kind": "delete"}
        values = {}
        for w in writes:
            v = w["value"] if w["kind"] == "upload" else ABSENT
            end = w["end"] if w["status"] == "ok" else float("inf")
            values.setdefault(v, []).append((w["start"], superseded_at(end), w))
        values.setdefault(ABSENT, []).append((initial["start"], superseded_at(initial["end"]),
                                               initial))
        for r in ops:
            if r["kind"] != "download" or r["status"] != "ok" and r["status"] != "notfound":
                continue
            v = r["value"]
            cands = values.get(v)
            if not cands:
                anomalies.append(f"{name}: read at {r['start']:.3f} ({r['phase']}) returned bytes "
                                 f"never written (md5 {v})")
                continue
            if not any(s < r["end"] and sup >= r["start"] for s, sup, _ in cands):
                what = "not found" if v == ABSENT else f"md5 {v}"
                latest = [w for w in acked if w["end"] < r["start"]][-1:]
                hint = ""
                if latest:
                    lw = latest[0]
                    hint = (f"; the last acknowledged write before it: {lw['kind']} "
                            f"{lw['start']:.3f}-{lw['end']:.3f}")
                anomalies.append(f"{name}: read {r['start']:.3f}-{r['end']:.3f} ({r['phase']}) "
                                 f"returned {what}, superseded before it began{hint}")
    return anomalies


def check_failures(history):
    return [f"{o['kind']} {o['name']} ({o['phase']}) failed: {o['error']}"
            for o in history if o["status"] == "failed"]


def summarize(history, phases, faults, anomalies, soak, elapsed):
    kinds = {}
    for o in history:
        if o["phase"] == "final":
            continue
        k = kinds.setdefault(o["kind"], {"ok": 0, "notfound": 0, "failed": 0})
        k[o["status"]] += 1
    by_kind = {}
    for f in faults:
        k = by_kind.setdefault(f["kind"], [])
        k.append(f["to_healthy"])
    return {
        "seed": soak.args.seed,
        "clients": soak.args.clients,
        "elapsed_s": round(elapsed, 1),
        "phases": phases,
        "operations": kinds,
        "faults": faults,
        "to_healthy_by_kind": {k: {"count": len(v),
                                   "max_s": max((x for x in v if x is not None), default=None),
                                   "mean_s": round(sum(x for x in v if x is not None)
                                                   / max(1, sum(1 for x in v if x is not None)), 2)}
                               for k, v in by_kind.items()},
        "peak_rss_mib": {"proxy": round(soak.proxy_peak_rss / MiB, 1),
                         **{f"storaged-{s.i}": round(s.peak_rss / MiB, 1) for s in soak.storage}},
        "anomalies": anomalies,
    }


def report_md(s):
    lines = [f"# soak: seed {s['seed']}, {s['clients']} clients, {s['elapsed_s']} s", ""]
    lines.append("| phase | seconds | operations | ops/s | MB/s moved | failed |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for p in s["phases"]:
        lines.append(f"| {p['phase']} | {p['seconds']} | {p['ops']} | {p['ops_per_s']} | "
                     f"{p['mb_per_s']} | {p['failed']} |")
    calm = next((p for p in s["phases"] if p["phase"] == "calm"), None)
    faulty = next((p for p in s["phases"] if p["phase"] == "faults"), None)
    if calm and faulty and calm["ops_per_s"]:
        lines.append("")
        lines.append(f"throughput with faults: {faulty['ops_per_s'] / calm['ops_per_s']:.2f} x calm")
    lines += ["", "| operation | ok | not found | failed |", "|---|---:|---:|---:|"]
    for k, v in sorted(s["operations"].items()):
        lines.append(f"| {k} | {v['ok']} | {v['notfound']} | {v['failed']} |")
    lines += ["", "| fault | injected | time to full redundancy after it: mean s | max s |",
              "|---|---:|---:|---:|"]
    for k, v in sorted(s["to_healthy_by_kind"].items()):
        lines.append(f"| {k} | {v['count']} | {v['mean_s']} | {v['max_s']} |")
    lines += ["", "peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in s["peak_rss_mib"].items()),
              "", f"anomalies: {len(s['anomalies'])}"]
    for a in s["anomalies"][:50]:
        lines.append(f"- {a}")
    if len(s["anomalies"]) > 50:
        lines.append(f"- ... and {len(s['anomalies']) - 50} more (soak.json)")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description="chaos soak of a local oss cluster")
    ap.add_argument("--bin", required=True, help="directory holding oss, oss-proxy, oss-storaged")
    ap.add_argument("--work", required=True, help="an empty directory for the cluster")
    ap.add_argument("--out", required=True, help="where soak.json and soak.md go")
    ap.add_argument("--duration", type=float, default=180, help="seconds of the fault phase")
    ap.add_argument("--calm", type=float, default=60,
                    help="seconds of the same workload without faults, first (0: none)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--cold", type=int, default=2000, help="cold names (hot: 16)")
    ap.add_argument("--disk-mb", type=int, default=1024, help="each server's tmpfs")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"which faults to inject (comma-separated, of {','.join(FAULTS)})")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    args.faults = [f for f in args.faults.split(",") if f]
    bad = [f for f in args.faults if f not in FAULTS]
    if bad:
        ap.error(f"unknown fault {bad[0]} (known: {', '.join(FAULTS)})")
    if os.geteuid() != 0:
        ap.error("the soak needs root (network namespaces and tmpfs mounts)")
    log(f"seed {args.seed} (replay: scripts/soak --seed {args.seed} ...)")
    soak = Soak(args)
    t0 = now()
    phases = []
    try:
        soak.setup()
        if args.calm > 0:
            phases.append(soak.run_phase("calm", args.calm, faults=False))
        if args.duration > 0:
            phases.append(soak.run_phase("faults", args.duration, faults=bool(args.faults)))
        log("undoing every fault; waiting until healthy")
        soak.undo_everything()
        if soak.wait_healthy() is None:
            soak.anomalies.append("the cluster was not healthy within 180 s after the faults")
        log("oss repair --wait, then every name read and checked")
        n = soak.final_check()
        log(f"checked {n} names")
        soak.sample()
        soak.anomalies += check_failures(soak.history)
        soak.anomalies += check_history(soak.history)
        for name, rss in [("proxy", soak.proxy_peak_rss)] + [
                (f"storaged-{s.i}", s.peak_rss) for s in soak.storage]:
            if rss > RSS_BOUND:
                soak.anomalies.append(f"{name} peaked at {rss / MiB:.0f} MiB "
                                      f"(bound {RSS_BOUND // MiB} MiB)")
        for s in soak.storage:
            for line in open(os.path.join(soak.logs, f"storaged-{s.i}.err"), errors="replace"):
                if "panicked" in line:
                    soak.anomalies.append(f"storaged-{s.i}: {line.strip()}")
        for line in open(os.path.join(soak.logs, "proxy.err"), errors="replace"):
            if "panicked" in line:
                soak.anomalies.append(f"proxy: {line.strip()}")
    finally:
        soak.teardown()
    summary = summarize(soak.history, phases, soak.faults, soak.anomalies, soak, now() - t0)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "history.json"), "w") as f:
        json.dump(soak.history, f)
    md = report_md(summary)
    with open(os.path.join(args.out, "soak.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"seed {args.seed}; report in {args.out}/soak.md, history in {args.out}/history.json")
    return 1 if soak.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
