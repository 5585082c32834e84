#!/usr/bin/env node
// node-postgres (pg) through pgherald: prepared queries across transactions, rollback, LISTEN/NOTIFY.
//
// Usage: node test_pg.js [HOST PORT USER DBNAME]   (default: $PGHOST $PGPORT $PGUSER $PGDATABASE)
// Env: DRIVER_CLIENTS (concurrent connections, default 6), DRIVER_ITERATIONS (transactions per
// connection, default 50), DRIVER_POOL_SIZE=2 (the server is pgherald in transaction mode with
// exactly two server connections: also pin a prepared statement onto each of them in turn and
// check that it ran on both), DRIVER_SSLMODE and DRIVER_SSLROOTCERT (as libpq's sslmode and
// sslrootcert: with verify-ca/verify-full, connect with `ssl: {ca, rejectUnauthorized: true}`,
// checking the host name for verify-full; require: `ssl: {rejectUnauthorized: false}`).
// Prints each check; exits 0 only if all pass.
'use strict';

let pg;
try {
  pg = require('pg');
} catch (e) {
  // A missing driver is a failure, never a skip.
  console.error(`FAIL: node-postgres is not installed (${e.message.split('\n')[0]}); ` +
    `run \`npm ci\` in ${__dirname} (.ci/run does)`);
  process.exit(2);
}

const NAME = 'node-postgres';
const TABLE = 'drv_node';
const CHANNEL = 'drv_node_ch';
const CLIENTS = parseInt(process.env.DRIVER_CLIENTS || '6', 10);
const ITERATIONS = parseInt(process.env.DRIVER_ITERATIONS || '50', 10);
const POOL_SIZE = process.env.DRIVER_POOL_SIZE;
const PAYLOAD2 = 'from pg_notify: h\u00e9llo \u2713';
const TIMEOUT_MS = 10000;
const SSLMODE = process.env.DRIVER_SSLMODE || '';
const TLS_REQUIRED = ['require', 'verify-ca', 'verify-full'].includes(SSLMODE);

// The `ssl` option of pg.Client for DRIVER_SSLMODE and DRIVER_SSLROOTCERT (none: plaintext).
function tls() {
  if (!SSLMODE || SSLMODE === 'disable') return {};
  if (!TLS_REQUIRED) {
    console.error(`DRIVER_SSLMODE=${SSLMODE}: only disable, require, verify-ca and verify-full are supported`);
    process.exit(2);
  }
  const ssl = { rejectUnauthorized: SSLMODE !== 'require' };
  if (process.env.DRIVER_SSLROOTCERT) ssl.ca = require('fs').readFileSync(process.env.DRIVER_SSLROOTCERT);
  if (SSLMODE === 'verify-ca') ssl.checkServerIdentity = () => undefined; // chain only, any host name
  return { ssl };
}

function params() {
  const argv = process.argv.slice(2);
  if (argv.length === 4) {
    const [host, port, user, database] = argv;
    return { host, port: parseInt(port, 10), user, database, ...tls() };
  }
  if (argv.length !== 0) {
    console.error('usage: node test_pg.js [HOST PORT USER DBNAME]');
    process.exit(2);
  }
  const env = process.env;
  return {
    host: env.PGHOST || '127.0.0.1',
    port: parseInt(env.PGPORT || '6432', 10),
    user: env.PGUSER || 'postgres',
    database: env.PGDATABASE || 'postgres',
    ...tls(),
  };
}

const PARAMS = params();
let checks = 0;

function ok(what) {
  checks += 1;
  console.log(`ok ${checks} - ${NAME}: ${what}`);
}

function check(cond, what) {
  if (!cond) throw new Error(what);
  ok(what);
}

async function connect() {
  const c = new pg.Client({ ...PARAMS, connectionTimeoutMillis: TIMEOUT_MS });
  await c.connect();
  return c;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function setup() {
  const c = await connect();
  try {
    await c.query(`DROP TABLE IF EXISTS ${TABLE}`);
    await c.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)`);
    if (TLS_REQUIRED) {
      const stream = c.connection.stream; // a tls.TLSSocket once pg has upgraded the connection
      check(stream.encrypted === true, `connected with TLS (sslmode=${SSLMODE}, ${stream.getProtocol && stream.getProtocol()})`);
    }
  } finally {
    await c.end();
  }
}

// One connection: ITERATIONS transactions, each running two named prepared statements
// (Parse once with the name, then only Bind/Execute on later runs).
async function worker(c, k) {
  try {
    const seen = new Set();
    for (let i = 0; i < ITERATIONS; i++) {
      const id = k * 100000 + i;
      await c.query('BEGIN');
      try {
        await c.query({
          name: 'drv_insert',
          text: `INSERT INTO ${TABLE} (id, client, val) VALUES ($1, $2, $3)`,
          values: [id, k, `v${i}`],
        });
        const res = await c.query({
          name: 'drv_select',
          text: `SELECT id, client, val, pg_backend_pid() AS server FROM ${TABLE} WHERE id = $1`,
          values: [id],
        });
        const row = res.rows[0];
        if (!row || row.id !== id || row.client !== k || row.val !== `v${i}`) {
          throw new Error(`client ${k} txn ${i}: got ${JSON.stringify(row)}`);
        }
        seen.add(row.server);
        await c.query('COMMIT');
      } catch (e) {
        await c.query('ROLLBACK').catch(() => {});
        throw e;
      }
    }
    return seen;
  } finally {
    await c.end();
  }
}

async function preparedAcrossTransactions() {
  const conns = await Promise.all([...Array(CLIENTS).keys()].map(() => connect())); // all connected first
  const results = await Promise.allSettled(conns.map((c, k) => worker(c, k)));
  const errors = results
    .map((r, k) => (r.status === 'rejected' ? `client ${k}: ${r.reason && r.reason.stack || r.reason}` : null))
    .filter((e) => e);
  if (errors.length) throw new Error(`prepared-query workers failed:\n  ${errors.join('\n  ')}`);
  ok(`${CLIENTS} concurrent connections x ${ITERATIONS} transactions of named prepared statements ` +
    "(query({name, text, values}))");
  const c = await connect();
  let n;
  try {
    n = Number((await c.query(`SELECT count(*) AS n FROM ${TABLE}`)).rows[0].n);
  } finally {
    await c.end();
  }
  check(n === CLIENTS * ITERATIONS, `all ${CLIENTS * ITERATIONS} committed rows are there (found ${n})`);
  const hops = Math.max(...results.map((r) => r.value.size));
  console.log(`# ${NAME}: most server backends seen by one connection: ${hops}`);
}

// Pool of two: X runs its named statement while H1 holds one server in a transaction, then
// while H2 holds the other, so the statement must run on both servers.
async function preparedOnBothServers() {
  if (POOL_SIZE === undefined) {
    console.log(`# ${NAME}: DRIVER_POOL_SIZE unset: not pinning a statement onto each server`);
    return;
  }
  if (POOL_SIZE !== '2') throw new Error(`DRIVER_POOL_SIZE=${POOL_SIZE}: only a pool of 2 is supported`);
  const [x, h1, h2] = await Promise.all([connect(), connect(), connect()]);
  const q = {
    name: 'drv_hop',
    text: `SELECT pg_backend_pid() AS server, count(*)::int AS n FROM ${TABLE} WHERE client = $1`,
    values: [0],
  };
  const pid = async (c) => (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p;
  let p1, p2, r1, r2;
  try {
    await x.query(q);
    await h1.query('BEGIN');
    p1 = await pid(h1); // H1 holds one server
    await x.query('BEGIN');
    r1 = (await x.query(q)).rows[0]; // so X gets the other
    await x.query('COMMIT');
    await h2.query('BEGIN');
    p2 = await pid(h2); // H2 holds that other one
    await h1.query('COMMIT');
    await x.query('BEGIN');
    r2 = (await x.query(q)).rows[0]; // so X gets H1's
    await x.query('COMMIT');
    await h2.query('COMMIT');
  } finally {
    await Promise.all([x.end(), h1.end(), h2.end()]);
  }
  check(r1.n === ITERATIONS && p1 !== p2 && r1.server === p2 && r2.server === p1,
    `one connection's prepared statement ran on both server connections ` +
    `(server pids ${r1.server} then ${r2.server}; holders on ${p1} and ${p2})`);
}

async function countId(c, ids) {
  const res = await c.query(`SELECT count(*) AS n FROM ${TABLE} WHERE id = ANY($1::int[])`, [ids]);
  return Number(res.rows[0].n);
}

async function rollback() {
  const c = await connect();
  try {
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${TABLE} (id, client, val) VALUES ($1, $2, $3)`, [-1, -1, 'rolled back']);
    check((await countId(c, [-1])) === 1, 'the row is visible inside its transaction');
    await c.query('ROLLBACK');
    check((await countId(c, [-1])) === 0, 'after ROLLBACK the row is absent on the same connection');
  } finally {
    await c.end();
  }
  const d = await connect();
  try {
    check((await countId(d, [-1])) === 0, 'after ROLLBACK the row is absent on another connection');
  } finally {
    await d.end();
  }
}

async function notifications() {
  const listener = await connect();
  const sender = await connect();
  try {
    const lpid = listener.processID;
    const spid = sender.processID;
    check(Number.isInteger(spid) && lpid !== spid, `listener and sender have distinct login pids (${lpid}, ${spid})`);
    const got = [];
    const waiters = [];
    listener.on('notification', (msg) => {
      got.push([msg.channel, msg.payload, msg.processId]);
      waiters.splice(0).forEach((w) => w());
    });
    const waitFor = async (n) => {
      const deadline = Date.now() + TIMEOUT_MS;
      while (got.length < n && Date.now() < deadline) {
        await Promise.race([new Promise((r) => waiters.push(r)), sleep(100)]);
      }
      return got.length >= n;
    };
    await listener.query(`LISTEN ${CHANNEL}`);
    await sender.query('BEGIN');
    await sender.query(`NOTIFY ${CHANNEL}, 'discarded'`);
    await sender.query('ROLLBACK');
    await sender.query(`NOTIFY ${CHANNEL}, 'from NOTIFY'`);
    const res = await sender.query('SELECT pg_notify($1, $2)', [CHANNEL, PAYLOAD2]);
    check(res.rows.length === 1 && res.fields.length === 1,
      `SELECT pg_notify($1, $2) returns one row of one column (${JSON.stringify(res.rows)})`);
    check(await waitFor(2), `listener received 2 notifications through on('notification') (got ${got.length})`);
    const want = [[CHANNEL, 'from NOTIFY', spid], [CHANNEL, PAYLOAD2, spid]];
    check(JSON.stringify(got.slice(0, 2)) === JSON.stringify(want),
      `channel, payload and sender pid are right: ${JSON.stringify(got.slice(0, 2))}`);
    await sleep(500);
    check(got.length === 2, 'nothing else arrives (the rolled-back NOTIFY is discarded)');
    await listener.query(`UNLISTEN ${CHANNEL}`);
    await sender.query(`NOTIFY ${CHANNEL}, 'after unlisten'`);
    await sleep(500);
    check(got.length === 2, 'nothing arrives after UNLISTEN');
  } finally {
    await listener.end();
    await sender.end();
  }
}

async function main() {
  const version = require('pg/package.json').version;
  console.log(`# ${NAME} (pg) ${version} on node ${process.version} against ${JSON.stringify(PARAMS, (k, v) => (k === 'ca' ? process.env.DRIVER_SSLROOTCERT : v))}`);
  const started = Date.now();
  await setup();
  await preparedAcrossTransactions();
  await preparedOnBothServers();
  await rollback();
  await notifications();
  console.log(`# ${NAME}: all ${checks} checks passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`FAIL - ${NAME}: ${e && e.stack || e}`);
    process.exit(1);
  },
);
