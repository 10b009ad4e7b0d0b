#!/usr/bin/env python3
"""The driver of bench/compare: starts each server, mints what the loads
need through the servers' own endpoints and pages, loads them with wrk,
and prints the table. bench/compare builds and installs what it needs and
sets COMPARE_* in the environment; run that, not this.

Every server this starts is written to $COMPARE_WORK/pids (bench/compare
kills those on exit too) and stopped before this returns.
"""

import base64
import html
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse

BENCH = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ["COMPARE_WORK"]
DURATION = int(os.environ.get("COMPARE_DURATION", "10"))
CONNECTIONS = int(os.environ.get("COMPARE_CONNECTIONS", "32"))
THREADS = 2
HG_BIN = os.environ["COMPARE_HG_BIN"]
FLOOR_BIN = os.environ.get("COMPARE_FLOOR_BIN", "")
PEER_DIR = os.environ.get("COMPARE_PEER_DIR", "")
PG_DATABASE = os.environ.get("COMPARE_PG_DATABASE", "")
ONLY = {s for s in os.environ.get("BENCH_COMPARE_ONLY", "").split(",") if s}
MILLION = int(os.environ.get("BENCH_MILLION", "1000000"))
# Starts timed per server; the median is reported.
STARTS = 3

SYSTEMS = {
    "hg": "healthgate SQLite",
    "pg": "healthgate PostgreSQL",
    "peer": "node-oidc-provider",
    "peermap": "node-oidc-provider (map adapter)",
    "floor": "durable floor",
}

results = {}  # (row, system) -> dict: rps, p50, p99, note
figures = {}  # (row, system) -> number (MiB, ms)
skipped = []  # (what, why)
notes = []


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def skip(what, why):
    skipped.append((what, why))
    say(f"   skipped: {what}: {why}")


def wanted(part):
    return not ONLY or part in ONLY


# ---------------------------------------------------------------- processes

procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(name, argv, env=None, cwd=None, stdout_path=None):
    """Starts a server; returns (process, monotonic time just before exec)."""
    log = open(os.path.join(WORK, f"{name}.log"), "ab")
    out = open(stdout_path, "wb") if stdout_path else log
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=out, stderr=log,
                         stdin=subprocess.DEVNULL)
    procs.append(p)
    with open(os.path.join(WORK, "pids"), "a") as f:
        f.write(f"{p.pid}\n")
    return p, t0


def healthz_once(port):
    """True if GET /healthz answers 200 now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def wait_ready(p, t0, port, name, timeout=120):
    """Polls /healthz tightly; returns seconds from exec to the first 200."""
    while True:
        if healthz_once(port):
            return time.monotonic() - t0
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode} before it was ready: "
                               + log_tail(name))
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{name} was not ready after {timeout} s")
        time.sleep(0.0005)


def log_tail(name, lines=15):
    try:
        with open(os.path.join(WORK, f"{name}.log"), errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in procs:
        procs.remove(p)


def stop_all():
    for p in list(procs):
        stop(p)


def rss_mib(p):
    """VmRSS in MiB; the progress line also says how much of it is anonymous
    memory (the heap) and how much is mapped files (the binary, libraries)."""
    fields = {}
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024
    say("   RSS after load: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in fields.items()))
    return fields.get("VmRSS", float("nan"))


# ---------------------------------------------------------------- HTTP

class Http:
    """One keep-alive connection with a small cookie jar (names and values
    only: every cookie goes back on every request, which both servers
    accept)."""

    def __init__(self, port, cookies=None):
        self.port = port
        self.conn = None
        self.cookies = dict(cookies or {})

    def request(self, method, target, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if isinstance(body, dict) or isinstance(body, list):
            body = urllib.parse.urlencode(body)
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request(method, target, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read().decode("utf-8", "replace")
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn = None
                if attempt == 2:
                    raise
        for c in r.msg.get_all("Set-Cookie") or []:
            pair, _, attrs = c.partition(";")
            name, _, value = pair.strip().partition("=")
            gone = re.search(r"max-age=0\b|expires=[^;]*1970", attrs, re.I)
            if gone:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        if r.getheader("Connection", "").lower() == "close":
            self.conn = None
        return r.status, r.getheader("Location"), data

    def close(self):
        if self.conn:
            self.conn.close()


def basic(client_id, secret):
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def path_of(url):
    u = urllib.parse.urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


def query_param(url, name):
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(name)
    return values[0] if values else None


def hidden_inputs(page):
    return [(html.unescape(n), html.unescape(v)) for n, v in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)]


def mint(name, url, env, total):
    """Mints about `total` single-use values with wrk and bench/mint.lua
    (the same request over and over, keeping a value from each answer),
    stopping it once there are enough or after MINT_BUDGET seconds."""
    out = os.path.join(WORK, f"mint-{name}")
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["MINT_OUT"] = out
    t = time.monotonic()
    p = subprocess.Popen(["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{MINT_BUDGET}s",
                          "-s", lua("mint.lua"), url],
                         env=full_env, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(WORK, f"mint-{name}.log"), "w"))
    files = [f"{out}.{i}" for i in range(THREADS)]

    def count():
        n = 0
        for f in files:
            try:
                with open(f, "rb") as fh:
                    n += fh.read().count(b"\n")
            except FileNotFoundError:
                pass
        return n

    while p.poll() is None and count() < total:
        time.sleep(0.1)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        p.wait()
    values = []
    for f in files:
        try:
            with open(f) as fh:
                values += [urllib.parse.unquote(line.strip()) for line in fh if line.strip()]
        except FileNotFoundError:
            pass
    say(f"      {len(values):,} in {time.monotonic() - t:.1f} s")
    return values


def saved_values(prefix):
    values = []
    for i in range(THREADS):
        try:
            with open(f"{prefix}.{i}") as fh:
                values += [line.strip() for line in fh if line.strip()]
        except FileNotFoundError:
            pass
    return values


def pool_size(rate):
    """At most as many codes as the server issued client-credentials tokens
    in DURATION seconds: no grant is cheaper than that one."""
    return max(500, min(200_000, math.ceil(rate * DURATION)))


# Minting a code costs the server about what exchanging it does, so minting
# for a little longer than the load lasts gives a pool that lasts about as
# long; when a pool is spent early, the rate is taken over its life.
MINT_BUDGET = max(10, math.ceil(1.5 * DURATION))

# ---------------------------------------------------------------- wrk


def wrk(name, url, script, env, row, system, note="", duration=None):
    """Loads url with wrk; stores and returns the result."""
    duration = duration or DURATION
    say(f"   {name}: wrk -t{THREADS} -c{CONNECTIONS} -d{duration}s {os.path.basename(script)}")
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["POOL_THREADS"] = str(THREADS)
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency",
         "-s", script, url],
        env=full_env, capture_output=True, text=True, timeout=duration + 120)
    text = out.stdout
    with open(os.path.join(WORK, f"wrk-{system}-{row}.txt"), "w") as f:
        f.write(text + "\n--- stderr\n" + out.stderr)
    res = parse_wrk(text)
    res["note"] = note
    pool = re.search(r"pool: ok (\d+) bad (\d+) spent (yes|no) in ([\d.]+) s", text)
    if pool:
        # Its failures are among wrk's non-2xx answers already.
        ok, spent, span = int(pool[1]), pool[3] == "yes", float(pool[4])
        if spent and span > 0:
            res["rps"] = ok / span
            res["note"] = (note + "; " if note else "") + f"pool spent after {span:.1f} s"
    if res.get("rps") is None:
        raise RuntimeError(f"wrk gave no figure for {name}: {text} {out.stderr}")
    errors = res.get("errors", 0)
    if errors:
        res["note"] = (res["note"] + "; " if res["note"] else "") + f"{errors} errors"
    results[(row, system)] = res
    say(f"      {res['rps']:,.0f} req/s, p50 {fmt_ms(res.get('p50'))}, p99 {fmt_ms(res.get('p99'))}"
        + (f" ({res['note']})" if res["note"] else ""))
    return res


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(text):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    res["rps"] = float(m[1]) if m else None
    for label, key in (("50%", "p50"), ("99%", "p99")):
        m = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            res[key] = to_ms(m[1], m[2])
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m[1])
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    return res


def fmt_ms(v):
    if v is None:
        return "?"
    return f"{v:.1f} ms" if v >= 1 else f"{v * 1000:.0f} µs"


def lua(name):
    return os.path.join(BENCH, name)


# ---------------------------------------------------------------- healthgate

HG_ENV = {
    "HEALTHGATE_LOG_LEVEL": "warn",
    # wrk is one address far past the default per-address rate: raise it
    # out of reach, so every request still pays the (in-memory) check.
    "HEALTHGATE_THROTTLE__API_PER_MINUTE": os.environ.get(
        "HEALTHGATE_THROTTLE__API_PER_MINUTE", "4000000000"),
    "HEALTHGATE_THROTTLE__API_BURST": os.environ.get(
        "HEALTHGATE_THROTTLE__API_BURST", "4000000000"),
}


def hg_start(name, db_url, demo, extra_env=None):
    port = free_port()
    argv = [HG_BIN, "serve", "--bind", f"127.0.0.1:{port}"]
    if demo:
        argv[2:2] = ["--demo", "--json"]
    out = os.path.join(WORK, f"{name}.json") if demo else None
    env = dict(HG_ENV, HEALTHGATE_DATABASE_URL=db_url, **(extra_env or {}))
    p, t0 = launch(name, argv, env=env, stdout_path=out)
    ready = wait_ready(p, t0, port, name)
    seed = None
    if demo:
        with open(out) as f:
            seed = json.loads(f.readline())
    return p, port, ready, seed


def hg_login(port, seed):
    """Signs the demo member in through the login and consent pages; returns
    (cookies, first code, authorize path, redirect_uri)."""
    member = next(a for a in seed["accounts"] if a["role"] == "member")
    authorize = path_of(seed["authorize_url"])
    c = Http(port)
    status, location, _ = c.request("GET", authorize)
    login = path_of(location)
    _, _, page = c.request("GET", login)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    return_to = query_param(login, "return_to")
    status, location, _ = c.request("POST", "/login", {
        "username": member["username"], "password": member["password"],
        "csrf_token": csrf, "return_to": return_to})
    if status not in (302, 303) or not location:
        raise RuntimeError(f"healthgate login answered {status}")
    code = hg_code(c, path_of(location))
    c.close()
    return c.cookies, code, authorize, seed["redirect_uri"]


def hg_code(c, authorize):
    """One code: the authorize request, and the consent page if shown."""
    status, location, page = c.request("GET", authorize)
    if status == 200 and "decision" in page:
        form = hidden_inputs(page) + [("decision", "allow")]
        status, location, page = c.request("POST", "/oauth/authorize", form)
    code = location and query_param(location, "code")
    if not code:
        raise RuntimeError(f"no code from healthgate's authorize: {status} {location} {page[:200]}")
    return code


def token_request(c, path, auth, form):
    status, _, body = c.request("POST", path, form,
                                {"Authorization": f"Basic {auth}"})
    if status != 200:
        raise RuntimeError(f"token endpoint answered {status}: {body[:300]}")
    return json.loads(body)


def hg_phase(system, label, db_url, pg=False):
    say(f"== {label} ({db_url.split('?')[0] if pg else 'sqlite'})")
    p, port, _, seed = hg_start(f"{system}", db_url, demo=True)
    base = f"http://127.0.0.1:{port}"
    cid, secret = seed["client_id"], seed["client_secret"]
    auth = basic(cid, secret)
    cookies, code, authorize, redirect_uri = hg_login(port, seed)
    c = Http(port, cookies)
    user_token = token_request(c, "/oauth/token", auth, {"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": redirect_uri})["access_token"]
    env = {"CLIENT_ID": cid, "CLIENT_SECRET": secret, "BASIC_AUTH": auth,
           "ACCESS_TOKEN": user_token}

    cc = wrk("client credentials", f"{base}/oauth/token", lua("token.lua"), env, "cc", system)
    wrk("introspection", f"{base}/oauth/introspect", lua("introspect.lua"), env, "introspect", system)
    wrk("GET /api/v1/me", f"{base}/api/v1/me", lua("me.lua"), env, "me", system)

    n = pool_size(cc["rps"])
    say(f"   minting {n:,} codes: the signed-in member's authorize request, consent remembered")
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    codes = mint(f"{system}-codes", base + authorize, {"MINT_METHOD": "GET", "MINT_COOKIE": cookie,
                                                      "MINT_FROM": "code"}, n)
    pools(system, base + "/oauth/token", codes, redirect_uri, auth)
    # After the rows earlier runs have, so that those load the same database.
    dpop_rows(system, c, base, authorize, redirect_uri, auth, cc["rps"],
              results[("me", system)]["rps"], user_token)

    figures[("rss", system)] = rss_mib(p)
    c.close()
    stop(p)
    time_starts(system, lambda i: hg_start(f"{system}-start{i}", db_url, demo=False))
    if not pg:
        full_sync(db_url, env)


def dpop_proofs(key, method, url, n, token=None):
    """n DPoP proofs by `key` for method at url, made now (bench/dpop.mjs)."""
    t = time.monotonic()
    argv = ["node", os.path.join(BENCH, "dpop.mjs"), "proofs", key, method, url, str(n)]
    out = subprocess.run(argv + ([token] if token else []), check=True,
                         capture_output=True, text=True).stdout.split()
    say(f"      {len(out):,} proofs in {time.monotonic() - t:.1f} s")
    return out


def dpop_rows(system, c, base, authorize, redirect_uri, auth, cc_rate, me_rate, bearer):
    """Client credentials and /api/v1/me again with DPoP (RFC 9449): every
    request carries a proof of its own (a new jti), made beforehand by
    bench/dpop.mjs and walked by bench/pool.lua as the code pools are; the
    /me token is bound to the key by a code exchanged with a proof."""
    key = os.path.join(WORK, f"dpop-{system}.jwk")
    subprocess.run(["node", os.path.join(BENCH, "dpop.mjs"), "key", key], check=True)
    _, _, body = c.request("GET", "/.well-known/oauth-authorization-server")
    issuer = json.loads(body)["issuer"]
    token_url, me_url = f"{issuer}/oauth/token", f"{issuer}/api/v1/me"

    code = hg_code(c, authorize)
    [proof] = dpop_proofs(key, "POST", token_url, 1)
    status, _, body = c.request("POST", "/oauth/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
    }, {"Authorization": f"Basic {auth}", "DPoP": proof})
    bound = json.loads(body)
    if status != 200 or bound.get("token_type") != "DPoP":
        raise RuntimeError(f"no DPoP-bound token: {status} {body[:300]}")

    say("   client credentials with DPoP: a proof a request")
    path = os.path.join(WORK, f"pool-{system}-cc_dpop.txt")
    with open(path, "w") as f:
        f.write("\n".join(dpop_proofs(key, "POST", token_url, pool_size(cc_rate))) + "\n")
    wrk("client credentials, DPoP", f"{base}/oauth/token", lua("pool.lua"),
        {"POOL_FILE": path, "POOL_HEADER": "DPoP", "POOL_BODY": "grant_type=client_credentials",
         "BASIC_AUTH": auth}, "cc_dpop", system)

    say("   GET /api/v1/me with a DPoP-bound token: a proof a request")
    path = os.path.join(WORK, f"pool-{system}-me_dpop.txt")
    with open(path, "w") as f:
        f.write("\n".join(dpop_proofs(key, "GET", me_url, pool_size(me_rate),
                                      bound["access_token"])) + "\n")
    wrk("GET /api/v1/me, DPoP", f"{base}/api/v1/me", lua("pool.lua"),
        {"POOL_FILE": path, "POOL_HEADER": "DPoP", "POOL_METHOD": "GET",
         "POOL_AUTH": f"DPoP {bound['access_token']}"}, "me_dpop", system)

    # The control: the bearer token through the same script, with a header
    # as long as a proof, so that wrk does the same work for both rows.
    with open(path) as f:
        width = len(f.readline().strip())
    control = os.path.join(WORK, f"pool-{system}-me_pool.txt")
    with open(control, "w") as f:
        f.write(("x" * width + "\n") * pool_size(me_rate))
    say("   GET /api/v1/me with the bearer token through pool.lua (the DPoP row's control)")
    wrk("GET /api/v1/me, bearer via pool.lua", f"{base}/api/v1/me", lua("pool.lua"),
        {"POOL_FILE": control, "POOL_HEADER": "X-Pool", "POOL_METHOD": "GET",
         "POOL_AUTH": f"Bearer {bearer}"}, "me_pool", system)


def full_sync(db_url, env):
    """Client credentials again, on the same database after the other loads,
    with database_synchronous = "full" (issue 14, item 4)."""
    what = "client credentials with SQLite synchronous=FULL"
    # A build that has the setting refuses a value it does not know; one
    # that has not ignores the variable.
    probe = subprocess.run([HG_BIN, "migrate"], capture_output=True, text=True, env=dict(
        os.environ, **HG_ENV, HEALTHGATE_DATABASE_URL=db_url,
        HEALTHGATE_DATABASE_SYNCHRONOUS="not-a-mode"))
    if probe.returncode == 0 or "database_synchronous" not in probe.stderr:
        skip(what, "this healthgate has no database_synchronous setting")
        return
    say('   database_synchronous = "full", the same database')
    p, port, _, _ = hg_start("hg-full", db_url, demo=False,
                             extra_env={"HEALTHGATE_DATABASE_SYNCHRONOUS": "full"})
    wrk("client credentials, synchronous FULL", f"http://127.0.0.1:{port}/oauth/token",
        lua("token.lua"), env, "cc_full", "hg")
    stop(p)


def pool_run(name, url, pool, body, auth, system, row, save=None):
    if not pool:
        skip(f"{name} ({SYSTEMS[system]})", "no pool could be minted")
        return None
    path = os.path.join(WORK, f"pool-{system}-{row}.txt")
    with open(path, "w") as f:
        f.write("\n".join(pool) + "\n")
    env = {"POOL_FILE": path, "POOL_BODY": body, "BASIC_AUTH": auth}
    if save:
        env.update({"POOL_SAVE": save, "POOL_SAVE_OUT": f"{path}.{save}"})
    return wrk(name, url, lua("pool.lua"), env, row, system)


def pools(system, token_url, codes, redirect_uri, auth):
    """Code exchange over the pool of codes, keeping the refresh token of
    each answer; then refresh over those (each spent once)."""
    body = ("grant_type=authorization_code&redirect_uri="
            + urllib.parse.quote(redirect_uri, safe="").replace("%", "%%") + "&code=%s")
    pool_run("code exchange", token_url, codes, body, auth, system, "code", save="refresh_token")
    refresh = saved_values(os.path.join(WORK, f"pool-{system}-code.txt.refresh_token"))
    say(f"   refresh over the {len(refresh):,} refresh tokens the code exchange returned")
    pool_run("refresh", token_url, refresh, "grant_type=refresh_token&refresh_token=%s",
             auth, system, "refresh")


def time_starts(system, start):
    """Median exec-to-ready of STARTS starts; each is stopped after."""
    times = []
    for i in range(STARTS):
        p, _, ready, _ = start(i)
        times.append(ready * 1000)
        stop(p)
    figures[("start", system)] = statistics.median(times)
    say(f"   start to ready: {', '.join(f'{t:.0f}' for t in times)} ms "
        f"(median {figures[('start', system)]:.0f})")


# ------------------------------------------------- 1M tokens (SQLite only)

def million_phase():
    """Introspection on a copy of the database as it was (a handful of
    tokens) and on the database with MILLION live tokens seeded, started
    and loaded alternately, twice each for half the duration, so that a
    drift in the machine's speed falls on both."""
    say(f"== healthgate SQLite: introspection, empty database and {MILLION:,} live tokens")
    db = os.path.join(WORK, "million.db")
    empty = os.path.join(WORK, "empty.db")
    p, port, _, seed = hg_start("million", f"sqlite://{db}", demo=True)
    cid, secret = seed["client_id"], seed["client_secret"]
    auth = basic(cid, secret)
    cookies, code, _, redirect_uri = hg_login(port, seed)
    c = Http(port, cookies)
    token = token_request(c, "/oauth/token", auth, {"grant_type": "authorization_code", "code": code,
                                                    "redirect_uri": redirect_uri})["access_token"]
    c.close()
    stop(p)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            shutil.copy(db + suffix, empty + suffix)
    say(f"   seeding {MILLION:,} live access tokens and their families with SQL")
    t = time.monotonic()
    seed_tokens(db, MILLION)
    say(f"      in {time.monotonic() - t:.1f} s, file {os.path.getsize(db) / 2**20:.0f} MiB")

    env = {"CLIENT_ID": cid, "CLIENT_SECRET": secret, "BASIC_AUTH": auth, "ACCESS_TOKEN": token}
    half = max(1, DURATION // 2)
    runs = {"intro_empty": [], "intro_1m": []}
    for round_ in (1, 2):
        for key, path, label in (("intro_empty", empty, "empty database"),
                                 ("intro_1m", db, f"{MILLION:,} live tokens")):
            p, port, ready, _ = hg_start(f"{key}-{round_}", f"sqlite://{path}", demo=False)
            figures.setdefault(("start_" + key, "hg"), []).append(ready * 1000)
            runs[key].append(wrk(f"introspection, {label}, round {round_}",
                                 f"http://127.0.0.1:{port}/oauth/introspect",
                                 lua("introspect.lua"), env, key, "hg", duration=half))
            stop(p)
    for key, rs in runs.items():
        results[(key, "hg")] = {
            "rps": statistics.mean(r["rps"] for r in rs),
            "p50": statistics.mean(r["p50"] for r in rs if r.get("p50") is not None),
            "p99": max(r["p99"] for r in rs if r.get("p99") is not None),
            "note": "; ".join(r["note"] for r in rs if r.get("note")),
            "runs": [r["rps"] for r in rs],
        }
        figures[("start_" + key, "hg")] = statistics.median(figures[("start_" + key, "hg")])


def seed_tokens(db, count):
    """count live access tokens, each in its own family, shaped like the
    newest real row (same client, user, scope, owner), with random digests
    and ids, written while the server is stopped."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA cache_size = -262144")  # 256 MiB: keeps the indexes in memory
    con.execute("PRAGMA synchronous = OFF")
    cols = lambda table: [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    at_cols, fam_cols = cols("access_tokens"), cols("token_families")
    template = con.execute(
        "SELECT a.*, f.* FROM access_tokens a JOIN token_families f ON f.id = a.family_id "
        "ORDER BY a.created_at DESC LIMIT 1").fetchone()
    at_row = dict(zip(at_cols, template[:len(at_cols)]))
    fam_row = dict(zip(fam_cols, template[len(at_cols):]))
    now = int(time.time())

    def value(table, col, row):
        special = {
            ("token_families", "id"): "'fam-' || s.fam",
            ("token_families", "created_at"): f"{now} - s.i % 3600",
            ("access_tokens", "digest"): "s.digest",
            ("access_tokens", "family_id"): "'fam-' || s.fam",
            ("access_tokens", "created_at"): f"{now} - s.i % 3600",
            ("access_tokens", "expires_at"): f"{now} + 86400 - s.i % 3600",
            ("access_tokens", "refresh_digest"): "lower(hex(randomblob(32)))",
        }
        if (table, col) in special:
            if col == "refresh_digest" and row[col] is None:
                return "NULL"
            return special[(table, col)]
        return "?"

    with con:
        con.execute("DROP TABLE IF EXISTS temp.seed")
        con.execute(
            "CREATE TEMP TABLE seed AS WITH RECURSIVE n(i) AS "
            "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT i, lower(hex(randomblob(8))) AS fam, lower(hex(randomblob(32))) AS digest FROM n",
            (count,))
        for table, row, names in (("token_families", fam_row, fam_cols),
                                  ("access_tokens", at_row, at_cols)):
            exprs, params = [], []
            for col in names:
                e = value(table, col, row)
                exprs.append(e)
                if e == "?":
                    params.append(row[col])
            con.execute(f"INSERT INTO {table} ({', '.join(names)}) "
                        f"SELECT {', '.join(exprs)} FROM temp.seed s", params)
        con.execute("DROP TABLE temp.seed")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    live = con.execute("SELECT count(*) FROM access_tokens WHERE expires_at > ? AND revoked_at IS NULL",
                       (now,)).fetchone()[0]
    con.close()
    say(f"      {live:,} live access tokens in the database")


# ---------------------------------------------------------------- the peer

PEER_CLIENT = ("peer-client", "peer-secret-" + base64.urlsafe_b64encode(os.urandom(18)).decode())
PEER_USER = ("member", base64.urlsafe_b64encode(os.urandom(18)).decode())


def peer_start(name, adapter):
    port = free_port()
    env = {"NODE_ENV": "production", "PEER_PORT": str(port), "PEER_ADAPTER": adapter,
           "PEER_CLIENT_ID": PEER_CLIENT[0], "PEER_CLIENT_SECRET": PEER_CLIENT[1],
           "PEER_USERNAME": PEER_USER[0], "PEER_PASSWORD": PEER_USER[1]}
    p, t0 = launch(name, ["node", "server.mjs"], env=env, cwd=PEER_DIR)
    ready = wait_ready(p, t0, port, name)
    return p, port, ready, None


def peer_authorize_path(port, scope):
    q = urllib.parse.urlencode({"client_id": PEER_CLIENT[0], "response_type": "code",
                                "redirect_uri": f"http://127.0.0.1:{port}/callback",
                                "scope": scope, "state": "bench"})
    return f"/auth?{q}"


def peer_code(c, port, scope):
    """One code from node-oidc-provider: follows its redirects, signing in and
    consenting on this bench's interaction pages when they are shown."""
    target = peer_authorize_path(port, scope)
    callback = f"http://127.0.0.1:{port}/callback"
    for _ in range(12):
        status, location, page = c.request("GET", target)
        if status == 200 and target.startswith("/interaction/"):
            if 'name="username"' in page:
                form = {"username": PEER_USER[0], "password": PEER_USER[1]}
            else:
                form = {"decision": "allow"}
            status, location, page = c.request("POST", target, form)
        if status in (302, 303) and location:
            if location.startswith(callback):
                code = query_param(location, "code")
                if not code:
                    raise RuntimeError(f"the peer refused: {location}")
                return code
            target = path_of(location)
            continue
        raise RuntimeError(f"the peer answered {status} at {target}: {page[:200]}")
    raise RuntimeError("too many redirects from the peer")


def peer_tokens(c, port, scope, auth):
    code = peer_code(c, port, scope)
    return token_request(c, "/token", auth, {"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": f"http://127.0.0.1:{port}/callback"})


def peer_phase():
    say("== node-oidc-provider, its default in-memory adapter")
    p, port, _, _ = peer_start("peer", "default")
    base = f"http://127.0.0.1:{port}"
    auth = basic(*PEER_CLIENT)
    env = {"CLIENT_ID": PEER_CLIENT[0], "CLIENT_SECRET": PEER_CLIENT[1], "BASIC_AUTH": auth}
    wrk("client credentials", f"{base}/token", lua("token.lua"), env, "cc", "peer")
    # The default adapter is a 1,000-entry LRU: the client-credentials load
    # above evicted everything older, so the user's token is minted now.
    c = Http(port)
    env["ACCESS_TOKEN"] = peer_tokens(c, port, "openid profile_read", auth)["access_token"]
    c.close()
    wrk("introspection", f"{base}/token/introspection", lua("introspect.lua"), env, "introspect", "peer")
    wrk("GET /me (userinfo)", f"{base}/me", lua("me.lua"), env, "me", "peer")
    figures[("rss", "peer")] = rss_mib(p)
    stop(p)
    for row in ("refresh", "code exchange"):
        skip(f"{row} (node-oidc-provider, default adapter)",
             "its in-memory adapter is an LRU of about 1,000 entries, so a pool minted "
             "beforehand is evicted before wrk reaches it; compared against the floor, "
             "and measured on the peer with a map adapter (all entries kept) for reference")
    time_starts("peer", lambda i: peer_start(f"peer-start{i}", "default"))

    say("== node-oidc-provider with a map adapter (keeps every entry): refresh and code exchange")
    p, port, _, _ = peer_start("peermap", "map")
    base = f"http://127.0.0.1:{port}"
    first = Http(port)
    peer_tokens(first, port, "profile_read", auth)  # signs in and consents once
    cookies = first.cookies
    first.close()
    rate = results.get(("cc", "peer"), {}).get("rps", 2000)
    n = pool_size(rate)
    say(f"   minting {n:,} codes: the signed-in account's authorize request, consent remembered")
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    codes = mint("peermap-codes", base + peer_authorize_path(port, "profile_read"),
                 {"MINT_METHOD": "GET", "MINT_COOKIE": cookie, "MINT_FROM": "code"}, n)
    pools("peermap", base + "/token", codes, f"{base}/callback", auth)
    figures[("rss", "peermap")] = rss_mib(p)
    stop(p)


# ---------------------------------------------------------------- the floor

FLOOR_CLIENT = ("floor-client", "floor-secret-" + base64.urlsafe_b64encode(os.urandom(18)).decode())


def floor_start(name, db, synchronous="normal"):
    port = free_port()
    env = {"FLOOR_BIND": f"127.0.0.1:{port}", "FLOOR_DATABASE": db,
           "FLOOR_CLIENT_ID": FLOOR_CLIENT[0], "FLOOR_CLIENT_SECRET": FLOOR_CLIENT[1],
           "FLOOR_SYNCHRONOUS": synchronous}
    p, t0 = launch(name, [FLOOR_BIN], env=env)
    return p, port, wait_ready(p, t0, port, name), None


def floor_phase():
    say("== durable floor (axum, one SQLite row per token, answered after the commit)")
    db = os.path.join(WORK, "floor.db")
    p, port, _, _ = floor_start("floor", db)
    env = {"CLIENT_ID": FLOOR_CLIENT[0], "CLIENT_SECRET": FLOOR_CLIENT[1]}
    wrk("client credentials", f"http://127.0.0.1:{port}/oauth/token", lua("token.lua"), env,
        "cc", "floor")
    figures[("rss", "floor")] = rss_mib(p)
    stop(p)
    time_starts("floor", lambda i: floor_start(f"floor-start{i}", db))
    say("   synchronous=FULL, a fresh file")
    p, port, _, _ = floor_start("floor-full", os.path.join(WORK, "floor-full.db"), "full")
    wrk("client credentials, synchronous FULL", f"http://127.0.0.1:{port}/oauth/token",
        lua("token.lua"), env, "cc_full", "floor")
    stop(p)


# ---------------------------------------------------------------- report

def rps(row, system):
    r = results.get((row, system))
    return r["rps"] if r else None


def ratio(a, b):
    return a / b if a and b else None


def fmt_rps(v):
    return f"{v:,.0f}" if v is not None else "—"


def fmt_ratio(v):
    return f"{v:.2f}×" if v is not None else "—"


def verdict(ok):
    return "—" if ok is None else ("met" if ok else "NOT met")


def report():
    print()
    print(f"healthgate {os.environ.get('COMPARE_HG_VERSION', '?')} side by side, "
          f"{os.cpu_count()} cores, wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"healthgate binary: {HG_BIN}")
    if PG_DATABASE:
        print(f"PostgreSQL: database {PG_DATABASE} (created for this run, dropped after), "
              f"synchronous_commit={os.environ.get('COMPARE_PG_SYNC', '?')}")
    print("SQLite (healthgate and floor): WAL, synchronous=NORMAL but where FULL is said")
    print()
    rows = [("cc", "client credentials"), ("introspect", "introspection"),
            ("me", "/api/v1/me (peer: /me)"), ("refresh", "refresh (pool)"),
            ("code", "code exchange (pool)"), ("cc_dpop", "client credentials, DPoP"),
            ("me_dpop", "/api/v1/me, DPoP"), ("me_pool", "/api/v1/me, bearer via pool.lua")]
    head = ["requests/s", "hg SQLite", "hg PG", "peer", "peer map", "floor",
            "hg/peer", "hg/floor", "target", ""]
    lines = [head]
    for row, label in rows:
        hg = rps(row, "hg")
        peer, peermap, floor = rps(row, "peer"), rps(row, "peermap"), rps(row, "floor")
        r_peer = ratio(hg, peer)
        # The floor answers client credentials only: the grants that write
        # are compared with its one durable row a token, the reads are not.
        r_floor = (None if row in ("introspect", "me", "me_dpop", "me_pool")
                   else ratio(hg, rps("cc", "floor")))
        if row == "me_pool":
            target, ok = f"{fmt_ratio(ratio(hg, rps('me', 'hg')))} of me.lua", None
        elif row.endswith("_dpop"):
            # Beside the same path with a bearer token, on this run (for
            # /me, through the same script when the control ran).
            same = "me_pool" if row == "me_dpop" and rps("me_pool", "hg") else row[:-len("_dpop")]
            bearer = ratio(hg, rps(same, "hg"))
            target, ok = f"{fmt_ratio(bearer)} of bearer", None
        elif row == "cc":
            target = "≥3× peer, ≥0.7 floor"
            ok = None if r_peer is None or r_floor is None else (r_peer >= 3 and r_floor >= 0.7)
        elif row in ("introspect", "me"):
            target, ok = "≥5× peer", (None if r_peer is None else r_peer >= 5)
        elif peer is not None:
            target, ok = "≥3× peer", (None if r_peer is None else r_peer >= 3)
        else:
            # The floor answers client credentials only: one durable row per
            # token is the least any grant writes.
            target = "≥0.5 floor (peer not driven)"
            ok = None if r_floor is None else r_floor >= 0.5
        peer_cell = fmt_ratio(r_peer)
        if peer is None and peermap and hg:
            peer_cell = f"({fmt_ratio(ratio(hg, peermap))} map)"
        lines.append([label, fmt_rps(hg), fmt_rps(rps(row, "pg")), fmt_rps(peer),
                      fmt_rps(peermap), fmt_rps(floor), peer_cell, fmt_ratio(r_floor),
                      target, verdict(ok)])
    table(lines)

    print()
    lines = [["latency p50 / p99", "hg SQLite", "hg PG", "peer", "peer map", "floor"]]
    for row, label in rows:
        cells = [label]
        for s in ("hg", "pg", "peer", "peermap", "floor"):
            r = results.get((row, s))
            cells.append(f"{fmt_ms(r.get('p50'))} / {fmt_ms(r.get('p99'))}" if r else "—")
        lines.append(cells)
    table(lines)

    print()
    lines = [["", "hg SQLite", "hg PG", "peer", "peer map", "floor", "target", ""]]
    f = lambda key, s, unit: (f"{figures[(key, s)]:.0f} {unit}" if (key, s) in figures else "—")
    rss_hg = figures.get(("rss", "hg"))
    lines.append(["RSS after load"] + [f("rss", s, "MiB") for s in ("hg", "pg", "peer", "peermap", "floor")]
                 + ["≤64 MiB", verdict(None if rss_hg is None else rss_hg <= 64)])
    start_hg = figures.get(("start", "hg"))
    lines.append([f"start to ready (median of {STARTS})"]
                 + [f("start", s, "ms") for s in ("hg", "pg", "peer", "peermap", "floor")]
                 + ["≤200 ms", verdict(None if start_hg is None else start_hg <= 200)])
    table(lines)

    hg_full, floor_full = rps("cc_full", "hg"), rps("cc_full", "floor")
    if hg_full or floor_full:
        print()
        r_hg, r_floor = ratio(hg_full, rps("cc", "hg")), ratio(floor_full, rps("cc", "floor"))
        lines = [["client credentials, SQLite", "NORMAL", "FULL", "FULL / NORMAL", "target", ""]]
        lines.append(["healthgate", fmt_rps(rps("cc", "hg")), fmt_rps(hg_full), fmt_ratio(r_hg),
                      "≥0.5", verdict(None if r_hg is None else r_hg >= 0.5)])
        lines.append(["floor", fmt_rps(rps("cc", "floor")), fmt_rps(floor_full), fmt_ratio(r_floor),
                      "", ""])
        table(lines)

    empty, full = rps("intro_empty", "hg"), rps("intro_1m", "hg")
    if empty or full:
        print()
        r = ratio(full, empty)
        lines = [["introspection, hg SQLite", "requests/s", "runs", "p50 / p99 (worst)",
                  "start", "target", ""]]
        for key, label in (("intro_empty", "empty database"), ("intro_1m", f"{MILLION:,} live tokens")):
            res = results.get((key, "hg"))
            start = figures.get(("start_" + key, "hg"))
            lines.append([label, fmt_rps(res and res["rps"]),
                          " / ".join(fmt_rps(x) for x in res.get("runs", [])) if res else "—",
                          f"{fmt_ms(res.get('p50'))} / {fmt_ms(res.get('p99'))}" if res else "—",
                          f"{start:.0f} ms" if start is not None else "—", "", ""])
        lines.append([f"{'1M' if MILLION == 1_000_000 else f'{MILLION:,}'} / empty", fmt_ratio(r), "", "", "", "≥0.8 (within 20%)",
                      verdict(None if r is None else r >= 0.8)])
        table(lines)

    notes_all = []
    for (row, s), res in sorted(results.items()):
        if res.get("note"):
            notes_all.append(f"{row} on {SYSTEMS[s]}: {res['note']}")
    if notes_all or notes:
        print()
        print("Notes:")
        for n in notes + notes_all:
            print(f"  - {n}")
    if skipped:
        print()
        print("Skipped:")
        for what, why in skipped:
            print(f"  - {what}: {why}")


def table(lines):
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(lines[0]))]
    for n, l in enumerate(lines):
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(l, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for reason in os.environ.get("COMPARE_SKIPPED", "").split("\n"):
        if reason.strip():
            what, _, why = reason.partition(": ")
            skipped.append((what, why))
    notes.append("code exchange walks a pool of codes minted just before it (wrk repeating "
                 "the authorize request of an account signed in through the login and "
                 "consent pages; consent is remembered); refresh walks the refresh tokens "
                 "that code exchange returned; each value is used once")
    notes.append("the floor answers client credentials only: the refresh and code exchange "
                 "ratios to the floor are against its client-credentials rate")
    phases = [("floor", FLOOR_BIN and floor_phase, "floor"),
              ("peer", PEER_DIR and peer_phase, "node-oidc-provider"),
              ("sqlite", lambda: hg_phase("hg", "healthgate on SQLite", "sqlite://" + os.path.join(WORK, "hg.db")), None),
              ("million", million_phase, None),
              ("postgres", PG_DATABASE and (lambda: hg_phase("pg", "healthgate on PostgreSQL", os.environ["COMPARE_PG_DB_URL"], pg=True)), None)]
    failed = False
    try:
        for part, run, _ in phases:
            if not run or not wanted(part):
                continue
            try:
                run()
            except Exception as e:
                failed = True
                skip(f"part of {part}", f"failed: {e}")
                stop_all()
    finally:
        stop_all()
    report()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
