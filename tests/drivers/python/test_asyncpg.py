#!/usr/bin/env python3
"""asyncpg through pgherald: prepared queries across transactions, rollback, LISTEN/NOTIFY.

Usage: test_asyncpg.py [HOST PORT USER DBNAME]   (default: $PGHOST $PGPORT $PGUSER $PGDATABASE)
Env: DRIVER_CLIENTS (concurrent connections, default 6), DRIVER_ITERATIONS (transactions per
connection, default 50), DRIVER_POOL_SIZE=2 (the server is pgherald in transaction mode with
exactly two server connections: also pin a prepared statement onto each of them in turn and
check that it ran on both), DRIVER_SSLMODE and DRIVER_SSLROOTCERT (as libpq's sslmode and
sslrootcert: with verify-ca/verify-full and a CA file, connect with an ssl.SSLContext trusting that
CA, checking the host name for verify-full; another mode is passed to asyncpg as is).
Prints each check; exits 0 only if all pass.
"""
import asyncio
import os
import ssl
import sys
import time

try:
    import asyncpg
except ImportError as e:  # a missing driver is a failure, never a skip
    print(f"FAIL: asyncpg is not installed for {sys.executable} ({e}); "
          "install it with `python3 -m pip install -r tests/drivers/python/requirements.txt` (.ci/run does)", file=sys.stderr)
    sys.exit(2)

NAME = "asyncpg"
TABLE = "drv_asyncpg"
CHANNEL = "drv_asyncpg_ch"
CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "6"))
ITERATIONS = int(os.environ.get("DRIVER_ITERATIONS", "50"))
POOL_SIZE = os.environ.get("DRIVER_POOL_SIZE")
PAYLOAD2 = "from pg_notify: h\u00e9llo \u2713"
TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0  # a hang fails the run instead of stalling it


def params():
    if len(sys.argv) == 5:
        host, port, user, db = sys.argv[1:5]
    elif len(sys.argv) == 1:
        host, port, user, db = (os.environ.get(k, d) for k, d in
                                (("PGHOST", "127.0.0.1"), ("PGPORT", "6432"),
                                 ("PGUSER", "postgres"), ("PGDATABASE", "postgres")))
    else:
        sys.exit(f"usage: {sys.argv[0]} [HOST PORT USER DBNAME]")
    return dict(host=host, port=int(port), user=user, database=db, **tls())


def tls():
    """The `ssl` argument of asyncpg.connect() for DRIVER_SSLMODE and DRIVER_SSLROOTCERT."""
    mode, ca = os.environ.get("DRIVER_SSLMODE"), os.environ.get("DRIVER_SSLROOTCERT")
    if not mode:
        return {}
    if mode in ("verify-ca", "verify-full") and ca:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        ctx.check_hostname = mode == "verify-full"
        return {"ssl": ctx}
    return {"ssl": mode}


PARAMS = params()
checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"ok {checks} - {NAME}: {what}", flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    ok(what)


async def connect(**kw):
    return await asyncpg.connect(**PARAMS, timeout=TIMEOUT, command_timeout=COMMAND_TIMEOUT, **kw)


async def setup():
    c = await connect()
    try:
        await c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await c.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)")
        if os.environ.get("DRIVER_SSLMODE", "disable") not in ("disable", "allow", "prefer"):
            tls_object = c._transport.get_extra_info("ssl_object")  # asyncpg has no public accessor
            check(tls_object is not None,
                  f"connected with TLS (sslmode={os.environ['DRIVER_SSLMODE']}, "
                  f"{tls_object.version() if tls_object else 'none'})")
    finally:
        await c.close()


async def worker(c, k):
    """One connection: prepare once, then ITERATIONS transactions reusing the two statements."""
    try:
        insert = await c.prepare(f"INSERT INTO {TABLE} (id, client, val) VALUES ($1, $2, $3)")
        select = await c.prepare(f"SELECT id, client, val, pg_backend_pid() AS server FROM {TABLE} WHERE id = $1")
        seen = set()
        for i in range(ITERATIONS):
            rid = k * 100000 + i
            async with c.transaction():
                await insert.fetch(rid, k, f"v{i}")
                row = await select.fetchrow(rid)
                if (row["id"], row["client"], row["val"]) != (rid, k, f"v{i}"):
                    raise AssertionError(f"client {k} txn {i}: got {tuple(row)}")
                seen.add(row["server"])
            # The cached path too: Connection.fetchval with arguments uses a named, cached statement.
            n = await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE client = $1", k)
            if n != i + 1:
                raise AssertionError(f"client {k} txn {i}: count {n}, expected {i + 1}")
        return seen
    finally:
        await c.close()


async def prepared_across_transactions():
    conns = await asyncio.gather(*(connect() for _ in range(CLIENTS)))  # all connected first
    results = await asyncio.gather(*(worker(c, k) for k, c in enumerate(conns)), return_exceptions=True)
    errors = [f"client {k}: {type(r).__name__}: {r}" for k, r in enumerate(results) if isinstance(r, BaseException)]
    if errors:
        raise AssertionError("prepared-query workers failed:\n  " + "\n  ".join(errors))
    ok(f"{CLIENTS} concurrent connections x {ITERATIONS} transactions reusing Connection.prepare() statements "
       "(named protocol-level statements) plus cached fetchval()")
    c = await connect()
    try:
        n = await c.fetchval(f"SELECT count(*) FROM {TABLE}")
    finally:
        await c.close()
    check(n == CLIENTS * ITERATIONS, f"all {CLIENTS * ITERATIONS} committed rows are there (found {n})")
    hops = max(len(s) for s in results)
    print(f"# {NAME}: most server backends seen by one connection: {hops}", flush=True)


async def prepared_on_both_servers():
    """Pool of two: X runs its prepared statement while H1 holds one server in a transaction,
    then while H2 holds the other, so the statement must run on both servers."""
    if POOL_SIZE is None:
        print(f"# {NAME}: DRIVER_POOL_SIZE unset: not pinning a statement onto each server", flush=True)
        return
    if POOL_SIZE != "2":
        raise AssertionError(f"DRIVER_POOL_SIZE={POOL_SIZE}: only a pool of 2 is supported")
    x, h1, h2 = await asyncio.gather(connect(), connect(), connect())
    try:
        stmt = await x.prepare(f"SELECT pg_backend_pid() AS server, count(*) AS n FROM {TABLE} WHERE client = $1")
        await stmt.fetchrow(0)
        t1 = h1.transaction()
        await t1.start()
        p1 = await h1.fetchval("SELECT pg_backend_pid()")  # H1 holds one server
        async with x.transaction():
            r1 = await stmt.fetchrow(0)  # so X gets the other
        t2 = h2.transaction()
        await t2.start()
        p2 = await h2.fetchval("SELECT pg_backend_pid()")  # H2 holds that other one
        await t1.commit()
        async with x.transaction():
            r2 = await stmt.fetchrow(0)  # so X gets H1's
        await t2.commit()
    finally:
        await asyncio.gather(x.close(), h1.close(), h2.close())
    a, b = r1["server"], r2["server"]
    check(r1["n"] == ITERATIONS and p1 != p2 and (a, b) == (p2, p1),
          f"one connection's prepared statement ran on both server connections "
          f"(server pids {a} then {b}; holders on {p1} and {p2})")


async def unnamed_worker(k):
    """statement_cache_size=0, the setting asyncpg recommends behind PgBouncer: every query is an
    unnamed statement, prepared with Parse/Describe/Flush (no Sync) and then bound and executed."""
    c = await connect(statement_cache_size=0)
    try:
        for i in range(ITERATIONS // 5):
            async with c.transaction():
                row = await c.fetchrow(f"SELECT count(*) AS n, $1::int AS k FROM {TABLE} WHERE client = $1", k)
            if (row["n"], row["k"]) != (ITERATIONS, k):
                raise AssertionError(f"client {k} query {i}: got {tuple(row)}")
            n = await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE client = $1 AND val = $2", k, "v1")
            if n != 1:
                raise AssertionError(f"client {k} query {i}: count {n}")
    finally:
        await c.close()


async def unnamed_statements():
    results = await asyncio.gather(*(unnamed_worker(k) for k in range(CLIENTS)), return_exceptions=True)
    errors = [f"client {k}: {type(r).__name__}: {r}" for k, r in enumerate(results) if isinstance(r, BaseException)]
    if errors:
        raise AssertionError("statement_cache_size=0 workers failed:\n  " + "\n  ".join(errors))
    ok(f"{CLIENTS} concurrent connections with statement_cache_size=0 (unnamed statements, "
       f"Parse/Describe/Flush) x {2 * (ITERATIONS // 5)} parameterized queries, half in transactions")


class Rollback(Exception):
    pass


async def rollback():
    c = await connect()
    try:
        try:
            async with c.transaction():
                await c.execute(f"INSERT INTO {TABLE} (id, client, val) VALUES ($1, $2, $3)", -1, -1, "rolled back")
                n = await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id = $1", -1)
                check(n == 1, "the row is visible inside its transaction")
                raise Rollback()
        except Rollback:
            pass
        n = await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id = $1", -1)
        check(n == 0, "after ROLLBACK the row is absent on the same connection")
        # An explicit ROLLBACK statement as well.
        tr = c.transaction()
        await tr.start()
        await c.execute(f"INSERT INTO {TABLE} (id, client, val) VALUES ($1, $2, $3)", -3, -3, "rolled back")
        await tr.rollback()
    finally:
        await c.close()
    c = await connect()
    try:
        n = await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE id = ANY($1::int[])", [-1, -3])
        check(n == 0, "after ROLLBACK the rows are absent on another connection")
    finally:
        await c.close()


async def notifications():
    listener, sender = await connect(), await connect()
    try:
        lpid, spid = listener.get_server_pid(), sender.get_server_pid()
        check(lpid != spid, f"listener and sender have distinct login pids ({lpid}, {spid})")
        queue = asyncio.Queue()
        def on_notify(conn, pid, channel, payload):
            queue.put_nowait((channel, payload, pid))

        await listener.add_listener(CHANNEL, on_notify)
        try:
            async with sender.transaction():
                await sender.execute(f"NOTIFY {CHANNEL}, 'discarded'")
                raise Rollback()
        except Rollback:
            pass
        await sender.execute(f"NOTIFY {CHANNEL}, 'from NOTIFY'")
        row = await sender.fetchrow("SELECT pg_notify($1, $2)", CHANNEL, PAYLOAD2)
        check(row is not None and len(row) == 1, f"SELECT pg_notify($1, $2) returns one row of one column ({row!r})")
        have = [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(2)]
        ok("listener received 2 notifications through add_listener()")
        want = [(CHANNEL, "from NOTIFY", spid), (CHANNEL, PAYLOAD2, spid)]
        check(have == want, f"channel, payload and sender pid are right: {have}")
        await asyncio.sleep(0.5)
        check(queue.empty(), "nothing else arrives (the rolled-back NOTIFY is discarded)")
        await listener.remove_listener(CHANNEL, on_notify)  # sends UNLISTEN
        await sender.execute(f"NOTIFY {CHANNEL}, 'after unlisten'")
        await asyncio.sleep(0.5)
        check(queue.empty(), "nothing arrives after remove_listener() (UNLISTEN)")
    finally:
        await listener.close()
        await sender.close()


async def main():
    print(f"# {NAME} {asyncpg.__version__} against {PARAMS}", flush=True)
    started = time.monotonic()
    await setup()
    await prepared_across_transactions()
    await prepared_on_both_servers()
    await unnamed_statements()
    await rollback()
    await notifications()
    print(f"# {NAME}: all {checks} checks passed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        print(f"FAIL - {NAME}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
