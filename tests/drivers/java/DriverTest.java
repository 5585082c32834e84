// pgjdbc through pgherald: prepared queries across transactions, rollback, LISTEN/NOTIFY.
//
// Build and run (tests/drivers.rs does this):
//   javac -cp /usr/share/java/postgresql.jar -d OUT DriverTest.java
//   java -cp OUT:/usr/share/java/postgresql.jar DriverTest [HOST PORT USER DBNAME]
// Default connection parameters: $PGHOST $PGPORT $PGUSER $PGDATABASE.
// Env: DRIVER_CLIENTS (concurrent connections, default 6), DRIVER_ITERATIONS (transactions per
// connection, default 50), DRIVER_POOL_SIZE=2 (the server is pgherald in transaction mode with
// exactly two server connections: also pin a prepared statement onto each of them in turn and
// check that it ran on both), DRIVER_SSLMODE and DRIVER_SSLROOTCERT (pgjdbc's sslmode and
// sslrootcert, as libpq's: e.g. verify-full and the CA's PEM file; unset: pgjdbc's default).
// Prints each check; exits 0 only if all pass.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;

public final class DriverTest {
    static final String NAME = "pgjdbc";
    static final String TABLE = "drv_jdbc";
    static final String CHANNEL = "drv_jdbc_ch";
    static final String PAYLOAD2 = "from pg_notify: h\u00e9llo \u2713";
    static final int CLIENTS = intEnv("DRIVER_CLIENTS", 6);
    static final int ITERATIONS = intEnv("DRIVER_ITERATIONS", 50);
    static final String POOL_SIZE = System.getenv("DRIVER_POOL_SIZE");
    static final int TIMEOUT_MS = 10000;

    static String url;
    static Properties props = new Properties();
    static int checks = 0;

    static int intEnv(String name, int dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : Integer.parseInt(v);
    }

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static synchronized void ok(String what) {
        checks += 1;
        System.out.println("ok " + checks + " - " + NAME + ": " + what);
        System.out.flush();
    }

    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
        ok(what);
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, props);
    }

    static int backendPid(Connection c) throws SQLException {
        return c.unwrap(PGConnection.class).getBackendPID();
    }

    static void setup() throws SQLException {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + TABLE);
            s.execute("CREATE TABLE " + TABLE + " (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)");
        }
    }

    /** One connection: ITERATIONS transactions reusing two PreparedStatements. */
    static Set<Integer> worker(int k, CyclicBarrier start) throws Exception {
        Set<Integer> seen = new HashSet<>();
        try (Connection c = connect();
                PreparedStatement insert = c.prepareStatement(
                        "INSERT INTO " + TABLE + " (id, client, val) VALUES (?, ?, ?)");
                PreparedStatement select = c.prepareStatement(
                        "SELECT id, client, val, pg_backend_pid() FROM " + TABLE + " WHERE id = ?")) {
            c.setAutoCommit(false);
            start.await(30, TimeUnit.SECONDS); // every connection is open before any transaction starts
            int threshold = insert.unwrap(PGStatement.class).getPrepareThreshold();
            if (threshold <= 0 || threshold >= ITERATIONS) {
                throw new AssertionError("prepareThreshold " + threshold + ": statements would never be server-prepared");
            }
            for (int i = 0; i < ITERATIONS; i++) {
                int id = k * 100000 + i;
                insert.setInt(1, id);
                insert.setInt(2, k);
                insert.setString(3, "v" + i);
                if (insert.executeUpdate() != 1) {
                    throw new AssertionError("client " + k + " txn " + i + ": insert count");
                }
                select.setInt(1, id);
                try (ResultSet rs = select.executeQuery()) {
                    if (!rs.next() || rs.getInt(1) != id || rs.getInt(2) != k || !rs.getString(3).equals("v" + i)) {
                        throw new AssertionError("client " + k + " txn " + i + ": wrong row");
                    }
                    seen.add(rs.getInt(4));
                }
                c.commit();
            }
            if (!insert.unwrap(PGStatement.class).isUseServerPrepare()) {
                throw new AssertionError("client " + k + ": the INSERT never became a server-prepared statement");
            }
        }
        return seen;
    }

    static void preparedAcrossTransactions() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<Set<Integer>>> futures = new ArrayList<>();
        CyclicBarrier start = new CyclicBarrier(CLIENTS);
        for (int k = 0; k < CLIENTS; k++) {
            final int kk = k;
            futures.add(pool.submit(() -> worker(kk, start)));
        }
        List<String> errors = new ArrayList<>();
        int hops = 0;
        for (int k = 0; k < CLIENTS; k++) {
            try {
                hops = Math.max(hops, futures.get(k).get().size());
            } catch (java.util.concurrent.ExecutionException e) {
                errors.add("client " + k + ": " + e.getCause());
            }
        }
        pool.shutdown();
        if (!errors.isEmpty()) {
            throw new AssertionError("prepared-query workers failed:\n  " + String.join("\n  ", errors));
        }
        ok(CLIENTS + " concurrent connections x " + ITERATIONS + " transactions reusing PreparedStatements "
                + "(named server-side statements after prepareThreshold=5 runs)");
        try (Connection c = connect(); Statement s = c.createStatement();
                ResultSet rs = s.executeQuery("SELECT count(*) FROM " + TABLE)) {
            rs.next();
            int n = rs.getInt(1);
            check(n == CLIENTS * ITERATIONS, "all " + CLIENTS * ITERATIONS + " committed rows are there (found " + n + ")");
        }
        System.out.println("# " + NAME + ": most server backends seen by one connection: " + hops);
    }

    static int pid(Connection c) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT pg_backend_pid()")) {
            rs.next();
            return rs.getInt(1);
        }
    }

    static int[] serverAndCount(PreparedStatement p) throws SQLException {
        try (ResultSet rs = p.executeQuery()) {
            rs.next();
            return new int[] {rs.getInt(1), rs.getInt(2)};
        }
    }

    /**
     * Pool of two: X runs its server-prepared statement while H1 holds one server in a
     * transaction, then while H2 holds the other, so the statement must run on both servers.
     */
    static void preparedOnBothServers() throws SQLException {
        if (POOL_SIZE == null) {
            System.out.println("# " + NAME + ": DRIVER_POOL_SIZE unset: not pinning a statement onto each server");
            return;
        }
        if (!POOL_SIZE.equals("2")) {
            throw new AssertionError("DRIVER_POOL_SIZE=" + POOL_SIZE + ": only a pool of 2 is supported");
        }
        int p1, p2;
        int[] r1, r2;
        try (Connection x = connect(); Connection h1 = connect(); Connection h2 = connect();
                PreparedStatement q = x.prepareStatement(
                        "SELECT pg_backend_pid(), count(*) FROM " + TABLE + " WHERE client = ?")) {
            x.setAutoCommit(false);
            h1.setAutoCommit(false);
            h2.setAutoCommit(false);
            q.setInt(1, 0);
            int threshold = q.unwrap(PGStatement.class).getPrepareThreshold();
            for (int i = 0; i <= threshold; i++) {
                serverAndCount(q);
                x.commit();
            }
            if (!q.unwrap(PGStatement.class).isUseServerPrepare()) {
                throw new AssertionError("the statement did not become server-prepared");
            }
            p1 = pid(h1); // H1 holds one server
            r1 = serverAndCount(q); // so X gets the other
            x.commit();
            p2 = pid(h2); // H2 holds that other one
            h1.commit();
            r2 = serverAndCount(q); // so X gets H1's
            x.commit();
            h2.commit();
        }
        check(r1[1] == ITERATIONS && p1 != p2 && r1[0] == p2 && r2[0] == p1,
                "one connection's prepared statement ran on both server connections (server pids "
                        + r1[0] + " then " + r2[0] + "; holders on " + p1 + " and " + p2 + ")");
    }

    static int count(Connection c, int id) throws SQLException {
        try (PreparedStatement p = c.prepareStatement("SELECT count(*) FROM " + TABLE + " WHERE id = ?")) {
            p.setInt(1, id);
            try (ResultSet rs = p.executeQuery()) {
                rs.next();
                return rs.getInt(1);
            }
        }
    }

    static void rollback() throws SQLException {
        try (Connection c = connect()) {
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("INSERT INTO " + TABLE + " (id, client, val) VALUES (?, ?, ?)")) {
                p.setInt(1, -1);
                p.setInt(2, -1);
                p.setString(3, "rolled back");
                p.executeUpdate();
            }
            check(count(c, -1) == 1, "the row is visible inside its transaction");
            c.rollback();
            check(count(c, -1) == 0, "after rollback() the row is absent on the same connection");
            c.commit();
        }
        try (Connection c = connect()) {
            check(count(c, -1) == 0, "after rollback() the row is absent on another connection");
        }
    }

    static void notifications() throws SQLException {
        try (Connection listener = connect(); Connection sender = connect()) {
            int lpid = backendPid(listener);
            int spid = backendPid(sender);
            check(lpid != spid, "listener and sender have distinct login pids (" + lpid + ", " + spid + ")");
            PGConnection pgl = listener.unwrap(PGConnection.class);
            try (Statement s = listener.createStatement()) {
                s.execute("LISTEN " + CHANNEL);
            }
            sender.setAutoCommit(false);
            try (Statement s = sender.createStatement()) {
                s.execute("NOTIFY " + CHANNEL + ", 'discarded'");
            }
            sender.rollback();
            sender.setAutoCommit(true);
            try (Statement s = sender.createStatement()) {
                s.execute("NOTIFY " + CHANNEL + ", 'from NOTIFY'");
            }
            try (PreparedStatement p = sender.prepareStatement("SELECT pg_notify(?, ?)")) {
                p.setString(1, CHANNEL);
                p.setString(2, PAYLOAD2);
                try (ResultSet rs = p.executeQuery()) {
                    check(rs.next() && rs.getMetaData().getColumnCount() == 1 && !rs.next(),
                            "SELECT pg_notify(?, ?) returns one row of one column");
                }
            }
            List<String> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (got.size() < 2 && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = pgl.getNotifications(500);
                if (ns != null) {
                    for (PGNotification n : ns) {
                        got.add(n.getName() + "|" + n.getParameter() + "|" + n.getPID());
                    }
                }
            }
            check(got.size() == 2, "listener received 2 notifications through getNotifications() (got " + got.size() + ")");
            List<String> want = List.of(CHANNEL + "|from NOTIFY|" + spid, CHANNEL + "|" + PAYLOAD2 + "|" + spid);
            check(got.equals(want), "channel, payload and sender pid are right: " + got);
            PGNotification[] extra = pgl.getNotifications(500);
            check(extra == null || extra.length == 0, "nothing else arrives (the rolled-back NOTIFY is discarded)");
            try (Statement s = listener.createStatement()) {
                s.execute("UNLISTEN " + CHANNEL);
            }
            try (Statement s = sender.createStatement()) {
                s.execute("NOTIFY " + CHANNEL + ", 'after unlisten'");
            }
            extra = pgl.getNotifications(500);
            check(extra == null || extra.length == 0, "nothing arrives after UNLISTEN");
        }
    }

    public static void main(String[] args) {
        String host, port, user, db;
        if (args.length == 4) {
            host = args[0];
            port = args[1];
            user = args[2];
            db = args[3];
        } else if (args.length == 0) {
            host = env("PGHOST", "127.0.0.1");
            port = env("PGPORT", "6432");
            user = env("PGUSER", "postgres");
            db = env("PGDATABASE", "postgres");
        } else {
            System.err.println("usage: java DriverTest [HOST PORT USER DBNAME]");
            System.exit(2);
            return;
        }
        url = "jdbc:postgresql://" + host + ":" + port + "/" + db;
        props.setProperty("user", user);
        String password = env("PGPASSWORD", null);
        if (password != null) {
            props.setProperty("password", password);
        }
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        String sslmode = env("DRIVER_SSLMODE", null);
        String sslrootcert = env("DRIVER_SSLROOTCERT", null);
        if (sslmode != null) {
            props.setProperty("sslmode", sslmode);
        }
        if (sslrootcert != null) {
            props.setProperty("sslrootcert", sslrootcert);
        }
        try {
            Class.forName("org.postgresql.Driver");
        } catch (ClassNotFoundException e) {
            System.err.println("FAIL: pgjdbc is not on the class path (" + e + "); install Debian's "
                    + "libpostgresql-jdbc-java (.ci/run does)");
            System.exit(2);
        }
        System.out.println("# " + NAME + " " + org.postgresql.util.DriverInfo.DRIVER_VERSION + " on Java "
                + System.getProperty("java.version") + " against " + url + " as " + user
                + (sslmode == null ? "" : " with sslmode=" + sslmode + " sslrootcert=" + sslrootcert));
        long started = System.nanoTime();
        try {
            setup();
            preparedAcrossTransactions();
            preparedOnBothServers();
            rollback();
            notifications();
        } catch (Throwable e) {
            System.err.println("FAIL - " + NAME + ": " + e);
            e.printStackTrace();
            System.exit(1);
        }
        System.out.printf("# %s: all %d checks passed in %.1fs%n", NAME, checks, (System.nanoTime() - started) / 1e9);
        System.exit(0);
    }
}
