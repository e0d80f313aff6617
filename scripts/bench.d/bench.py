#!/usr/bin/env python3
"""The body of scripts/bench: starts local clusters, measures, prints one table.

Every figure is measured next to its baseline in the same run, on the same disk, because the
machines are shared and noisy: only ratios are worth comparing between runs. Standard library
only. Run it through scripts/bench (which builds and copies the binaries into WORK/bin and
cleans up after a crash of this script); its usage text lists the sections and knobs.

Units: MB/s is 10^6 bytes per second (as dd prints it); memory is MiB (2^20 bytes).
"""

import argparse
import datetime
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

MiB = 1 << 20
MB = 1e6

ALL_SECTIONS = ["big", "small", "list", "rss", "rebalance", "heal", "replicator", "fuse", "tree",
                "keys", "door", "swift"]

# The swift section's real OpenStack Swift: scripts/swift-aio's one account and user.
SWIFT_USER, SWIFT_KEY = "test:tester", "testing"

# The replicator section: its objects are 1 KiB (what it measures is the count, not bytes);
# the two proxies it compares run with the default --replicate-interval and an aggressive one.
REPL_SIZE = 1024
REPL_INTERVALS = (("30s", 30.0), ("1s", 1.0))
# The proxy's first pass runs as it starts; a window opens this long after that pass ended.
REPL_SETTLE_S = 2.0

# The keys section: 4 KiB objects (the size its target names).
KEYS_SIZE = 4096
# The baseline of the keys section when no commit adding `secret_file` to storaged is found.
KEYS_BASE_DEFAULT = "c706a44"


class SectionSkipped(Exception):
    """The section cannot run here (e.g. no FUSE); reported as `skipped: reason`."""


class CmdFailed(Exception):
    pass


def env_num(name, full, quick, quick_mode, kind=int):
    v = os.environ.get(name)
    if v is not None and v.strip() != "":
        return kind(v)
    return quick if quick_mode else full


class Config:
    def __init__(self):
        self.quick = os.environ.get("BENCH_QUICK", "0") not in ("", "0")
        q = self.quick
        self.big_mb = env_num("BENCH_BIG_MB", 1024, 64, q)
        self.small_objects = env_num("BENCH_SMALL_OBJECTS", 2000, 200, q)
        self.small_size = env_num("BENCH_SMALL_SIZE", 4096, 4096, q)
        conc = os.environ.get("BENCH_CONCURRENCY", "1,16")
        self.concurrency = [int(c) for c in conc.split(",") if c.strip()]
        self.huge_mb = env_num("BENCH_HUGE_MB", 2048, 256, q)
        self.rebal_mb = env_num("BENCH_REBAL_MB", 512, 64, q)
        self.heal_mb = env_num("BENCH_HEAL_MB", 512, 64, q)
        self.obj_mb = env_num("BENCH_OBJ_MB", 4, 4, q)
        self.ls_files = env_num("BENCH_LS_FILES", 10000, 10000, q)
        self.tree_user_files = env_num("BENCH_TREE_USER_FILES", 100000, 5000, q)
        self.tree_cp_files = env_num("BENCH_TREE_CP_FILES", 2000, 2000, q)
        self.tree_upload_files = env_num("BENCH_TREE_UPLOAD_FILES", 300, 100, q)
        self.tree_mv_mb = env_num("BENCH_TREE_MV_MB", 256, 32, q)
        self.keys_objects = env_num("BENCH_KEYS_OBJECTS", 2000, 200, q)
        self.swift_objects = env_num("BENCH_SWIFT_OBJECTS", 1000, 100, q)
        self.swift_list_objects = env_num("BENCH_SWIFT_LIST_OBJECTS", 2000, 200, q)
        self.swift_big_mb = env_num("BENCH_SWIFT_BIG_MB", 256, 64, q)
        self.repl_objects = env_num("BENCH_REPL_OBJECTS", 100000, 5000, q)
        self.repl_idle_s = env_num("BENCH_REPL_IDLE_S", 60, 15, q, float)
        self.repeat = max(1, env_num("BENCH_REPEAT", 3, 3, q))

    def as_dict(self):
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------
# Processes


class Runner:
    """Starts and times processes; remembers every long-running one so it can be stopped."""

    def __init__(self, work):
        self.work = work
        self.bin = os.path.join(work, "bin")
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.daemons = []  # Popen objects still to be stopped
        self.mounts = []  # (mountpoint, Popen)
        self.seq = itertools.count()
        self.last_cpu = 0.0

    def exe(self, name):
        return os.path.join(self.bin, name)

    def _note_pid(self, pid):
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{pid}\n")

    def spawn(self, name, argv, env=None):
        """A daemon with stdout and stderr in WORK/logs/NAME.{out,err}."""
        out = open(os.path.join(self.logs, f"{name}.out"), "wb")
        err = open(os.path.join(self.logs, f"{name}.err"), "wb")
        if env is None:
            env = getattr(argv, "env", None)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        out.close()
        err.close()
        p.bench_name = name
        self._note_pid(p.pid)
        self.daemons.append(p)
        return p

    def wait_line(self, p, stream, pattern, timeout=30.0):
        """Waits for a line matching `pattern` in the daemon's log; returns the match."""
        path = os.path.join(self.logs, f"{p.bench_name}.{stream}")
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            m = rx.search(text)
            if m:
                return m
            if p.poll() is not None:
                raise CmdFailed(f"{p.bench_name} exited ({p.returncode}) during start-up: "
                                f"{self.tail(p)}")
            if time.monotonic() > deadline:
                raise CmdFailed(f"{p.bench_name}: no '{pattern}' within {timeout:.0f}s: {self.tail(p)}")
            time.sleep(0.02)

    def tail(self, p, n=3):
        path = os.path.join(self.logs, f"{p.bench_name}.err")
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
            return " | ".join(lines[-n:]) or "(no stderr)"
        except OSError:
            return "(no log)"

    def stop(self, p, timeout=5.0, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.daemons:
            self.daemons.remove(p)

    def stop_all(self):
        for mnt, p in list(self.mounts):
            self.unmount(mnt, p)
        for p in list(reversed(self.daemons)):
            self.stop(p, timeout=3.0)

    def unmount(self, mnt, p):
        """SIGTERM lets ossfs upload what is dirty and unmount; then force what is left."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if mnt in mounted_paths():
            subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL, check=False)
        if (mnt, p) in self.mounts:
            self.mounts.remove((mnt, p))
        if p in self.daemons:
            self.daemons.remove(p)

    def run(self, argv, stdout=None, timeout=None, check=True, stdin=None, rss=False, env=None,
            log=None):
        """Runs a command to its end: (wall seconds, peak RSS in bytes or None, exit code).

        `env` is the command's environment; by default the one an `Argv` carries (a cluster's
        key), else ours. `log` names WORK/logs/LOG.err for its stderr (kept with the results).

        `stdout` is a path (written), None (discarded). Wall time includes process start-up,
        as a user would see it. With `rss`, the command runs under /usr/bin/time, whose %M is
        the peak RSS of the command alone. (Our own wait4 rusage would not do: a child forked
        from this Python process carries the parent's resident pages in its high-water mark
        until it execs, and Linux keeps that mark across exec.) Without /usr/bin/time, VmHWM
        is polled from /proc while the command runs.
        """
        k = next(self.seq)
        if env is None:
            env = getattr(argv, "env", None)
        errpath = os.path.join(self.logs, f"{log}.err" if log else f"cmd-{k}.err")
        rss_path = os.path.join(self.logs, f"cmd-{k}.rss")
        poll_rss = []
        if rss and os.access("/usr/bin/time", os.X_OK):
            argv = ["/usr/bin/time", "-f", "%M", "-o", rss_path, *argv]
        elif rss:
            poll_rss.append(0)
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL
        inp = open(stdin, "rb") if stdin else subprocess.DEVNULL
        err = open(errpath, "wb")
        killer = None
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, env=env)
        self._note_pid(p.pid)
        timed_out = []
        poller = None
        if poll_rss:
            def poll():
                while p.returncode is None:
                    try:
                        poll_rss[0] = max(poll_rss[0], vm_hwm(p.pid))
                    except (OSError, CmdFailed, ValueError):
                        return
                    time.sleep(0.01)
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        if timeout:
            def kill():
                timed_out.append(True)
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except OSError:
                    pass
            killer = threading.Timer(timeout, kill)
            killer.daemon = True
            killer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            raise
        finally:
            if killer:
                killer.cancel()
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        # CPU seconds of the command (not inherited across fork like the RSS mark is).
        self.last_cpu = ru.ru_utime + ru.ru_stime
        if poller:
            poller.join()
        for f in (out, inp):
            if f is not subprocess.DEVNULL:
                f.close()
        err.close()
        if timed_out:
            raise CmdFailed(f"timed out after {timeout:.0f}s: {show(argv)}")
        if check and p.returncode != 0:
            with open(errpath, "rb") as f:
                msg = f.read().decode("utf-8", "replace").strip().splitlines()
            raise CmdFailed(f"exit {p.returncode}: {show(argv)}: {' | '.join(msg[-3:])}")
        peak = None
        if poll_rss:
            peak = poll_rss[0]
        elif rss:
            with open(rss_path) as f:
                peak = int(f.read().strip().splitlines()[-1]) * 1024
        return dt, peak, p.returncode


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system) a live process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy():
    """(busy CPU seconds, total CPU seconds) of the whole machine, all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / CLK_TCK, sum(v[:8]) / CLK_TCK


class CpuMeter:
    """CPU used by a cluster's daemons and by the whole machine while a command runs: tells a
    CPU-bound measurement (and other tenants' load) from a disk- or latency-bound one."""

    def __init__(self, cluster):
        self.c = cluster

    def run(self, r, argv, **kw):
        c = self.c
        pids = {"proxy": [c.proxy.pid], "storaged": [p.pid for p, _, _ in c.storage
                                                     if p.poll() is None]}
        before = {k: sum(proc_cpu(p) for p in v) for k, v in pids.items()}
        m0 = machine_busy()
        res = r.run(argv, **kw)
        m1 = machine_busy()
        cpu = {k: sum(proc_cpu(p) for p in v) - before[k] for k, v in pids.items()}
        cpu["client"] = r.last_cpu
        cpu["wall"] = res[0]
        cpu["machine_busy_cpus"] = (m1[0] - m0[0]) / res[0] if res[0] > 0 else 0
        return res, cpu


def cpu_note(cpu, ops=None):
    """`client 0.31 + proxy 0.40 + storaged 0.90 CPU-s; machine busy 1.9 of 2 CPUs`."""
    ours = cpu["client"] + cpu["proxy"] + cpu["storaged"]
    if ops:
        k = 1000 / ops
        parts = (f"CPU ms per op: client {cpu['client'] * k:.2f}, proxy {cpu['proxy'] * k:.2f}, "
                 f"storaged {cpu['storaged'] * k:.2f} (all servers)")
    else:
        parts = (f"CPU s: client {cpu['client']:.2f}, proxy {cpu['proxy']:.2f}, "
                 f"storaged {cpu['storaged']:.2f} (all servers)")
    return (f"{parts}; ours busy {ours / cpu['wall']:.1f}, machine busy "
            f"{cpu['machine_busy_cpus']:.1f} of {os.cpu_count()} CPUs")


def mounted_paths():
    with open("/proc/mounts") as f:
        return {line.split()[1] for line in f}


def vm_hwm(pid):
    """Peak resident set size (bytes) of a running process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise CmdFailed(f"no VmHWM for pid {pid}")


SHOW_SUBST = []  # (long, short) replacements that keep printed commands readable


def show(argv):
    # Redirections are added to argv for display only; they stay unquoted.
    s = " ".join(str(a) if str(a).startswith(">") else shlex.quote(str(a)) for a in argv)
    for long, short in SHOW_SUBST:
        s = s.replace(long, short)
    return s


# ---------------------------------------------------------------------------------------------
# A cluster on loopback


class Argv(list):
    """A command line that carries the environment it runs with (`Runner.run` and `spawn` use
    it): `oss` commands of a cluster with keys carry OSS_KEY_FILE=its admin key."""

    def __init__(self, argv, env=None):
        super().__init__(argv)
        self.env = env


def admin_key(key_file):
    """The key text of an admin key file (`admin:KEY`, one line): what a Swift client sends
    as X-Auth-Key for `oss:admin`."""
    with open(key_file) as f:
        line = f.readline().strip()
    name, sep, key = line.partition(":")
    if not sep or name != "admin" or not key:
        raise CmdFailed(f"{key_file}: not an admin key line (admin:KEY)")
    return key


def swift_bench_argv(oss, auth_url, user, key, *args, env=None):
    """`oss bench --swift AUTH_URL --swift-user USER ARGS... --json`, with the key in the
    environment ($ST_KEY), so it shows in no printed command."""
    return Argv([oss, "bench", "--swift", auth_url, "--swift-user", user, *map(str, args),
                 "--json"], dict(env or os.environ, ST_KEY=key))


def last_json(path):
    """The last line of a command's stdout, as JSON (what `oss bench --json` prints)."""
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def write_secret(path):
    """A cluster secret as the daemons require it: 32 random bytes as 64 hex digits and a
    newline, mode 0600 (they refuse a file readable by group or others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
    finally:
        os.close(fd)


class Cluster:
    """A proxy and storage servers on loopback, under WORK/NAME.

    With `keys` (the default) every daemon gets `--secret-file WORK/NAME/secret`, and every
    `oss`/`ossfs` command runs with OSS_KEY_FILE=WORK/NAME/proxy/admin.key, the admin key the
    proxy writes on its first start. `keys=False` and `bindir` run an older build that knows
    neither flag (the keys section's baseline).

    `proxy_args` go to oss-proxy as they are. With `--http ADDR` among them (the Swift API
    door) the proxy's second stdout line gives the door's address: `http_addr`, `auth_url`
    (tempauth v1), and `swift_bench()` drives it as the account owner `oss:admin`.
    """

    def __init__(self, r, name, servers=4, spare=0, proxy_args=(), bindir=None, keys=True):
        self.r = r
        self.name = name
        self.dir = os.path.join(r.work, name)
        self.bin = bindir or r.bin
        self.storage = []  # [Popen, addr, datadir]
        os.makedirs(self.dir)
        self.secret = self.key_file = None
        self.env = None
        self.http_addr = self.auth_url = None
        self.secret_args = []
        if keys:
            self.secret = os.path.join(self.dir, "secret")
            write_secret(self.secret)
            self.secret_args = ["--secret-file", self.secret]
        for _ in range(servers + spare):
            self.start_storaged()
        disks = []
        for _, addr, _ in self.storage[:servers]:
            disks += ["--disk", addr]
        self.state = os.path.join(self.dir, "proxy")
        self.proxy_starts = 0
        self.start_proxy(["--partitions", "1024", "--replicas", "2", *disks, *proxy_args])
        if keys:
            self.key_file = os.path.join(self.state, "admin.key")
            if not os.path.isfile(self.key_file):
                raise CmdFailed(f"{name}-proxy started without writing {self.key_file}")
            self.env = dict(os.environ, OSS_KEY_FILE=self.key_file)
        self.wait_ready()

    def start_proxy(self, args):
        """Starts oss-proxy on the cluster's state dir with `args` (the first start also
        names the ring's shape and disks); logs go to WORK/logs/NAME-proxy[-K].{out,err}."""
        k = self.proxy_starts
        self.proxy_starts += 1
        self.proxy = self.r.spawn(f"{self.name}-proxy" + (f"-{k + 1}" if k else ""),
                                  [self.exe("oss-proxy"), "--listen", "127.0.0.1:0",
                                   "--state", self.state, *self.secret_args, *map(str, args)])
        self.addr = self.r.wait_line(self.proxy, "out",
                                     r"(?m)^oss-proxy listening on (\S+)").group(1)
        SHOW_SUBST.append((self.addr, "$P"))
        if "--http" in args:
            self.http_addr = self.r.wait_line(
                self.proxy, "out", r"(?m)^oss-proxy swift api listening on (\S+)").group(1)
            self.auth_url = f"http://{self.http_addr}/auth/v1.0"
            SHOW_SUBST.append((self.http_addr, "$H"))

    def restart_proxy(self, args=()):
        """Stops the proxy (SIGTERM) and starts it again on the same state dir and servers
        with `args` (the ring, users and keys are kept); returns once it answers."""
        self.r.stop(self.proxy)
        self.start_proxy(args)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.status()
                break
            except CmdFailed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def exe(self, name):
        return os.path.join(self.bin, name)

    def start_storaged(self):
        """Starts storage server number len(self.storage) (with the cluster's secret) and
        appends it to self.storage; returns [Popen, addr, datadir]."""
        i = len(self.storage)
        data = os.path.join(self.dir, f"data-{i}")
        os.makedirs(data)
        p = self.r.spawn(f"{self.name}-storaged-{i}",
                         [self.exe("oss-storaged"), "--listen", "127.0.0.1:0", "--data", data,
                          *self.secret_args])
        addr = self.r.wait_line(p, "out", r"listening on (\S+)").group(1)
        self.storage.append([p, addr, data])
        return self.storage[-1]

    def oss(self, *args):
        """An `oss` command for this cluster (an Argv: it carries the key)."""
        return Argv([self.exe("oss"), "--proxy", self.addr, *map(str, args)], self.env)

    def status(self):
        path = os.path.join(self.dir, "status.json")
        self.r.run(self.oss("status", "--json"), stdout=path, timeout=30)
        with open(path) as f:
            return json.load(f)

    def bench(self, *args, timeout=3600, cpu=False):
        """`oss bench ... --json`: (parsed result, command), plus CPU use if `cpu`."""
        argv = self.oss("bench", *args, "--json")
        path = os.path.join(self.dir, "bench.json")
        _, used = CpuMeter(self).run(self.r, argv, stdout=path, timeout=timeout)
        with open(path) as f:
            res = json.loads(f.read().strip().splitlines()[-1])
        return (res, argv, used) if cpu else (res, argv)

    def swift_bench(self, *args, timeout=3600, cpu=False):
        """`oss bench --swift` through this cluster's door as `oss:admin`: like `bench`."""
        if not self.auth_url:
            raise CmdFailed(f"cluster {self.name} has no Swift door (start it with --http)")
        argv = swift_bench_argv(self.exe("oss"), self.auth_url, "oss:admin",
                                admin_key(self.key_file), *args, env=self.env)
        path = os.path.join(self.dir, "swift-bench.json")
        _, used = CpuMeter(self).run(self.r, argv, stdout=path, timeout=timeout)
        res = last_json(path)
        return (res, argv, used) if cpu else (res, argv)

    def stop(self):
        self.r.stop(self.proxy)
        for p, _, _ in self.storage:
            self.r.stop(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def replicator_of(status):
    """The `replicator` object of `oss status --json` (passes, last_pass_micros, ...)."""
    rep = status.get("replicator")
    if not isinstance(rep, dict) or "passes" not in rep:
        raise CmdFailed("`oss status --json` has no replicator object (an oss-proxy from before "
                        "the replicator?)")
    return rep


def obj_files(datadir):
    """{relative path: size} of the .obj files under a storage server's data dir."""
    out = {}
    root = os.path.join(datadir, "objects")
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn.endswith(".obj"):
                p = os.path.join(dirpath, fn)
                try:
                    out[os.path.relpath(p, root)] = os.path.getsize(p)
                except OSError:
                    pass
    return out


def partitions_of(state_dir, addr):
    """Partitions the proxy's persisted ring gives to `addr`, or None if unreadable.

    Reads STATE/cluster.json's `ring` (devices with id and addr, assignment[partition] = ids).
    Only the bench's cross-check depends on this format; it degrades to None if it changes.
    """
    try:
        with open(os.path.join(state_dir, "cluster.json")) as f:
            ring = json.load(f)["ring"]
        ids = {d["id"] for d in ring["devices"] if d["addr"] == addr}
        return {p for p, row in enumerate(ring["assignment"]) if ids & set(row)}
    except (OSError, KeyError, TypeError, ValueError):
        return None


class SwiftAio:
    """Real OpenStack Swift through scripts/swift-aio (its default directory, .swift-aio in
    the repository, so packages, rings and devices are set up once): `setup`, `start`, `stop`
    as the script does them, and the CPU its servers used. A Swift that already ran before
    the bench started is left running."""

    def __init__(self, bench):
        self.b = bench
        self.script = os.path.join(bench.root, "scripts", "swift-aio")
        self.dir = os.path.realpath(os.environ.get("SWIFT_AIO_DIR",
                                                   os.path.join(bench.root, ".swift-aio")))
        port = os.environ.get("SWIFT_AIO_PORT", "8095")
        self.auth_url = f"http://127.0.0.1:{port}/auth/v1.0"
        self.was_running = False
        self.started = False
        SHOW_SUBST.append((self.auth_url, "$SWIFT"))

    def _run(self, cmd, timeout):
        self.b.say(f"scripts/swift-aio {cmd}")
        self.b.r.run([self.script, cmd], timeout=timeout, log=f"swift-aio-{cmd}")

    def setup(self):
        self._run("setup", 1800)

    def start(self):
        st = subprocess.run([self.script, "status"], capture_output=True, text=True,
                            check=False)
        self.was_running = st.returncode == 0
        self._run("start", 300)
        self.started = True

    def stop(self):
        if self.started and not self.was_running:
            self._run("stop", 120)
        self.started = False

    def cpu(self):
        """CPU seconds used so far by every process of Swift's servers: the process groups
        whose leaders swift-aio recorded in its run/ directory (workers included)."""
        groups = set()
        run = os.path.join(self.dir, "run")
        for fn in os.listdir(run) if os.path.isdir(run) else []:
            if fn.endswith(".pid") and not fn.startswith("memcached"):
                try:
                    with open(os.path.join(run, fn)) as f:
                        groups.add(int(f.read().strip()))
                except (OSError, ValueError):
                    pass
        total = 0.0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.getpgid(int(d)) in groups:
                    total += proc_cpu(int(d))
            except (OSError, ValueError, IndexError):
                pass
        return total


# ---------------------------------------------------------------------------------------------
# Baselines


def make_random_file(path, size):
    """`size` bytes that neither repeat nor compress, fsynced so that later timings do not pay
    for its write-back. Built from a 16 MiB random block with a counter in every MiB."""
    block = bytearray(os.urandom(16 * MiB))
    with open(path, "wb") as f:
        done, i = 0, 0
        while done < size:
            n = min(MiB, size - done)
            off = (i % 16) * MiB
            chunk = block[off:off + n]
            chunk[:8] = i.to_bytes(8, "little")
            f.write(chunk)
            done += n
            i += 1
        f.flush()
        os.fsync(f.fileno())


CREATE_DIRS = 256


def durable_creates(dirpath, n, conc, size):
    """Creates/s of `size`-byte files the durable way (open, write, fsync, close, rename, fsync
    dir) with `conc` threads (the GIL is released in every syscall).

    The files are spread over CREATE_DIRS directories made before the clock starts, as the
    store spreads objects over partition directories: in one directory, concurrent renames and
    directory fsyncs serialize (measured: c=16 in one dir ran at half the rate of 256 dirs),
    which would make the baseline, and so the target, look easier than the disk is.
    """
    os.makedirs(dirpath)
    dirs = [os.path.join(dirpath, f"{d:03d}") for d in range(CREATE_DIRS)]
    for d in dirs:
        os.makedirs(d)
    data = os.urandom(size)
    counter = itertools.count()
    errors = []

    def worker():
        try:
            while True:
                i = next(counter)
                if i >= n:
                    return
                d = dirs[i % CREATE_DIRS]
                tmp = os.path.join(d, f".tmp-{i}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, os.path.join(d, f"{i:07d}.obj"))
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    shutil.rmtree(dirpath)
    if errors:
        raise CmdFailed(f"durable-create baseline: {errors[0]}")
    return n / dt


# ---------------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, root, work, out, sections):
        self.root = root
        self.work = work
        self.out = out
        self.sections = sections
        self.cfg = Config()
        self.r = Runner(work)
        self.rows = []
        self.status = {}  # section -> "ok" | "failed: ..." | "skipped: ..."
        self.extra = {}  # section -> details kept in the JSON only
        self._big_src = None
        self._dd = None  # (MB/s, command)
        self.section = None
        SHOW_SUBST.extend([(os.path.join(work, "bin") + "/", ""), (work, "$W")])

    # -- rows ------------------------------------------------------------------------------

    def row(self, what, ours, unit, cmd, baseline=None, base_what=None, base_cmd=None,
            target=None, ratio=None, note=None):
        """One line of the table.

        target: None (information only), or (kind, value, text) with kind in
        'ratio>=', 'ratio<=', '>=', '<', '<=', '==' applied to the ratio or to `ours`.
        """
        if ratio is None and baseline:
            ratio = ours / baseline if ours is not None else None
        met = None
        if target is not None and ours is not None:
            kind, val, _ = target
            x = ratio if kind.startswith("ratio") else ours
            op = kind.replace("ratio", "")
            if x is not None:
                met = {">=": x >= val, "<=": x <= val, "<": x < val,
                       "==": abs(x - val) < 1e-9}[op]
        self.rows.append({
            "section": self.section, "what": what, "ours": ours, "unit": unit,
            "baseline": baseline, "baseline_what": base_what, "ratio": ratio,
            "target": target[2] if target else "info", "met": met,
            "command": show(cmd) if isinstance(cmd, list) else cmd,
            "baseline_command": show(base_cmd) if isinstance(base_cmd, list) else base_cmd,
            "note": note,
        })

    def say(self, msg):
        print(f"bench[{self.section}]: {msg}", file=sys.stderr, flush=True)

    def best(self, f):
        """Best of BENCH_REPEAT runs of f() -> (value, ...), highest value wins."""
        results = [f() for _ in range(self.cfg.repeat)]
        return max(results, key=lambda t: t[0])

    # -- shared inputs ---------------------------------------------------------------------

    def big_src(self):
        if self._big_src is None:
            path = os.path.join(self.work, "big.src")
            self.say(f"writing a {self.cfg.big_mb} MiB random source file")
            make_random_file(path, self.cfg.big_mb * MiB)
            self._big_src = path
        return self._big_src

    def dd_once(self):
        src = self.big_src()
        dst = os.path.join(self.work, "dd.out")
        argv = ["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"]
        os.sync()
        dt, _, _ = self.r.run(argv)
        os.unlink(dst)
        return os.path.getsize(src) / MB / dt, argv

    def dd_rate(self):
        """Raw durable write throughput of the disk: dd of the big source with fsync."""
        if self._dd is None:
            self._dd = self.best(self.dd_once)
        return self._dd

    # -- sections --------------------------------------------------------------------------

    def sec_big(self):
        c = Cluster(self.r, "big")
        try:
            src = self.big_src()
            size = os.path.getsize(src)
            name = "bench/big"
            up_argv = c.oss("upload", name, src)
            down_argv = c.oss("download", name, "-")
            file_out = os.path.join(self.work, "big.out")
            down_file_argv = c.oss("download", name, file_out)
            md5_argv = ["md5sum", src]
            dd, up, md5, down, down_file = [], [], [], [], []
            meter = CpuMeter(c)
            cpu = {"up": [], "down": []}  # per run, to pick the best run's
            # Pairs interleaved, so a burst of load from others hits both sides alike.
            dd_argv = None
            for _ in range(self.cfg.repeat):
                rate, dd_argv = self.dd_once()
                dd.append(rate)
                os.sync()
                (t, _, _), used = meter.run(self.r, up_argv)
                up.append(size / MB / t)
                cpu["up"].append(used)
                md5.append(size / MB / self.r.run(md5_argv)[0])
                (t, _, _), used = meter.run(self.r, down_argv)
                down.append(size / MB / t)
                cpu["down"].append(used)
                down_file.append(size / MB / self.r.run(down_file_argv)[0])
                os.unlink(file_out)
            self._dd = (max(dd), dd_argv)
            cpu = {"up": cpu["up"][up.index(max(up))], "down": cpu["down"][down.index(max(down))]}
            mb = size / MiB
            self.row(f"upload 1 object of {mb:.0f} MiB (MB/s)", max(up), "MB/s", up_argv,
                     max(dd), "dd conv=fsync, same bytes, same disk", dd_argv,
                     ("ratio>=", 0.48, "≥ 0.48 × dd"),
                     note="2 replicas on one disk: 0.50 is the ceiling; " + cpu_note(cpu["up"]))
            self.row(f"upload {mb:.0f} MiB vs md5sum (MB/s)", max(up), "MB/s", up_argv,
                     max(md5), "md5sum of the same file", md5_argv, None,
                     note="information: the client, and each storage server, hash every byte")
            self.row(f"download {mb:.0f} MiB to stdout, MD5 checked (MB/s)", max(down), "MB/s",
                     down_argv + [">/dev/null"], max(md5), "md5sum of the same file", md5_argv,
                     ("ratio>=", 0.80, "≥ 0.80 × md5sum"),
                     note="warm page cache on both sides; " + cpu_note(cpu["down"]))
            self.row(f"download {mb:.0f} MiB to a file (temp, fsync, rename) (MB/s)",
                     max(down_file), "MB/s", down_file_argv, max(md5), "md5sum of the same file",
                     md5_argv, None, note="also writes and fsyncs the copy; information only")
            self.extra["big"] = {"bytes": size, "dd_MBps": dd, "upload_MBps": up,
                                 "md5sum_MBps": md5, "download_stdout_MBps": down,
                                 "download_file_MBps": down_file, "cpu_best_runs": cpu}
        finally:
            c.stop()

    def sec_small(self):
        cfg = self.cfg
        n, size = cfg.small_objects, cfg.small_size
        c = Cluster(self.r, "small")
        phases = ("upload", "download", "delete")
        try:
            details = {}
            for conc in cfg.concurrency:
                base_dir = os.path.join(self.work, f"creates-{conc}")
                creates = []
                best = {}  # phase -> (ops/s, cpu, argv)
                runs = []
                for k in range(cfg.repeat):
                    os.sync()
                    creates.append(durable_creates(base_dir, n, conc, size))
                    os.sync()
                    # One invocation per phase, so each phase's CPU use is its own.
                    for ph in phases:
                        res, argv, cpu = c.bench("--objects", n, "--size", size,
                                                 "--concurrency", conc, "--user", f"small-c{conc}",
                                                 "--phases", ph, cpu=True)
                        rate = res["phases"][ph]["ops_per_s"]
                        runs.append({"phase": ph, "result": res["phases"][ph], "cpu": cpu})
                        if ph not in best or rate > best[ph][0]:
                            best[ph] = (rate, cpu, argv)
                base = max(creates)
                base_cmd = (f"scripts/bench.d/bench.py durable_creates(): {n} files of {size} B, "
                            f"{conc} threads, {CREATE_DIRS} dirs: open, write, fsync, close, "
                            f"rename, fsync dir")
                up, cpu_up, argv_up = best["upload"]
                self.row(f"{size} B uploads/s, c={conc}", up, "/s", argv_up, base,
                         f"durable creates/s, c={conc}", base_cmd,
                         ("ratio>=", 0.40, "≥ 0.40 × creates (80% of half)"),
                         note=cpu_note(cpu_up, n))
                for ph in ("download", "delete"):
                    rate, cpu, argv = best[ph]
                    self.row(f"{size} B {ph}s/s, c={conc}", rate, "/s", argv, None, None, None,
                             None, note="information (against Swift: the swift section); "
                             + cpu_note(cpu, n))
                details[f"c{conc}"] = {"durable_creates_per_s": creates, "runs": runs}
            self.extra["small"] = details
        finally:
            c.stop()

    def sec_list(self):
        cfg = self.cfg
        n, size = cfg.small_objects, cfg.small_size
        c = Cluster(self.r, "list")
        try:
            user = "listbench"
            self.say(f"uploading {n} objects of {size} B")
            c.bench("--objects", n, "--size", size, "--concurrency", 16, "--user", user,
                    "--phases", "upload", "--keep")
            runs = max(5, cfg.repeat)
            inproc, argv = [], None
            for _ in range(runs):
                res, argv = c.bench("--objects", n, "--size", size, "--user", user,
                                    "--phases", "list")
                ph = res["phases"]["list"]
                if ph.get("entries") != n:
                    raise CmdFailed(f"list phase saw {ph.get('entries')} entries, expected {n}")
                inproc.append(ph["ms"])
            # Baseline: `ls -l` of a local directory holding as many files.
            plain = os.path.join(self.work, "ls-plain")
            os.makedirs(plain)
            for i in range(n):
                with open(os.path.join(plain, f"bench-{i:06d}"), "wb") as f:
                    f.write(b"x")
            ls_argv = ["ls", "-l", plain]
            ls_ms = [self.r.run(ls_argv)[0] * 1000 for _ in range(runs)]
            shutil.rmtree(plain)
            list_out = os.path.join(self.work, "list.out")
            wall, wall_l = [], []
            for _ in range(runs):
                wall.append(self.r.run(c.oss("list", user), stdout=list_out)[0] * 1000)
                with open(list_out) as f:
                    got = sum(1 for _ in f)
                if got != n:
                    raise CmdFailed(f"oss list printed {got} lines, expected {n}")
                wall_l.append(self.r.run(c.oss("list", user, "-l"), stdout=list_out)[0] * 1000)
            med = statistics.median
            self.row(f"list {n} objects, in-process (oss bench list phase), median of {runs} (ms)",
                     med(inproc), "ms", argv, med(ls_ms), f"ls -l of a local dir of {n} files",
                     ls_argv + [">/dev/null"], ("<", 20.0, "< 20 ms"))
            self.row(f"`oss list` of {n} objects, command wall time, median of {runs} (ms)",
                     med(wall), "ms", c.oss("list", user) + [">file"], med(ls_ms),
                     f"ls -l of a local dir of {n} files", ls_argv + [">/dev/null"],
                     ("<", 20.0, "< 20 ms"), note="includes process start-up")
            self.row(f"`oss list -l` of {n} objects, command wall time (ms)", med(wall_l), "ms",
                     c.oss("list", user, "-l") + [">file"], med(ls_ms),
                     f"ls -l of a local dir of {n} files", ls_argv + [">/dev/null"])
            self.extra["list"] = {"inproc_ms": inproc, "oss_list_ms": wall,
                                  "oss_list_l_ms": wall_l, "ls_l_plain_ms": ls_ms}
        finally:
            c.stop()

    def sec_rss(self):
        cfg = self.cfg
        c = Cluster(self.r, "rss")
        try:
            src = os.path.join(self.work, "huge.src")
            self.say(f"writing a {cfg.huge_mb} MiB random source file")
            make_random_file(src, cfg.huge_mb * MiB)
            size = os.path.getsize(src)
            idle_proxy = vm_hwm(c.proxy.pid)
            idle_sd = max(vm_hwm(p.pid) for p, _, _ in c.storage)
            st_argv = c.oss("status")
            _, idle_oss, _ = self.r.run(st_argv, rss=True)
            up_argv = c.oss("upload", "bench/huge", src)
            out = os.path.join(self.work, "huge.out")
            down_argv = c.oss("download", "bench/huge", out)
            os.sync()
            t_up, rss_up, _ = self.r.run(up_argv, rss=True)
            t_down, rss_down, _ = self.r.run(down_argv, rss=True)
            os.unlink(out)
            os.unlink(src)
            proxy = vm_hwm(c.proxy.pid)
            sds = [vm_hwm(p.pid) for p, _, _ in c.storage]
            mb = size / MiB
            lim = ("<", 64.0, "< 64 MiB")
            self.row(f"peak RSS oss-proxy, {mb:.0f} MiB up and down (MiB)", proxy / MiB, "MiB",
                     f"VmHWM in /proc/{c.proxy.pid}/status after `{show(up_argv)}` and "
                     f"`{show(down_argv)}`", idle_proxy / MiB, "VmHWM after start-up (idle)",
                     "VmHWM before the transfers", lim)
            self.row(f"peak RSS oss-storaged (max of {len(sds)}) (MiB)", max(sds) / MiB, "MiB",
                     "VmHWM in /proc/PID/status of each oss-storaged, same transfers",
                     idle_sd / MiB, "VmHWM after start-up (idle)", "VmHWM before the transfers",
                     lim)
            self.row(f"peak RSS `oss upload` of {mb:.0f} MiB (MiB)", rss_up / MiB, "MiB", up_argv,
                     idle_oss / MiB, "`oss status` peak RSS", st_argv, lim,
                     note="/usr/bin/time -f %M")
            self.row(f"peak RSS `oss download` of {mb:.0f} MiB (MiB)", rss_down / MiB, "MiB",
                     down_argv, idle_oss / MiB, "`oss status` peak RSS", st_argv, lim,
                     note="/usr/bin/time -f %M")
            self.extra["rss"] = {"bytes": size, "upload_MBps": size / MB / t_up,
                                 "download_MBps": size / MB / t_down,
                                 "storaged_vmhwm_bytes": sds, "proxy_vmhwm_bytes": proxy}
            c.stop()
            # The same file through the Swift door, on a cluster of its own (a peak only
            # grows): every process must stay as low as on the native path.
            d = Cluster(self.r, "rss-door", proxy_args=("--http", "127.0.0.1:0"))
            try:
                make_random_file(src, cfg.huge_mb * MiB)
                os.sync()
                res, argv = d.swift_bench("--objects", 1, "--file", src, "--user", "rss",
                                          "--phases", "upload,download")
                os.unlink(src)
                for ph in ("upload", "download"):
                    if res["phases"][ph].get("bytes") != size:
                        raise CmdFailed(f"{show(argv)}: {ph} moved "
                                        f"{res['phases'][ph].get('bytes')} bytes, not {size}")
                d_proxy = vm_hwm(d.proxy.pid)
                d_sds = [vm_hwm(p.pid) for p, _, _ in d.storage]
                self.row(f"peak RSS oss-proxy, {mb:.0f} MiB up and down through the Swift door "
                         "(MiB)", d_proxy / MiB, "MiB",
                         f"VmHWM in /proc/PID/status of the door's proxy after `{show(argv)}`",
                         proxy / MiB, "the same through the native protocol (above)",
                         f"VmHWM after `{show(up_argv)}` and `{show(down_argv)}`", lim)
                self.row(f"peak RSS oss-storaged behind the door (max of {len(d_sds)}) (MiB)",
                         max(d_sds) / MiB, "MiB", "VmHWM of each oss-storaged, same transfers",
                         max(sds) / MiB, "the same through the native protocol (above)",
                         "VmHWM after the native transfers", lim)
                self.extra["rss"]["door"] = {"proxy_vmhwm_bytes": d_proxy,
                                             "storaged_vmhwm_bytes": d_sds,
                                             "result": res}
            finally:
                d.stop()
        finally:
            c.stop()

    def load_dataset(self, c, user, total_mb):
        """Uploads about total_mb MiB as BENCH_OBJ_MB objects; returns (objects, bytes, argv)."""
        obj = self.cfg.obj_mb
        n = max(1, total_mb // obj)
        self.say(f"uploading {n} objects of {obj} MiB")
        _, argv = c.bench("--objects", n, "--size", f"{obj}M", "--concurrency", 4, "--user", user,
                          "--phases", "upload", "--keep")
        return n, n * obj * MiB, argv

    def sec_rebalance(self):
        c = Cluster(self.r, "rebal", servers=4, spare=1)
        try:
            n, logical, load_argv = self.load_dataset(c, "rebal", self.cfg.rebal_mb)
            old = c.storage[:4]
            new_p, new_addr, new_dir = c.storage[4]
            before = [obj_files(d) for _, _, d in old]
            total_before = sum(sum(b.values()) for b in before)
            os.sync()
            argv = c.oss("add-disk", new_addr, "--wait")
            (dt, _, _), cpu = CpuMeter(c).run(self.r, argv, timeout=3600)
            after = [obj_files(d) for _, _, d in old]
            on_new = obj_files(new_dir)
            moved = sum(on_new.values())
            total_after = sum(sum(a.values()) for a in after) + moved
            churn = sum(sz for b, a in zip(before, after) for p, sz in a.items() if p not in b)
            st = c.status()
            parts = {s["addr"]: s["partitions"] for s in st["servers"]}
            p_new = parts.get(new_addr, 0)
            p_min = st["partitions"] * st["replicas"] / 5
            dd, dd_argv = self.dd_rate()
            # What the new server had to receive: one copy of every object stored in the
            # partitions the ring now gives it (the objects dir is objects/<partition>/...).
            mine = partitions_of(os.path.join(c.dir, "proxy"), new_addr)
            need = None
            if mine is not None:
                one_copy = {}
                for b in before:
                    for path, sz in b.items():
                        one_copy.setdefault(path, sz)
                need = sum(sz for path, sz in one_copy.items()
                           if int(path.split(os.sep)[0]) in mine)
            self.row(f"add-disk: bytes moved onto the new server, {n} × {self.cfg.obj_mb} MiB",
                     moved / MiB, "MiB", f"sum of .obj sizes in the new server's data dir after "
                     f"`{show(argv)}`", total_before / 5 / MiB,
                     "theoretical: all .obj bytes × 1/5", "sum of .obj sizes before", None,
                     note=f"information: with {n} objects, placement alone varies this by about "
                          f"±{100 / max(1, n * 2 / 5) ** 0.5:.0f}%; the next two rows are exact")
            self.row("add-disk: bytes moved vs the objects in the partitions it took", moved / MiB,
                     "MiB", "sum of .obj sizes in the new server's data dir",
                     None if need is None else need / MiB,
                     "one copy of each object in its partitions",
                     "partitions from the proxy's persisted ring (STATE/cluster.json)",
                     ("ratio==", 1.0, "1.00 (all moved, nothing extra)"),
                     note=None if need is not None else "ring file unreadable; no exact figure")
            self.row("add-disk: partition replicas moved to the new server", p_new, "",
                     "`oss status --json` after the add", p_min,
                     "theoretical minimum: partitions × replicas / 5", "design.md",
                     ("ratio<=", 1.05, "≤ 1.05 × minimum"))
            self.row("add-disk: bytes that appeared on the old servers", churn / MiB, "MiB",
                     "new .obj files in the 4 old data dirs", None, "", None,
                     ("==", 0, "0 (no move between old servers)"))
            self.row("add-disk: .obj bytes on disk after / before", total_after / MiB, "MiB",
                     "sum of .obj sizes on all 5 servers", total_before / MiB, "before the add",
                     None, ("ratio<=", 1.0, "1.00 (old copies deleted)"))
            rate = moved / MB / dt if dt > 0 else 0
            self.row(f"add-disk: rebalance rate, {dt:.1f} s (MB/s)", rate, "MB/s", argv, dd,
                     "dd conv=fsync (raw disk)", dd_argv, None,
                     note="moved bytes / wall time of add-disk --wait; " + cpu_note(cpu))
            self.extra["rebalance"] = {"objects": n, "logical_bytes": logical,
                                       "obj_bytes_before": total_before, "moved_bytes": moved,
                                       "seconds": dt, "churn_bytes": churn, "partitions": parts,
                                       "load_command": show(load_argv), "jobs": st["jobs"],
                                       "cpu": cpu}
        finally:
            c.stop()

    def sec_heal(self):
        offline_after = 2.0
        c = Cluster(self.r, "heal", proxy_args=["--offline-after", f"{offline_after:g}s"])
        try:
            n, logical, _ = self.load_dataset(c, "heal", self.cfg.heal_mb)
            files = [obj_files(d) for _, _, d in c.storage]
            k = max(range(len(files)), key=lambda i: sum(files[i].values()))
            victim, vaddr, _ = c.storage[k]
            lost = sum(files[k].values())
            names = set().union(*[set(f) for f in files])
            want = f"refill after {vaddr}"
            os.sync()
            self.say(f"kill -9 {vaddr} (holds {lost / MiB:.0f} MiB)")
            live_pids = [c.proxy.pid] + [p.pid for i, (p, _, _) in enumerate(c.storage) if i != k]
            cpu0 = sum(proc_cpu(p) for p in live_pids)
            m0 = machine_busy()
            t0 = time.perf_counter()
            victim.kill()
            victim.wait()
            t_detect = t_done = None
            job = None
            deadline = t0 + max(120.0, lost / MB / 2)
            while time.perf_counter() < deadline:
                st = c.status()
                now = time.perf_counter()
                srv = [s for s in st["servers"] if s["addr"] == vaddr]
                if t_detect is None and srv and srv[0]["state"] == "Offline":
                    t_detect = now - t0
                jobs = [j for j in st["jobs"] if j["what"].startswith(want)]
                if jobs and not jobs[-1]["running"] and jobs[-1]["finished"]:
                    job = jobs[-1]
                    t_done = now - t0
                    cpu_used = sum(proc_cpu(p) for p in live_pids) - cpu0
                    busy = (machine_busy()[0] - m0[0]) / t_done
                    if t_detect is None:
                        t_detect = t_done
                    break
                time.sleep(0.1)
            self.r.stop(victim)
            status_argv = c.oss("status", "--json")
            if t_done is None:
                self.row("heal: refill after kill -9", None, "s", status_argv, None, "", None,
                         ("<", 0, "finishes"), note=f"no finished '{want}…' job in time")
                raise CmdFailed(f"refill did not finish within {deadline - t0:.0f}s")
            live = [obj_files(d) for i, (_, _, d) in enumerate(c.storage) if i != k]
            whole = sum(1 for nm in names if sum(nm in f for f in live) >= 2)
            dd, dd_argv = self.dd_rate()
            self.row(f"heal: detection of a kill -9 (s), --offline-after {offline_after:g}s",
                     t_detect, "s", f"poll `{show(status_argv)}` every 0.1 s until Offline",
                     offline_after, "--offline-after", "proxy flag",
                     ("<=", offline_after + 1.0, f"≤ {offline_after + 1.0:g} s"))
            self.row(f"heal: kill -9 to refill finished, {lost / MiB:.0f} MiB lost (s)", t_done,
                     "s", f"poll `{show(status_argv)}` until the '{want}…' job has finished",
                     None, "", None)
            rate = lost / MB / t_done
            self.row("heal: restore rate, whole outage (MB/s)", rate, "MB/s",
                     "lost .obj bytes / (kill -9 → refill finished)", dd,
                     "dd conv=fsync (raw disk)", dd_argv, None,
                     note=f"detection time included; CPU s of proxy and live servers "
                          f"{cpu_used:.2f}, machine busy {busy:.1f} of {os.cpu_count()} CPUs")
            t_ref = t_done - t_detect
            self.row("heal: restore rate, refill only (MB/s)",
                     lost / MB / t_ref if t_ref > 0 else None, "MB/s",
                     "lost .obj bytes / (Offline → refill finished)", dd,
                     "dd conv=fsync (raw disk)", dd_argv, None)
            self.row("heal: objects with 2 replicas on live servers after refill", whole, "",
                     "count of each <md5>.obj name across the 3 live data dirs", len(names),
                     "objects before the kill", None, ("ratio>=", 1.0, "all"))
            self.extra["heal"] = {"objects": n, "logical_bytes": logical, "lost_bytes": lost,
                                  "detect_s": t_detect, "done_s": t_done, "job": job}
        finally:
            c.stop()

    # -- replicator: what its passes cost an idle cluster -----------------------------------

    def repl_window(self, c, interval):
        """Restarts c's proxy with `--replicate-interval INTERVAL` (same state dir and
        servers), waits for its start-up pass and REPL_SETTLE_S, then measures an idle window
        of BENCH_REPL_IDLE_S seconds: CPU seconds of the proxy and of every storage server,
        replicator passes done in it, and the replicator's counters at its end. The `oss
        status` calls that frame the window finish before it opens and after it closes."""
        secs = self.cfg.repl_idle_s
        c.restart_proxy(["--replicate-interval", interval])
        argv = list(c.proxy.args)
        deadline = time.monotonic() + 120
        while replicator_of(c.status())["passes"] < 1:
            if time.monotonic() > deadline:
                raise CmdFailed(f"`{show(argv)}`: no replicator pass within 120 s of its start")
            time.sleep(0.2)
        time.sleep(REPL_SETTLE_S)
        rep0 = replicator_of(c.status())
        sds = [p.pid for p, _, _ in c.storage]
        m0 = machine_busy()
        proxy0, sd0 = proc_cpu(c.proxy.pid), sum(proc_cpu(p) for p in sds)
        t0 = time.perf_counter()
        time.sleep(secs)
        proxy1, sd1 = proc_cpu(c.proxy.pid), sum(proc_cpu(p) for p in sds)
        dt = time.perf_counter() - t0
        m1 = machine_busy()
        st = c.status()
        rep1 = replicator_of(st)
        passes = rep1["passes"] - rep0["passes"]
        servers = len(st.get("servers", c.storage))
        return {
            "interval": interval, "argv": argv, "seconds": dt, "servers": servers,
            "passes": passes, "proxy_cpu_s": proxy1 - proxy0, "storaged_cpu_s": sd1 - sd0,
            "proxy_pct": 100 * (proxy1 - proxy0) / dt, "storaged_pct": 100 * (sd1 - sd0) / dt,
            "total_pct": 100 * (proxy1 - proxy0 + sd1 - sd0) / dt,
            "requests_per_s": passes * servers / dt,
            "last_pass_ms": rep1.get("last_pass_micros", 0) / 1000,
            "machine_busy_cpus": (m1[0] - m0[0]) / dt,
            "replicator_before": rep0, "replicator_after": rep1,
        }

    def sec_replicator(self):
        cfg = self.cfg
        n = cfg.repl_objects
        c = Cluster(self.r, "repl")
        try:
            self.say(f"uploading {n} objects of {REPL_SIZE} B")
            res, load_argv = c.bench("--objects", n, "--size", REPL_SIZE, "--concurrency", 16,
                                     "--user", "repl", "--phases", "upload", "--keep",
                                     timeout=7200)
            up = res["phases"]["upload"]
            os.sync()
            w = {}
            for interval, _ in REPL_INTERVALS:
                self.say(f"proxy with --replicate-interval {interval}: "
                         f"{cfg.repl_idle_s:g} s idle")
                w[interval] = self.repl_window(c, interval)
            (d_int, d_s), (a_int, a_s) = REPL_INTERVALS
            d, a = w[d_int], w[a_int]
            # The restarts kept the data: every object's two replicas are still on disk.
            copies = sum(len(obj_files(dd)) for _, _, dd in c.storage)
            counters = ("pending", "handed_back", "versions_copied", "out_of_sync")

            def ends(x):
                rep = x["replicator_after"]
                return ", ".join(f"{k} {rep[k]}" for k in counters if k in rep)
            secs = f"{d['seconds']:.0f} s"
            servers = d["servers"]

            def how(x):
                return (f"proc_cpu (/proc/PID/stat) before and after {x['seconds']:.1f} s idle, "
                        f"after `{show(x['argv'])}` on the loaded state dir")

            base_what = f"--replicate-interval {d_int} (default)"
            note = (f"{n} objects of {REPL_SIZE} B on {servers} servers, 2 replicas, loaded by "
                    f"`{show(load_argv)}`; {copies} .obj files on the servers after both "
                    f"windows; replicator at the end of each window: {a_int}: {ends(a)}; "
                    f"{d_int}: {ends(d)}")
            self.row(f"replicator, {secs} idle: passes, --replicate-interval {a_int} vs {d_int}",
                     a["passes"], "", f"`oss status --json` replicator.passes before and after "
                     f"the window; {how(a)}", d["passes"], base_what, how(d), None, note=note)
            self.row(f"replicator, {secs} idle: CPU of oss-proxy (% of one core)",
                     a["proxy_pct"], "%", how(a), d["proxy_pct"], base_what, how(d), None,
                     note=f"CPU s: {a['proxy_cpu_s']:.2f} vs {d['proxy_cpu_s']:.2f}; disk checks "
                          f"(every 500 ms) included")
            self.row(f"replicator, {secs} idle: CPU of oss-storaged, all {servers} (% of one "
                     "core)", a["storaged_pct"], "%", how(a), d["storaged_pct"], base_what,
                     how(d), None,
                     note=f"CPU s: {a['storaged_cpu_s']:.2f} vs {d['storaged_cpu_s']:.2f}")
            self.row("replicator: requests/s it adds (passes × servers / s)",
                     a["requests_per_s"], "/s", f"{a['passes']} × {servers} / "
                     f"{a['seconds']:.1f} s", d["requests_per_s"], base_what,
                     f"{d['passes']} × {servers} / {d['seconds']:.1f} s", None)
            self.row(f"replicator: last pass duration, {n} objects (ms)", a["last_pass_ms"], "ms",
                     "`oss status --json` replicator.last_pass_micros after the window",
                     d["last_pass_ms"], base_what, "the same", None)
            frac = d["total_pct"] / 100
            self.row(f"idle CPU at the default --replicate-interval {d_int}, oss-proxy + "
                     f"oss-storaged, {n} objects (% of one core)", d["total_pct"], "%", how(d),
                     None, None, None, ("<", 1.0, "< 1% of one core"),
                     note=f"{frac:.4f} of one core; everything the idle daemons did (disk checks "
                          f"included), so an upper bound of the replicator's part; machine busy "
                          f"{d['machine_busy_cpus']:.2f} of {os.cpu_count()} CPUs")
            # What one pass costs: the difference between the two windows (the same idle
            # cluster but for the passes), per extra pass; information, as noisy as the machine.
            rate_d = (d["proxy_cpu_s"] + d["storaged_cpu_s"]) / d["seconds"]
            rate_a = (a["proxy_cpu_s"] + a["storaged_cpu_s"]) / a["seconds"]
            extra = a["passes"] / a["seconds"] - d["passes"] / d["seconds"]
            per_pass = (rate_a - rate_d) / extra if extra > 0 else None
            self.row("replicator: CPU per pass, proxy + all storaged (ms), from the two windows",
                     None if per_pass is None else per_pass * 1000, "ms",
                     f"(CPU/s at {a_int} − CPU/s at {d_int}) / (passes/s at {a_int} − passes/s "
                     f"at {d_int})", None, None, None, None,
                     note="information; the difference of two small figures on a shared machine"
                          + ("" if per_pass is None else
                             f"; at one pass per {d_s:g} s: {100 * per_pass / d_s:.4f}% of one "
                             f"core"))
            self.extra["replicator"] = {
                "objects": n, "object_bytes": REPL_SIZE, "upload": up,
                "load_command": show(load_argv), "settle_s": REPL_SETTLE_S,
                "obj_files_after": copies,
                "windows": {k: dict(v, argv=show(v["argv"])) for k, v in w.items()},
                "cpu_per_pass_s": per_pass,
            }
        finally:
            c.stop()

    def start_ossfs(self, c, mnt):
        exe = self.r.exe("ossfs")
        if not os.path.exists(exe):
            raise SectionSkipped("target/release/ossfs was not built")
        if not os.path.exists("/dev/fuse"):
            raise SectionSkipped("no /dev/fuse on this machine")
        os.makedirs(mnt)
        p = self.r.spawn("ossfs", [exe, "--proxy", c.addr, mnt], env=c.env)
        self.r.mounts.append((mnt, p))
        deadline = time.monotonic() + 20
        while mnt not in mounted_paths():
            if p.poll() is not None:
                raise SectionSkipped(f"ossfs exited ({p.returncode}): {self.r.tail(p)}")
            if time.monotonic() > deadline:
                raise SectionSkipped(f"ossfs did not mount within 20 s: {self.r.tail(p)}")
            time.sleep(0.05)
        return p

    def sec_fuse(self):
        cfg = self.cfg
        c = Cluster(self.r, "fuse")
        try:
            mnt = os.path.join(self.work, "mnt")
            fs = self.start_ossfs(c, mnt)
            src = self.big_src()
            size = os.path.getsize(src)
            mb = size / MiB
            # A generous bound: a hung mount must not hang the bench.
            tmo = max(120.0, size / MB / 5)
            udir = os.path.join(mnt, "fusebench")
            try:
                self.r.run(["mkdir", "-p", udir], timeout=30)
                plain_dst = os.path.join(self.work, "plain.copy")
                cli_out = os.path.join(self.work, "cli.out")
                fuse_out = os.path.join(self.work, "fuse.out")
                plain_argv = ["cp", src, plain_dst]
                up_argv = c.oss("upload", "fusebench/cli", src)
                down_argv = c.oss("download", "fusebench/cli", "-")
                cpin_argv = ["cp", src, os.path.join(udir, "big")]
                cpout_argv = ["cp", os.path.join(udir, "big"), fuse_out]
                plain, up, down, cpin, cpout = [], [], [], [], []
                for _ in range(cfg.repeat):
                    os.sync()
                    plain.append(size / MB / self.r.run(plain_argv, timeout=tmo)[0])
                    os.unlink(plain_dst)
                    os.sync()
                    up.append(size / MB / self.r.run(up_argv, timeout=tmo)[0])
                    cpin.append(size / MB / self.r.run(cpin_argv, timeout=tmo)[0])
                    down.append(size / MB / self.r.run(down_argv, stdout=cli_out, timeout=tmo)[0])
                    os.unlink(cli_out)
                    cpout.append(size / MB / self.r.run(cpout_argv, timeout=tmo)[0])
                    same = self.r.run(["cmp", "-s", src, fuse_out], check=False)[2] == 0
                    os.unlink(fuse_out)
                    if not same:
                        raise CmdFailed(f"`{show(cpout_argv)}` gave different bytes than "
                                        f"`{show(cpin_argv)}` stored")
                self.row(f"cp {mb:.0f} MiB into the mount (MB/s)", max(cpin), "MB/s", cpin_argv,
                         max(up), "oss upload of the same file", up_argv,
                         ("ratio>=", 0.80, "≥ 0.80 × CLI"),
                         note="cp returns after close(), i.e. after the upload")
                self.row(f"cp {mb:.0f} MiB out of the mount (MB/s)", max(cpout), "MB/s",
                         cpout_argv, max(down), "oss download - > file (no fsync, like cp)",
                         down_argv + [">file"], ("ratio>=", 0.80, "≥ 0.80 × CLI"),
                         note="bytes compared with cmp afterwards")
                self.row("cp into the mount vs cp on the plain disk (MB/s)", max(cpin), "MB/s",
                         cpin_argv, max(plain), "cp on the plain disk (page cache)", plain_argv)
                self.row("cp out of the mount vs cp on the plain disk (MB/s)", max(cpout),
                         "MB/s", cpout_argv, max(plain), "cp on the plain disk (page cache)",
                         plain_argv)
                self.row(f"peak RSS ossfs after cp of {mb:.0f} MiB in and out (MiB)",
                         vm_hwm(fs.pid) / MiB, "MiB", f"VmHWM in /proc/{fs.pid}/status", None,
                         "", None, ("<", 64.0, "< 64 MiB"))
                # ls -l of a user with many files.
                user = "lsbench"
                n = cfg.ls_files
                self.say(f"uploading {n} objects of 64 B for ls -l")
                _, load = c.bench("--objects", n, "--size", 64, "--concurrency", 16,
                                  "--user", user, "--phases", "upload", "--keep")
                ls_argv = ["ls", "-l", os.path.join(mnt, user)]
                ls_out = os.path.join(self.work, "ls.out")
                def ls_count():
                    with open(ls_out) as f:
                        return sum(1 for ln in f if not ln.startswith("total"))
                cold = self.r.run(ls_argv, stdout=ls_out, timeout=120)[0]
                lines = ls_count()
                warm = self.r.run(ls_argv, stdout=ls_out, timeout=120)[0]
                lines_warm = ls_count()
                if lines != n or lines_warm != n:
                    list_out = os.path.join(self.work, "list.out")
                    self.r.run(c.oss("list", user), stdout=list_out, timeout=60)
                    with open(list_out) as f:
                        cli = sum(1 for _ in f)
                    time.sleep(2)  # past ossfs's listing TTL
                    self.r.run(ls_argv, stdout=ls_out, timeout=120)
                    raise CmdFailed(
                        f"`{show(ls_argv)}` listed {lines} files, then {lines_warm}, and "
                        f"{ls_count()} 2 s later; expected {n} (`oss list` printed {cli})")
                self.row(f"ls -l of a user with {n} files, first (s)", cold, "s",
                         ls_argv + [">file"], None, "", None, ("<", 1.0, "< 1 s"),
                         note=f"files made by `{show(load)}`")
                self.row(f"ls -l of a user with {n} files, again (s)", warm, "s",
                         ls_argv + [">file"], None, "", None, ("<", 1.0, "< 1 s"))
                self.extra["fuse"] = {"plain_cp_MBps": plain, "oss_upload_MBps": up,
                                      "oss_download_MBps": down, "cp_in_MBps": cpin,
                                      "cp_out_MBps": cpout, "ls_cold_s": cold, "ls_warm_s": warm}
            except CmdFailed as e:
                raise SectionSkipped(f"ossfs not working: {e}") from e
            finally:
                self.r.unmount(mnt, fs)
        finally:
            c.stop()

    # -- tree: directories on the mount (issue 8) ------------------------------------------

    # ossfs caches listings and attributes for --ttl-ms (default 1000 ms, fs/src/cache.rs);
    # every measured listing on the mount comes after a pause longer than that, so it is a
    # fresh one from the proxy, not the cache.
    FS_TTL = 1.0
    TTL_WAIT = FS_TTL + 0.3

    @staticmethod
    def crate_tree(dst, want):
        """Copies crate sources from the local cargo registry into `dst` (on the bench's disk)
        until it holds at least `want` files: a real source tree, with nested directories.
        Crates are taken in name order, skipping any with a symlink or a file over 1 MiB.
        Returns (files, bytes, crate names)."""
        home = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")
        reg = os.path.join(home, "registry", "src")
        crates = []
        if os.path.isdir(reg):
            for idx in sorted(os.listdir(reg)):
                d = os.path.join(reg, idx)
                if os.path.isdir(d):
                    crates += [os.path.join(d, c) for c in sorted(os.listdir(d))]
        if not crates:
            raise CmdFailed(f"no crate sources under {reg} for the cp -r tree")
        os.makedirs(dst)
        files = size = 0
        taken = []
        for c in crates:
            ok, n, b = True, 0, 0
            for dirpath, dirs, fns in os.walk(c):
                for x in dirs + fns:
                    p = os.path.join(dirpath, x)
                    if os.path.islink(p) or (x in fns and os.path.getsize(p) > MiB):
                        ok = False
                n += len(fns)
                b += sum(os.path.getsize(os.path.join(dirpath, x)) for x in fns)
            if not ok or n == 0:
                continue
            shutil.copytree(c, os.path.join(dst, os.path.basename(c)), symlinks=True)
            files += n
            size += b
            taken.append(os.path.basename(c))
            if files >= want:
                break
        if files < want:
            raise CmdFailed(f"only {files} files in the crates under {reg}, wanted {want}")
        os.sync()
        return files, size, taken

    def fresh(self):
        """Waits past ossfs's cache TTL, so the next listing is asked of the proxy."""
        time.sleep(self.TTL_WAIT)

    def ls_count(self, argv, path, expect):
        dt = self.r.run(argv, stdout=path, timeout=300)[0]
        with open(path) as f:
            got = sum(1 for ln in f if not ln.startswith("total"))
        if got != expect:
            raise CmdFailed(f"`{show(argv)}` listed {got} entries, expected {expect}")
        return dt

    def sec_tree(self):
        cfg = self.cfg
        c = Cluster(self.r, "tree")
        try:
            mnt = os.path.join(self.work, "mnt-tree")
            fs = self.start_ossfs(c, mnt)
            try:
                # Directories on the mount are issue 8's; a mount without them skips.
                probe = os.path.join(mnt, "tree-probe", "dir", "sub")
                try:
                    self.r.run(["mkdir", "-p", probe], timeout=30)
                    self.fresh()
                    if not os.path.isdir(probe):
                        raise CmdFailed(f"{probe} is not a directory after mkdir -p")
                except (CmdFailed, OSError) as e:
                    raise SectionSkipped(f"the mount has no nested directories yet "
                                         f"(mkdir -p USER/dir/sub: {e})") from e
                self.tree_ls_big(c, mnt)
                self.tree_ls_small(c, mnt)
                self.tree_cp(c, mnt)
                self.tree_mv(c, mnt)
            finally:
                self.r.unmount(mnt, fs)
        finally:
            c.stop()

    def tree_ls_big(self, c, mnt):
        """`ls -l` of USER/big/ holding BENCH_LS_FILES files, vs the same on the plain disk."""
        cfg = self.cfg
        n = cfg.ls_files
        runs = cfg.repeat
        src = os.path.join(self.work, "tree-64B")
        with open(src, "wb") as f:
            f.write(os.urandom(64))
        names = os.path.join(self.work, "tree-names")
        with open(names, "w") as f:
            f.writelines(f"f-{i:06d}\n" for i in range(n))
        # oss bench names objects USER/bench-NNNNNN (no directory), so the nested directory
        # is filled by `oss upload` processes, 16 at a time.
        fill = Argv(["xargs", "-a", names, "-P", "16", "-I{}",
                     *c.oss("upload", "tree/big/{}", src)], c.env)
        self.say(f"uploading {n} files of 64 B into tree/big/")
        fill_s = self.r.run(fill, timeout=3600)[0]
        plain = os.path.join(self.work, "tree-plain-big")
        os.makedirs(plain)
        for i in range(n):
            with open(os.path.join(plain, f"f-{i:06d}"), "wb") as f:
                f.write(b"x" * 64)
        ls_argv = ["ls", "-l", os.path.join(mnt, "tree", "big")]
        plain_argv = ["ls", "-l", plain]
        out = os.path.join(self.work, "ls.out")
        ours, base = [], []
        for _ in range(runs):
            base.append(self.ls_count(plain_argv, out, n))
            self.fresh()
            ours.append(self.ls_count(ls_argv, out, n))
        shutil.rmtree(plain)
        self.row(f"ls -l of a directory of {n} files on the mount (s)", min(ours), "s",
                 f"sleep {self.TTL_WAIT:g} (past the 1 s listing TTL); {show(ls_argv)} >file",
                 min(base), f"ls -l of {n} files on the plain disk", plain_argv + [">file"],
                 ("<", 1.0, "< 1 s"),
                 note=f"best of {runs}, each a fresh listing; lines counted; files made by "
                      f"`{show(fill)}` in {fill_s:.1f} s ({n / fill_s:.0f} files/s)")
        self.extra.setdefault("tree", {})["ls_big"] = {"ours_s": ours, "plain_s": base,
                                                       "fill_s": fill_s}

    def tree_ls_small(self, c, mnt):
        """`ls -l` of a 10-entry directory in a user of BENCH_TREE_USER_FILES files, vs the
        same directory in a user of 100 files."""
        cfg = self.cfg
        big_n, few_n = cfg.tree_user_files, 100
        src = os.path.join(self.work, "tree-64B")
        loads, fill_s = {}, {}
        for user, k in (("tree-many", big_n), ("tree-few", few_n)):
            self.say(f"uploading {k} objects of 4 KiB for {user}, and {user}/d10/")
            t0 = time.perf_counter()
            _, loads[user] = c.bench("--objects", k, "--size", 4096, "--concurrency", 16,
                                     "--user", user, "--phases", "upload", "--keep",
                                     timeout=3600)
            fill_s[user] = time.perf_counter() - t0
            for i in range(10):
                self.r.run(c.oss("upload", f"{user}/d10/f-{i:02d}", src), timeout=60)
        out = os.path.join(self.work, "ls.out")
        argv = {u: ["ls", "-l", os.path.join(mnt, u, "d10")] for u in loads}
        runs = max(5, cfg.repeat)
        t = {u: [] for u in loads}
        for _ in range(runs):
            for u in loads:
                self.fresh()
                t[u].append(self.ls_count(argv[u], out, 10))
        ms = {u: min(v) * 1000 for u, v in t.items()}
        wait = f"sleep {self.TTL_WAIT:g} (past the 1 s TTL); "
        self.row(f"ls -l of a 10-entry directory in a user of {big_n} files (ms)",
                 ms["tree-many"], "ms", wait + show(argv["tree-many"]) + " >file",
                 ms["tree-few"], f"the same in a user of {few_n} files",
                 wait + show(argv["tree-few"]) + " >file", ("ratio<=", 2.0, "≤ 2× 100-file user"),
                 note=f"best of {runs}, each a fresh listing (and fresh lookups of USER and "
                      f"d10); wall time includes ls start-up; users filled by "
                      f"`{show(loads['tree-many'])}` ({fill_s['tree-many']:.0f} s, "
                      f"{big_n / fill_s['tree-many']:.0f} files/s) and the same with --objects "
                      f"{few_n}, then 10 × oss upload USER/d10/f-NN")
        self.extra.setdefault("tree", {})["ls_small"] = {"many_s": t["tree-many"],
                                                         "few_s": t["tree-few"],
                                                         "fill_s": fill_s}

    def tree_cp(self, c, mnt):
        """`cp -r` of a real source tree into the mount and `diff -r` back, vs `oss upload`
        of the files one by one and `cp -r` on the plain disk."""
        cfg = self.cfg
        tree = os.path.join(self.work, "tree-src")
        nfiles, nbytes, crates = self.crate_tree(tree, cfg.tree_cp_files)
        self.say(f"cp -r of {nfiles} files ({nbytes / MiB:.1f} MiB, {len(crates)} crates)")
        rel = sorted(os.path.relpath(os.path.join(dp, f), tree)
                     for dp, _, fns in os.walk(tree) for f in fns)
        up_files = rel[:min(cfg.tree_upload_files, len(rel))]
        udir = os.path.join(mnt, "tree-cp")
        self.r.run(["mkdir", "-p", udir], timeout=30)
        cp, diff, plain, up = [], [], [], []
        cp_argv = diff_argv = plain_argv = None
        for k in range(cfg.repeat):
            dst = os.path.join(self.work, f"tree-plain-cp-{k}")
            plain_argv = ["cp", "-r", tree, dst]
            plain.append(nfiles / self.r.run(plain_argv, timeout=600)[0])
            shutil.rmtree(dst)
            mdst = os.path.join(udir, f"r{k}")
            cp_argv = ["cp", "-r", tree, mdst]
            cp.append(nfiles / self.r.run(cp_argv, timeout=3600)[0])
            self.fresh()
            diff_argv = ["diff", "-r", tree, mdst]
            dt, _, rc = self.r.run(diff_argv, timeout=3600, check=False)
            if rc != 0:
                out = os.path.join(self.work, "diff.out")
                self.r.run(diff_argv, stdout=out, timeout=3600, check=False)
                with open(out, errors="replace") as f:
                    first = f.read().strip().splitlines()[:3]
                raise CmdFailed(f"`{show(diff_argv)}` found differences: {' | '.join(first)}")
            diff.append(nfiles / dt)
            t0 = time.perf_counter()
            for r in up_files:
                self.r.run(c.oss("upload", f"tree-up/r{k}/{r}", os.path.join(tree, r)),
                           timeout=120)
            up.append(len(up_files) / (time.perf_counter() - t0))
        up_cmd = (f"for f in <first {len(up_files)} files>; do "
                  f"{show(c.oss('upload'))} \"tree-up/r$K/$f\" \"$W/tree-src/$f\"; done")
        note = (f"{nfiles} files, {nbytes / MiB:.1f} MiB from {len(crates)} crates of the "
                f"cargo registry ({crates[0]} … {crates[-1]}), copied to $W first; best of "
                f"{cfg.repeat}, each into a new directory")
        self.row(f"cp -r of {nfiles} source files into the mount (files/s)", max(cp),
                 "files/s", cp_argv, max(up), f"oss upload one by one ({len(up_files)} files)",
                 up_cmd, None, note=note)
        self.row(f"cp -r of {nfiles} source files into the mount vs the plain disk (files/s)",
                 max(cp), "files/s", cp_argv, max(plain), "cp -r on the plain disk (no fsync)",
                 plain_argv)
        self.row(f"diff -r of the {nfiles} files back from the mount (files/s)", max(diff),
                 "files/s", f"sleep {self.TTL_WAIT:g}; {show(diff_argv)}", None, "", None,
                 None, note="exit 0 required: every byte and every name compared")
        self.extra.setdefault("tree", {})["cp"] = {
            "files": nfiles, "bytes": nbytes, "crates": crates, "cp_files_per_s": cp,
            "diff_files_per_s": diff, "plain_cp_files_per_s": plain,
            "oss_upload_files_per_s": up}

    def tree_mv(self, c, mnt):
        """`mv` of a large file on the mount (a server-side copy and a delete), vs `oss
        download` of the same file."""
        cfg = self.cfg
        size = cfg.tree_mv_mb * MiB
        src = os.path.join(self.work, "tree-mv.src")
        make_random_file(src, size)
        self.r.run(c.oss("upload", "tree-mv/d/a", src), timeout=max(300, size / MB))
        tmo = max(300.0, size / MB)
        names = ["a", "b"]
        mv, down = [], []
        mv_argv = down_argv = None
        for k in range(cfg.repeat):
            cur, nxt = names[k % 2], names[(k + 1) % 2]
            down_argv = c.oss("download", f"tree-mv/d/{cur}", "-")
            down.append(self.r.run(down_argv, stdout="/dev/null", timeout=tmo)[0])
            mv_argv = ["mv", os.path.join(mnt, "tree-mv", "d", cur),
                       os.path.join(mnt, "tree-mv", "d", nxt)]
            mv.append(self.r.run(mv_argv, timeout=tmo)[0])
        self.fresh()
        last = names[cfg.repeat % 2]
        gone = os.path.join(mnt, "tree-mv", "d", names[(cfg.repeat + 1) % 2])
        final = os.path.join(mnt, "tree-mv", "d", last)
        if os.path.exists(gone):
            raise CmdFailed(f"{gone} still exists after it was moved")
        if self.r.run(["cmp", "-s", src, final], timeout=tmo, check=False)[2] != 0:
            raise CmdFailed(f"{final} differs from what was uploaded before the moves")
        os.unlink(src)
        mb = size / MiB
        self.row(f"mv of a {mb:.0f} MiB file on the mount (s)", min(mv), "s", mv_argv,
                 min(down), "oss download of the same file", down_argv + [">/dev/null"], None,
                 note=f"best of {cfg.repeat}, moving a→b→a…; afterwards the old name is gone "
                      f"and cmp of the last name with the uploaded bytes passes")
        self.extra.setdefault("tree", {})["mv"] = {"mv_s": mv, "download_s": down}

    def keys_base(self):
        """The build of the last commit before the keys work: (bin dir, commit, how chosen).

        The commit: BENCH_KEYS_BASE if set, else the parent of the first commit (on HEAD's
        history) that put `secret_file` into storaged/src/main.rs, else KEYS_BASE_DEFAULT.
        Built once, only oss-storaged, oss-proxy and oss-cli (its fs crate may not build),
        from `git archive` in BENCH_TMPDIR/keys-base-COMMIT with its own CARGO_TARGET_DIR;
        only the three binaries are kept there (bin/), for later runs, and copied to
        WORK/bin/base for this one.
        """
        def git(*a):
            p = subprocess.run(["git", "-C", self.root, *a], capture_output=True, text=True,
                               check=False)
            return p.stdout.strip() if p.returncode == 0 else ""
        spec = os.environ.get("BENCH_KEYS_BASE", "").strip()
        if spec:
            how = f"BENCH_KEYS_BASE={spec}"
        else:
            first = git("log", "--format=%H", "-S", "secret_file", "--reverse", "HEAD", "--",
                        "storaged/src/main.rs").splitlines()
            if first:
                spec = f"{first[0]}^"
                how = f"parent of {first[0][:7]}, the first commit with secret_file in storaged"
            else:
                spec, how = KEYS_BASE_DEFAULT, f"default {KEYS_BASE_DEFAULT}"
        rev = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
        if not rev:
            raise SectionSkipped(f"cannot resolve the baseline commit {spec} ({how}) in "
                                 f"{self.root}")
        bins = ["oss-storaged", "oss-proxy", "oss"]
        cache = os.path.join(os.path.dirname(self.work), f"keys-base-{rev}")
        target = os.path.join(cache, "target")
        kept = os.path.join(cache, "bin")
        built = os.path.join(cache, "built")
        os.makedirs(cache, exist_ok=True)
        with open(os.path.join(cache, "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another bench building the same commit
            if not (os.path.exists(built) and all(
                    os.access(os.path.join(kept, b), os.X_OK) for b in bins)):
                if shutil.which("cargo") is None:
                    raise SectionSkipped(f"cargo not found: cannot build the baseline {rev[:12]}")
                src = os.path.join(cache, "src")
                shutil.rmtree(src, ignore_errors=True)
                os.makedirs(src)
                tar = os.path.join(cache, "src.tar")
                self.r.run(["git", "-C", self.root, "archive", "--format=tar", "-o", tar, rev],
                           timeout=300)
                self.r.run(["tar", "-xf", tar, "-C", src], timeout=300)
                os.unlink(tar)
                self.say(f"building the baseline {rev[:12]} ({how}) into {cache}; cached for "
                         f"later runs; log in bench-results/logs/keys-base-build.err")
                self.r.run(["cargo", "build", "--release", "--manifest-path",
                            os.path.join(src, "Cargo.toml"), "-p", "oss-storaged",
                            "-p", "oss-proxy", "-p", "oss-cli"],
                           env=dict(os.environ, CARGO_TARGET_DIR=target), timeout=7200,
                           log="keys-base-build")
                shutil.rmtree(kept, ignore_errors=True)
                os.makedirs(kept)
                for b in bins:
                    shutil.copy2(os.path.join(target, "release", b), os.path.join(kept, b))
                shutil.rmtree(target)  # hundreds of MiB of intermediate files
                shutil.rmtree(src)
                with open(built, "w") as f:
                    f.write(rev + "\n")
            else:
                self.say(f"baseline {rev[:12]} ({how}): cached build in {cache}")
            bindir = os.path.join(self.r.bin, "base")
            os.makedirs(bindir, exist_ok=True)
            for b in bins:
                shutil.copy2(os.path.join(kept, b), os.path.join(bindir, b))
        helptext = subprocess.run([os.path.join(bindir, "oss-storaged"), "--help"],
                                  capture_output=True, text=True, check=False).stdout
        if "--secret-file" in helptext:
            raise CmdFailed(f"the baseline {rev[:12]} ({how}) already has --secret-file; "
                            "name the commit before the keys work with BENCH_KEYS_BASE")
        return bindir, rev, how

    def sec_keys(self):
        cfg = self.cfg
        n, size = cfg.keys_objects, KEYS_SIZE
        bindir, rev, how = self.keys_base()
        short = rev[:7]
        old = Cluster(self.r, "keys-old", bindir=bindir, keys=False)
        try:
            new = Cluster(self.r, "keys-new")
            try:
                self.keys_measure(old, new, n, size, short, how)
            finally:
                new.stop()
        finally:
            old.stop()

    def keys_measure(self, old, new, n, size, short, how):
        cfg = self.cfg
        sides = {"old": old, "new": new}
        phases = ("upload", "download", "delete")
        details = {"baseline_commit": short, "baseline_chosen": how, "objects": n}
        for conc in cfg.concurrency:
            best = {s: {} for s in sides}  # side -> phase -> (ops/s, cpu, argv)
            runs = []
            for k in range(cfg.repeat):
                # Each phase old and new back to back, the order swapped every round, so a
                # burst of others' load hits both builds alike.
                order = ("old", "new") if k % 2 == 0 else ("new", "old")
                for ph in phases:
                    for side in order:
                        res, argv, cpu = sides[side].bench(
                            "--objects", n, "--size", size, "--concurrency", conc,
                            "--user", f"keys-c{conc}", "--phases", ph, cpu=True)
                        rate = res["phases"][ph]["ops_per_s"]
                        runs.append({"side": side, "phase": ph, "result": res["phases"][ph],
                                     "cpu": cpu})
                        if ph not in best[side] or rate > best[side][ph][0]:
                            best[side][ph] = (rate, cpu, argv)
            for ph in ("upload", "download"):
                r_new, cpu_new, argv_new = best["new"][ph]
                r_old, cpu_old, argv_old = best["old"][ph]
                self.row(f"{size} B {ph}s/s with keys, c={conc}", r_new, "/s", argv_new, r_old,
                         f"before keys ({short}), c={conc}", argv_old,
                         ("ratio>=", 0.95, "≥ 0.95 × before keys"),
                         note=f"each phase its own process, so its {conc} connection(s) log in "
                              f"inside the timing; with keys: {cpu_note(cpu_new, n)}; before "
                              f"keys: {cpu_note(cpu_old, n)}")
            details[f"c{conc}"] = runs
        # Fresh connections: one `oss list` process after another, each one connection (with
        # keys, one login: two more round trips and four HMACs) and one listing of one object.
        m = max(50, n // 10)
        user = "keys-conn"
        one = os.path.join(self.work, "keys-one")
        with open(one, "wb") as f:
            f.write(os.urandom(size))
        for c in sides.values():
            self.r.run(c.oss("upload", f"{user}/one", one), timeout=60)
        os.unlink(one)
        out = os.path.join(self.work, "keys-list.out")
        for c in sides.values():
            self.r.run(c.oss("list", user), stdout=out, timeout=30)
            with open(out) as f:
                got = sum(1 for _ in f)
            if got != 1:
                raise CmdFailed(f"`{show(c.oss('list', user))}` printed {got} lines, expected 1")
        rates = {"old": [], "new": []}
        for k in range(cfg.repeat):
            for side in (("old", "new") if k % 2 == 0 else ("new", "old")):
                argv = sides[side].oss("list", user)
                t = sum(self.r.run(argv, timeout=30)[0] for _ in range(m))
                rates[side].append(m / t)
        r_new, r_old = max(rates["new"]), max(rates["old"])
        self.row(f"`oss list` commands/s, {m} in a row, one fresh connection each",
                 r_new, "/s", new.oss("list", user) + [">/dev/null"], r_old,
                 f"before keys ({short})", old.oss("list", user) + [">/dev/null"], None,
                 note=f"information: process start-up dominates; with keys each command also "
                      f"logs in (challenge-response, two round trips): "
                      f"{(1 / r_new - 1 / r_old) * 1000:+.2f} ms per command")
        details["list_commands_per_s"] = rates
        self.extra["keys"] = details

    def proxy_has_http(self):
        """Whether this build's oss-proxy has the Swift API door (`--http` in its help)."""
        p = subprocess.run([self.r.exe("oss-proxy"), "--help"], capture_output=True, text=True,
                           check=False)
        return "--http" in p.stdout + p.stderr

    def sec_door(self):
        """The Swift API door against the native protocol, on one cluster, one run: 4 KiB
        PUT/GET/DELETE per second at each concurrency, a listing, one large PUT/GET; native figures
        from `oss bench`, door figures from `oss bench --swift` (the same phases, objects and
        timing, over HTTP/1.1 with one keep-alive connection per task)."""
        if not self.proxy_has_http():
            raise SectionSkipped("the proxy has no --http")
        c = Cluster(self.r, "door", proxy_args=["--http", "127.0.0.1:0"])
        try:
            details = {"door": c.http_addr, "native": c.addr}
            self.door_small(c, details)
            self.door_list(c, details)
            self.door_big(c, details)
            self.extra["door"] = details
        finally:
            c.stop()

    def door_run(self, c, side, *args):
        """One `oss bench` process on `side` ("native" or "door"): (result, argv, cpu)."""
        if side == "door":
            return c.swift_bench(*args, cpu=True)
        return c.bench(*args, cpu=True)

    @staticmethod
    def door_conns(r, want):
        """A note when the door's tasks needed more connections than one each (keep-alive
        broken), else ''. `r`: one phase's result."""
        got = r.get("connections")
        if got is not None and got > want:
            return f"; {got} connections for {want} tasks (keep-alive not kept)"
        return ""

    def rotated_rounds(self, sides, phases, run, key, check):
        """BENCH_REPEAT rounds of every phase on every side, the sides' order rotated each
        round, so a burst of others' load hits each alike. `run(side, phase)` gives (result,
        argv, cpu); `check(phase_result, argv)` raises on a wrong count. Returns (best, runs):
        best[side][phase] = (phase_result[key], argv, phase_result, cpu) of the best round."""
        best = {side: {} for side in sides}
        runs = []
        for k in range(self.cfg.repeat):
            order = sides[k % len(sides):] + sides[:k % len(sides)]
            for ph in phases:
                for side in order:
                    res, argv, cpu = run(side, ph)
                    r = res["phases"][ph]
                    check(r, argv)
                    runs.append({"side": side, "phase": ph, "result": r, "cpu": cpu})
                    if ph not in best[side] or r[key] > best[side][ph][0]:
                        best[side][ph] = (r[key], argv, r, cpu)
        return best, runs

    @staticmethod
    def check_ops(n):
        def check(r, argv):
            if r["ops"] != n:
                raise CmdFailed(f"{show(argv)}: {r['ops']} ops, expected {n}")
        return check

    @staticmethod
    def check_bytes(size):
        def check(r, argv):
            if r.get("bytes") != size:
                raise CmdFailed(f"{show(argv)}: moved {r.get('bytes')} bytes, expected {size}")
        return check

    @staticmethod
    def rates_of(runs):
        """{side: {phase: [MB/s of every round]}} of a large-transfer section's runs."""
        out = {}
        for x in runs:
            out.setdefault(x["side"], {}).setdefault(x["phase"], []).append(x["result"]["mb_per_s"])
        return out

    def door_small(self, c, details):
        cfg = self.cfg
        n, size = cfg.small_objects, cfg.small_size
        phases = ("upload", "download", "delete")
        verb = {"upload": "PUT", "download": "GET", "delete": "DELETE"}
        for conc in cfg.concurrency:
            def run(side, ph):
                return self.door_run(c, side, "--objects", n, "--size", size, "--concurrency",
                                     conc, "--user", f"door-{side}-c{conc}", "--phases", ph)
            best, runs = self.rotated_rounds(("native", "door"), phases, run, "ops_per_s",
                                             self.check_ops(n))
            for ph in phases:
                r_door, argv_door, p, cpu_door = best["door"][ph]
                r_nat, argv_nat, q, cpu_nat = best["native"][ph]
                target = (("ratio>=", 0.50, "≥ 0.50 × native") if ph != "delete" else None)
                self.row(f"{size} B {verb[ph]}s/s through the door, c={conc}", r_door, "/s",
                         argv_door, r_nat, f"native protocol, c={conc}", argv_nat, target,
                         note=f"door p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms; native "
                              f"p50 {q['p50_ms']:.2f} ms, p99 {q['p99_ms']:.2f} ms"
                              f"{self.door_conns(p, conc)}"
                              + ("" if target else "; information only")
                              + f"; door: {cpu_note(cpu_door, n)}; native: {cpu_note(cpu_nat, n)}")
            details[f"c{conc}"] = runs

    def door_list(self, c, details):
        """Information: a listing of BENCH_SMALL_OBJECTS objects both ways; through the door
        paged with `marker` as a Swift client does, until the empty page."""
        cfg = self.cfg
        n, size = cfg.small_objects, cfg.small_size
        runs = max(5, cfg.repeat)
        ms = {"native": [], "door": []}
        argv = {}
        for side in ("native", "door"):
            self.door_run(c, side, "--objects", n, "--size", size, "--concurrency", 16,
                          "--user", f"door-{side}-list", "--phases", "upload", "--keep")
        for k in range(runs):
            for side in (("native", "door") if k % 2 == 0 else ("door", "native")):
                res, argv[side], _ = self.door_run(c, side, "--objects", n,
                                                   "--user", f"door-{side}-list",
                                                   "--phases", "list")
                ph = res["phases"]["list"]
                if ph.get("entries") != n:
                    raise CmdFailed(f"{show(argv[side])}: {ph.get('entries')} entries, "
                                    f"expected {n}")
                ms[side].append(ph["ms"])
                pages = ph.get("pages")
        med = statistics.median
        self.row(f"list {n} objects through the door, median of {runs} (ms)", med(ms["door"]),
                 "ms", argv["door"], med(ms["native"]), "native list phase", argv["native"],
                 None, note=f"information: {pages} JSON pages (the server's page size, then the "
                            f"empty page that ends the listing) against one native listing")
        details["list_ms"] = ms

    def door_big(self, c, details):
        src = self.big_src()
        size = os.path.getsize(src)
        mb = size / MiB

        def run(side, ph):
            if ph == "upload":
                os.sync()
            return self.door_run(c, side, "--objects", 1, "--file", src,
                                 "--user", f"door-{side}-big", "--phases", ph)
        best, runs = self.rotated_rounds(("native", "door"), ("upload", "download"), run,
                                         "mb_per_s", self.check_bytes(size))
        for ph, what in (("upload", f"PUT of {mb:.0f} MiB through the door (MB/s)"),
                         ("download", f"GET of {mb:.0f} MiB through the door, MD5 checked "
                                      f"(MB/s)")):
            r_door, argv_door, _, cpu_door = best["door"][ph]
            r_nat, argv_nat, _, cpu_nat = best["native"][ph]
            self.row(what, r_door, "MB/s", argv_door, r_nat, "native protocol, same file",
                     argv_nat, ("ratio>=", 0.80, "≥ 0.80 × native"),
                     note=f"door: {cpu_note(cpu_door)}; native: {cpu_note(cpu_nat)}")
        details["big"] = {"bytes": size, "MBps": self.rates_of(runs)}

    # -- swift: real OpenStack Swift beside oss ------------------------------------------

    def sec_swift(self):
        """Real OpenStack Swift 2.30 (scripts/swift-aio: Debian's packages, a 4-node, 2-replica,
        1024-partition all-in-one on loopback) beside an oss cluster of the same shape, driven
        by the same HTTP client (`oss bench --swift`) with the same workload, pairs
        interleaved: 4 KiB PUT/GET/DELETE at each concurrency, a listing, one large PUT/GET.
        oss is measured through its Swift door and, for reference, with its native protocol."""
        if not self.proxy_has_http():
            raise SectionSkipped("the proxy has no --http")
        if os.geteuid() != 0:
            raise SectionSkipped("scripts/swift-aio setup installs Debian's swift packages: "
                                 "run as root")
        aio = SwiftAio(self)
        aio.setup()
        aio.start()
        c = None
        try:
            c = Cluster(self.r, "swift", proxy_args=["--http", "127.0.0.1:0"])
            details = {"swift": aio.auth_url, "door": c.http_addr, "native": c.addr}
            self.swift_small(aio, c, details)
            self.swift_list(aio, c, details)
            self.swift_big(aio, c, details)
            self.extra["swift"] = details
        finally:
            if c is not None:
                c.stop()
            aio.stop()

    def swift_run(self, aio, c, side, *args):
        """One bench process on `side`: "swift" (real Swift, `oss bench --swift` as
        test:tester), "door" (`oss bench --swift` through oss's door as oss:admin) or "native"
        (`oss bench`). Returns (result, argv, cpu) where cpu is {server CPU-s, client CPU-s}."""
        if side == "swift":
            argv = swift_bench_argv(self.r.exe("oss"), aio.auth_url, SWIFT_USER, SWIFT_KEY,
                                    *args)
            path = os.path.join(self.work, "swift-bench.json")
            before = aio.cpu()
            self.r.run(argv, stdout=path, timeout=3600)
            return last_json(path), argv, {"server": aio.cpu() - before,
                                           "client": self.r.last_cpu}
        res, argv, cpu = (c.swift_bench if side == "door" else c.bench)(*args, cpu=True)
        return res, argv, {"server": cpu["proxy"] + cpu["storaged"], "client": cpu["client"]}

    SIDES = ("swift", "door", "native")

    def swift_small(self, aio, c, details):
        cfg = self.cfg
        n, size = cfg.swift_objects, cfg.small_size
        phases = ("upload", "download", "delete")
        verb = {"upload": "PUT", "download": "GET", "delete": "DELETE"}
        tag = os.getpid()
        for conc in cfg.concurrency:
            def run(side, ph):
                return self.swift_run(aio, c, side, "--objects", n, "--size", size,
                                      "--concurrency", conc, "--user",
                                      f"bench-{tag}-c{conc}-{side}", "--phases", ph)
            best, runs = self.rotated_rounds(self.SIDES, phases, run, "ops_per_s",
                                             self.check_ops(n))
            for ph in phases:
                sw, sw_argv, sw_r, sw_cpu = best["swift"][ph]
                for side, what in (("door", "oss's Swift door"), ("native", "oss native")):
                    rate, argv, r, cpu = best[side][ph]
                    target = None
                    if side == "native" and ph != "upload" and conc == 16:
                        target = ("ratio>=", 10.0, "≥ 10 × Swift")
                    self.row(f"{size} B {verb[ph]}s/s, c={conc}: {what} vs Swift 2.30", rate,
                             "/s", argv, sw, f"Swift 2.30, c={conc}", sw_argv, target,
                             note=f"p50/p99 ms: oss {r['p50_ms']:.2f}/{r['p99_ms']:.2f}, Swift "
                                  f"{sw_r['p50_ms']:.2f}/{sw_r['p99_ms']:.2f}; server CPU ms per "
                                  f"op: oss {cpu['server'] * 1000 / n:.2f}, Swift "
                                  f"{sw_cpu['server'] * 1000 / n:.2f}"
                                  + ("" if target else "; information"))
            details[f"c{conc}"] = runs

    def swift_list(self, aio, c, details):
        """A listing of BENCH_SWIFT_LIST_OBJECTS objects, paged with `marker` until the empty
        page (the same client both ways; native: one `oss bench` list phase)."""
        cfg = self.cfg
        n, size = cfg.swift_list_objects, cfg.small_size
        runs = max(5, cfg.repeat)
        ms = {side: [] for side in self.SIDES}
        argv = {}
        user = f"bench-{os.getpid()}-list"
        for side in self.SIDES:
            self.swift_run(aio, c, side, "--objects", n, "--size", size, "--concurrency", 16,
                           "--user", f"{user}-{side}", "--phases", "upload", "--keep")
        try:
            for k in range(runs):
                for side in self.SIDES[k % 3:] + self.SIDES[:k % 3]:
                    res, argv[side], _ = self.swift_run(aio, c, side, "--objects", n,
                                                        "--user", f"{user}-{side}",
                                                        "--phases", "list")
                    ph = res["phases"]["list"]
                    if ph.get("entries") != n:
                        raise CmdFailed(f"{show(argv[side])}: {ph.get('entries')} entries, "
                                        f"expected {n}")
                    ms[side].append(ph["ms"])
        finally:
            # Swift keeps what the bench stored; leave its account as it was.
            self.swift_run(aio, c, "swift", "--objects", n, "--concurrency", 16,
                           "--user", f"{user}-swift", "--phases", "delete")
        med = statistics.median
        for side, what in (("door", "oss's Swift door"), ("native", "oss native")):
            self.row(f"list {n} objects: {what} vs Swift 2.30, median of {runs} (ms)",
                     med(ms[side]), "ms", argv[side], med(ms["swift"]),
                     "Swift 2.30, paged with marker", argv["swift"], None,
                     note="information; lower is faster")
        details["list_ms"] = ms

    def swift_big(self, aio, c, details):
        cfg = self.cfg
        src = os.path.join(self.work, "swift-big.src")
        if not os.path.exists(src):
            self.say(f"writing a {cfg.swift_big_mb} MiB random source file")
            make_random_file(src, cfg.swift_big_mb * MiB)
        size = os.path.getsize(src)
        mb = size / MiB
        user = f"bench-{os.getpid()}-big"

        def run(side, ph):
            if ph == "upload":
                os.sync()
            return self.swift_run(aio, c, side, "--objects", 1, "--file", src,
                                  "--user", f"{user}-{side}", "--phases", ph, "--keep")
        try:
            best, runs = self.rotated_rounds(self.SIDES, ("upload", "download"), run,
                                             "mb_per_s", self.check_bytes(size))
        finally:
            self.swift_run(aio, c, "swift", "--objects", 1, "--file", src,
                           "--user", f"{user}-swift", "--phases", "delete")
        for ph, verb in (("upload", "PUT"), ("download", "GET")):
            sw, sw_argv, _, sw_cpu = best["swift"][ph]
            for side, what in (("door", "oss's Swift door"), ("native", "oss native")):
                rate, argv, _, cpu = best[side][ph]
                self.row(f"{verb} of {mb:.0f} MiB: {what} vs Swift 2.30 (MB/s)", rate, "MB/s",
                         argv, sw, "Swift 2.30, same file", sw_argv, None,
                         note=f"information; server CPU s: oss {cpu['server']:.2f}, Swift "
                              f"{sw_cpu['server']:.2f}; client CPU s: oss {cpu['client']:.2f}, "
                              f"Swift side {sw_cpu['client']:.2f}")
        details["big"] = {"bytes": size, "MBps": self.rates_of(runs)}

    # -- driver ----------------------------------------------------------------------------

    def run(self):
        load0 = os.getloadavg()
        t_start = time.perf_counter()
        started = datetime.datetime.now(datetime.timezone.utc)
        interrupted = False
        for s in self.sections:
            self.section = s
            if interrupted:
                self.status[s] = "failed: not run (interrupted)"
                continue
            t = time.perf_counter()
            self.say(f"start ({self.sizes_of(s)})")
            try:
                getattr(self, f"sec_{s}")()
                self.status[s] = "ok"
            except SectionSkipped as e:
                self.status[s] = f"skipped: {e}"
            except (CmdFailed, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                self.status[s] = f"failed: {e}"
            except KeyboardInterrupt:
                self.status[s] = "failed: interrupted"
                interrupted = True
            except Exception as e:  # noqa: BLE001 - a bug here must not hide the other sections
                import traceback
                traceback.print_exc()
                self.status[s] = f"failed: {type(e).__name__}: {e}"
            self.say(f"{self.status[s]} in {time.perf_counter() - t:.1f} s")
        self.section = None
        meta = self.meta(started, load0, time.perf_counter() - t_start)
        self.emit(meta)
        if interrupted:
            return 130
        return 0 if all(not v.startswith("failed") for v in self.status.values()) else 1

    def sizes_of(self, s):
        c = self.cfg
        return {
            "big": f"{c.big_mb} MiB, best of {c.repeat}",
            "small": f"{c.small_objects} × {c.small_size} B at c={c.concurrency}",
            "list": f"{c.small_objects} objects",
            "rss": f"{c.huge_mb} MiB",
            "rebalance": f"{c.rebal_mb} MiB in {c.obj_mb} MiB objects",
            "heal": f"{c.heal_mb} MiB in {c.obj_mb} MiB objects",
            "replicator": f"{c.repl_objects} × {REPL_SIZE} B, {c.repl_idle_s:g} s idle at "
                          f"--replicate-interval " + " and ".join(i for i, _ in REPL_INTERVALS),
            "fuse": f"{c.big_mb} MiB, ls -l of {c.ls_files} files",
            "tree": f"ls -l of {c.ls_files} files in a directory, a user of "
                    f"{c.tree_user_files} files, cp -r of {c.tree_cp_files} files, "
                    f"mv of {c.tree_mv_mb} MiB",
            "keys": f"{c.keys_objects} × {KEYS_SIZE} B at c={c.concurrency}, with keys vs before",
            "door": f"{c.small_objects} × {c.small_size} B at c={c.concurrency} and "
                    f"{c.big_mb} MiB, Swift door vs native, best of {c.repeat}",
            "swift": f"{c.swift_objects} × {c.small_size} B at c={c.concurrency}, a listing of "
                     f"{c.swift_list_objects}, {c.swift_big_mb} MiB; real Swift 2.30 vs oss's "
                     f"door and native protocol, best of {c.repeat}",
        }[s]

    def meta(self, started, load0, seconds):
        def git(*a):
            try:
                return subprocess.run(["git", *a], cwd=self.root, capture_output=True,
                                      text=True, check=False).stdout.strip()
            except OSError:
                return ""
        env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
        cmd = " ".join(env + ["scripts/bench"] + (self.sections if self.sections != ALL_SECTIONS
                                                  else []))
        df = subprocess.run(["df", "-hT", self.work], capture_output=True, text=True,
                            check=False).stdout.strip().splitlines()
        return {
            "command": cmd,
            "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": seconds,
            "git": git("rev-parse", "--short", "HEAD") + (" (dirty tree)" if git(
                "status", "--porcelain", "--untracked-files=no") else ""),
            "cpus": os.cpu_count(),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "filesystem": df[-1] if df else "",
            "config": self.cfg.as_dict(),
            "sections": self.status,
        }

    # -- output ----------------------------------------------------------------------------

    @staticmethod
    def fmt(x, unit=""):
        if x is None:
            return "—"
        if isinstance(x, int) or (isinstance(x, float) and x == int(x) and abs(x) >= 1000):
            s = f"{int(x)}"
        elif abs(x) >= 100:
            s = f"{x:.0f}"
        elif abs(x) >= 10:
            s = f"{x:.1f}"
        else:
            s = f"{x:.2f}"
        return f"{s} {unit}".strip()

    def table_rows(self):
        out = []
        for i, r in enumerate(self.rows, 1):
            base = "—" if r["baseline"] is None else self.fmt(r["baseline"], r["unit"])
            if r["baseline_what"]:
                base = f"{base} ({r['baseline_what']})" if r["baseline"] is not None else "—"
            met = {True: "yes", False: "NO", None: "—"}[r["met"]]
            out.append([str(i), r["section"], r["what"], self.fmt(r["ours"], r["unit"]), base,
                        "—" if r["ratio"] is None else f"{r['ratio']:.2f}", r["target"], met])
        return out

    HEAD = ["#", "section", "what", "ours", "baseline", "ratio", "target", "met"]

    def notes_text(self, meta):
        n = [
            "Both sides of every large-transfer row read warm data: the source file was just "
            "written (and fsynced), and the replicas a download reads were just written by the "
            "upload; the page cache is not dropped (not reliably possible on a shared machine).",
            "Every data dir, the dd target and the durable-create baseline share one filesystem: "
            + meta["filesystem"],
            f"Best of BENCH_REPEAT={self.cfg.repeat} for transfers and their baselines, pairs "
            "interleaved; the machine is shared, so compare ratios, not absolute numbers.",
            "MB/s = 10^6 B/s; MiB = 2^20 B. $W is the temp dir, $P the proxy address of that "
            "section's cluster (a fresh cluster per section).",
            "Keys: every daemon ran with --secret-file $W/CLUSTER/secret (64 hex digits, mode "
            "0600), every oss and ossfs command with OSS_KEY_FILE=$W/CLUSTER/proxy/admin.key "
            "(the admin key the proxy wrote on its first start); the keys section's baseline "
            "cluster runs the build from before keys (base/...), which takes neither.",
        ]
        if self.status.get("door") == "ok":
            n.append("Door: the door section's proxy ran with --http 127.0.0.1:0; $H is its "
                     "Swift API address. Door figures come from `oss bench --swift "
                     "http://$H/auth/v1.0 --swift-user oss:admin` with ST_KEY=the admin key "
                     "(the text after `admin:` in $W/door/proxy/admin.key), native ones from "
                     "`oss bench` on the same cluster, same objects, one process per phase. "
                     "The native bench logs in on each connection inside the timing; the HTTP "
                     "client gets its token once before the first phase, untimed, and opens its "
                     "keep-alive connections (one per task) inside the timing.")
        if self.status.get("replicator") == "ok":
            n.append("Replicator: one cluster loaded once; its proxy restarted on the same state "
                     "dir and servers for each --replicate-interval (the restart keeps the data), "
                     f"each window opening {REPL_SETTLE_S:g} s after the proxy's start-up pass; "
                     "CPU is utime + stime from /proc/PID/stat (10 ms ticks) of oss-proxy and of "
                     "every oss-storaged; passes from `oss status --json`, called only outside "
                     "the window.")
        if self.status.get("swift") == "ok":
            n.append("Swift: real OpenStack Swift 2.30 from Debian's packages, set up and "
                     "started by scripts/swift-aio (one proxy worker with tempauth and "
                     "memcache, four storage nodes of account, container and object servers, "
                     "1024 partitions, 2 replicas, no background daemons; devices under "
                     ".swift-aio on the same disk, on an XFS image when the file system there "
                     "cannot hold Swift's xattrs). $SWIFT is its auth URL; both Swift and oss's "
                     "door are driven by `oss bench --swift` (one keep-alive connection per "
                     "task), Swift as test:tester, the door as oss:admin; native rows are "
                     "`oss bench` on the same oss cluster. Server CPU is every process of each "
                     "side's servers.")
        for s, st in self.status.items():
            if st != "ok":
                n.append(f"section {s}: {st}")
        return n

    def emit(self, meta):
        rows = self.table_rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(self.HEAD)]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        out = [f"oss bench — `{meta['command']}` — {meta['started_utc']} UTC, git "
               f"{meta['git']}, {meta['cpus']} CPUs, load {meta['loadavg_start'][0]:.1f} → "
               f"{meta['loadavg_end'][0]:.1f}, {meta['seconds']:.0f} s", ""]
        out.append(line(self.HEAD))
        out.append(line(["-" * w for w in widths]))
        for s in self.sections:
            st = self.status.get(s, "")
            mine = [r for r in rows if r[1] == s]
            out.extend(line(r) for r in mine)
            if st != "ok":
                out.append(line(["", s, st, "", "", "", "", ""]))
        out.append("")
        out.append("Commands (ours / baseline):")
        for i, r in enumerate(self.rows, 1):
            out.append(f"  {i:>2}  {r['command']}")
            if r["baseline_command"]:
                out.append(f"      {r['baseline_command']}")
            if r["note"]:
                out.append(f"      note: {r['note']}")
        out.append("")
        out.append("Notes:")
        out.extend(f"  - {t}" for t in self.notes_text(meta))
        text = "\n".join(out)
        print(text, flush=True)

        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "bench.json"), "w") as f:
            json.dump({"meta": meta, "rows": self.rows, "notes": self.notes_text(meta),
                       "details": self.extra}, f, indent=2)
            f.write("\n")
        md = [f"# oss bench", "",
              f"Command: `{meta['command']}` · {meta['started_utc']} UTC · git {meta['git']} · "
              f"{meta['cpus']} CPUs · load {meta['loadavg_start'][0]:.1f} → "
              f"{meta['loadavg_end'][0]:.1f} · {meta['seconds']:.0f} s", ""]
        md.append("| " + " | ".join(self.HEAD) + " |")
        md.append("|" + "|".join("---" for _ in self.HEAD) + "|")
        for s in self.sections:
            for r in rows:
                if r[1] == s:
                    md.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            st = self.status.get(s, "")
            if st != "ok":
                md.append(f"|  | {s} | {st.replace('|', '/')} |  |  |  |  |  |")
        def code(t):
            return f"`` {t} ``" if "`" in t else f"`{t}`"
        md += ["", "Commands (ours / baseline):", ""]
        for i, r in enumerate(self.rows, 1):
            md.append(f"{i}. {code(r['command'])}")
            if r["baseline_command"]:
                md.append(f"   baseline: {code(r['baseline_command'])}")
            if r["note"]:
                md.append(f"   note: {r['note']}")
        md += ["", "Notes:", ""]
        md.extend(f"- {t}" for t in self.notes_text(meta))
        with open(os.path.join(self.out, "bench.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        print(f"\nwrote {os.path.join(self.out, 'bench.json')} and "
              f"{os.path.join(self.out, 'bench.md')}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("sections", nargs="*")
    a = ap.parse_args()
    sections = a.sections or ALL_SECTIONS
    for s in sections:
        if s not in ALL_SECTIONS:
            ap.error(f"unknown section {s!r}")
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the finally below stops everything.
    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    b = Bench(a.root, a.work, a.out, sections)
    rc = 1
    try:
        rc = b.run()
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        rc = 130
    finally:
        b.r.stop_all()
        # Logs are small and say what went wrong; keep them beside the results.
        logs = os.path.join(a.out, "logs")
        shutil.rmtree(logs, ignore_errors=True)
        shutil.copytree(b.r.logs, logs, ignore=shutil.ignore_patterns("cmd-*"),
                        dirs_exist_ok=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
