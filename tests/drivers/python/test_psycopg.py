#!/usr/bin/env python3
"""psycopg 3 through pgherald: prepared queries across transactions, rollback, LISTEN/NOTIFY.

Usage: test_psycopg.py [HOST PORT USER DBNAME]   (default: $PGHOST $PGPORT $PGUSER $PGDATABASE)
Env: DRIVER_CLIENTS (concurrent connections, default 6), DRIVER_ITERATIONS (transactions per
connection, default 50), DRIVER_POOL_SIZE=2 (the server is pgherald in transaction mode with
exactly two server connections: also pin a prepared statement onto each of them in turn and
check that it ran on both), DRIVER_SSLMODE and DRIVER_SSLROOTCERT (libpq's sslmode and
sslrootcert, e.g. verify-full and the CA's PEM file: connect with TLS; unset: libpq's defaults).
Prints each check; exits 0 only if all pass.
"""
import os
import sys
import threading
import time

try:
    import psycopg
except ImportError as e:  # a missing driver is a failure, never a skip
    print(f"FAIL: psycopg is not installed for {sys.executable} ({e}); "
          "install it with `python3 -m pip install -r tests/drivers/python/requirements.txt` (.ci/run does)", file=sys.stderr)
    sys.exit(2)

NAME = "psycopg"
TABLE = "drv_psycopg"
CHANNEL = "drv_psycopg_ch"
CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "6"))
ITERATIONS = int(os.environ.get("DRIVER_ITERATIONS", "50"))
POOL_SIZE = os.environ.get("DRIVER_POOL_SIZE")
PAYLOAD2 = "from pg_notify: h\u00e9llo \u2713"


def conninfo():
    if len(sys.argv) == 5:
        host, port, user, db = sys.argv[1:5]
    elif len(sys.argv) == 1:
        host, port, user, db = (os.environ.get(k, d) for k, d in
                                (("PGHOST", "127.0.0.1"), ("PGPORT", "6432"),
                                 ("PGUSER", "postgres"), ("PGDATABASE", "postgres")))
    else:
        sys.exit(f"usage: {sys.argv[0]} [HOST PORT USER DBNAME]")
    tls = {k: os.environ[e] for k, e in (("sslmode", "DRIVER_SSLMODE"), ("sslrootcert", "DRIVER_SSLROOTCERT"))
           if os.environ.get(e)}
    return psycopg.conninfo.make_conninfo(host=host, port=port, user=user, dbname=db, **tls)


CONNINFO = conninfo()
THRESHOLD = None
checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"ok {checks} - {NAME}: {what}", flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    ok(what)


def connect(**kw):
    return psycopg.connect(CONNINFO, **kw)


def setup():
    with connect(autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        c.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)")
        if os.environ.get("DRIVER_SSLMODE", "disable") not in ("disable", "allow", "prefer"):
            check(c.pgconn.ssl_in_use, f"connected with TLS (sslmode={os.environ['DRIVER_SSLMODE']})")


def worker(k, servers, errors, start):
    """One connection: once all are connected, ITERATIONS transactions, each an INSERT and a
    SELECT with parameters."""
    try:
        with connect() as c:  # autocommit off: psycopg opens a transaction at the first statement
            start.wait(timeout=30)
            global THRESHOLD
            THRESHOLD = c.prepare_threshold
            if THRESHOLD is None or THRESHOLD >= ITERATIONS:
                raise AssertionError(f"prepare_threshold {THRESHOLD}: statements would never be prepared")
            seen = set()
            for i in range(ITERATIONS):
                rid = k * 100000 + i
                with c.transaction():
                    c.execute(f"INSERT INTO {TABLE} (id, client, val) VALUES (%s, %s, %s)",
                              (rid, k, f"v{i}"))
                    row = c.execute(f"SELECT id, client, val, pg_backend_pid() FROM {TABLE} WHERE id = %s",
                                    (rid,)).fetchone()
                    if row[:3] != (rid, k, f"v{i}"):
                        raise AssertionError(f"client {k} txn {i}: got {row[:3]}")
                    seen.add(row[3])
            servers[k] = seen
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"client {k}: {type(e).__name__}: {e}")


def prepared_across_transactions():
    servers, errors = {}, []
    start = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=worker, args=(k, servers, errors, start)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError("prepared-query workers failed:\n  " + "\n  ".join(errors))
    ok(f"{CLIENTS} concurrent connections x {ITERATIONS} transactions of a parameterized INSERT + SELECT "
       f"(named server-side prepared statements from run {THRESHOLD + 1} on, prepare_threshold={THRESHOLD})")
    with connect(autocommit=True) as c:
        n = c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    check(n == CLIENTS * ITERATIONS, f"all {CLIENTS * ITERATIONS} committed rows are there (found {n})")
    hops = max(len(s) for s in servers.values())
    print(f"# {NAME}: most server backends seen by one connection: {hops}", flush=True)


def prepared_on_both_servers():
    """Pool of two: X runs its prepared statement while H1 holds one server in a transaction,
    then while H2 holds the other, so the statement must run on both servers."""
    if POOL_SIZE is None:
        print(f"# {NAME}: DRIVER_POOL_SIZE unset: not pinning a statement onto each server", flush=True)
        return
    if POOL_SIZE != "2":
        raise AssertionError(f"DRIVER_POOL_SIZE={POOL_SIZE}: only a pool of 2 is supported")
    q = f"SELECT pg_backend_pid(), count(*) FROM {TABLE} WHERE client = %s"
    with connect() as x, connect() as h1, connect() as h2:
        for _ in range(x.prepare_threshold + 1):  # past the threshold: a named statement
            x.execute(q, (0,))
            x.commit()
        p1 = h1.execute("SELECT pg_backend_pid()").fetchone()[0]  # H1 holds one server
        a, n = x.execute(q, (0,)).fetchone()  # so X gets the other
        x.commit()
        p2 = h2.execute("SELECT pg_backend_pid()").fetchone()[0]  # H2 holds that other one
        h1.commit()
        b, _ = x.execute(q, (0,)).fetchone()  # so X gets H1's
        x.commit()
        h2.commit()
    check(n == ITERATIONS and p1 != p2 and (a, b) == (p2, p1),
          f"one connection's prepared statement ran on both server connections "
          f"(server pids {a} then {b}; holders on {p1} and {p2})")


def rollback():
    with connect() as c:
        c.execute(f"INSERT INTO {TABLE} (id, client, val) VALUES (%s, %s, %s)", (-1, -1, "rolled back"))
        n = c.execute(f"SELECT count(*) FROM {TABLE} WHERE id = %s", (-1,)).fetchone()[0]
        check(n == 1, "the row is visible inside its transaction")
        c.rollback()
        n = c.execute(f"SELECT count(*) FROM {TABLE} WHERE id = %s", (-1,)).fetchone()[0]
        check(n == 0, "after ROLLBACK the row is absent on the same connection")
        c.commit()
    with connect(autocommit=True) as c:
        n = c.execute(f"SELECT count(*) FROM {TABLE} WHERE id = %s", (-1,)).fetchone()[0]
        check(n == 0, "after ROLLBACK the row is absent on another connection")


def notifications():
    with connect(autocommit=True) as listener, connect(autocommit=True) as sender:
        lpid, spid = listener.info.backend_pid, sender.info.backend_pid
        check(lpid != spid, f"listener and sender have distinct login pids ({lpid}, {spid})")
        listener.execute(f"LISTEN {CHANNEL}")
        with sender.transaction():
            sender.execute(f"NOTIFY {CHANNEL}, 'discarded'")
            sender.execute(f"INSERT INTO {TABLE} (id, client, val) VALUES (%s, %s, %s)", (-2, -2, "x"))
            raise psycopg.Rollback()
        sender.execute(f"NOTIFY {CHANNEL}, 'from NOTIFY'")
        row = sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, PAYLOAD2)).fetchone()
        check(row is not None and len(row) == 1, f"SELECT pg_notify(%s, %s) returns one row of one column ({row!r})")
        got = list(listener.notifies(timeout=10, stop_after=2))
        check(len(got) == 2, f"listener received 2 notifications through notifies() (got {len(got)})")
        want = [(CHANNEL, "from NOTIFY", spid), (CHANNEL, PAYLOAD2, spid)]
        have = [(n.channel, n.payload, n.pid) for n in got]
        check(have == want, f"channel, payload and sender pid are right: {have}")
        extra = list(listener.notifies(timeout=0.5))
        check(extra == [], "nothing else arrives (the rolled-back NOTIFY is discarded)")
        listener.execute(f"UNLISTEN {CHANNEL}")
        sender.execute(f"NOTIFY {CHANNEL}, 'after unlisten'")
        extra = list(listener.notifies(timeout=0.5))
        check(extra == [], "nothing arrives after UNLISTEN")


def main():
    print(f"# {NAME} {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}) "
          f"against {CONNINFO}", flush=True)
    started = time.monotonic()
    setup()
    prepared_across_transactions()
    prepared_on_both_servers()
    rollback()
    notifications()
    print(f"# {NAME}: all {checks} checks passed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL - {NAME}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
