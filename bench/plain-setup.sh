# Sourced by the plaintext side-by-side scripts (pooler-ab.sh, pooler-threads.sh): a fresh
# Postgres 15 in $D on $PGPORT (trust, max_connections $MAXCONN, pgbench scale 10), and
# PgBouncer 1.18 on $PGB in transaction mode, pool 64. Sets PG_STOP (run it at exit) and
# PGB_REAL (PgBouncer's pid). Needs D, PGPORT, PGB set.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
rm -rf $D && mkdir -p $D && chmod 777 $D && cd $D
as_pg "$PGBIN/initdb -D $D/pg -A trust" >/dev/null
printf "port = $PGPORT\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '$D'\nmax_connections = ${MAXCONN:-300}\n" >> pg/postgresql.conf
as_pg "$PGBIN/pg_ctl -D $D/pg -l $D/pg.log start -w" >/dev/null
PG_STOP="pkill -f \"pgbouncer $D/pgbouncer.ini\"; as_pg \"$PGBIN/pg_ctl -D $D/pg stop -m fast\" >/dev/null"
pgbench -i -q -s 10 -h 127.0.0.1 -p $PGPORT -U postgres postgres >/dev/null 2>&1
printf '"postgres" ""\n' > userlist.txt
cat > pgbouncer.ini <<INI
[databases]
* = host=127.0.0.1 port=$PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB
unix_socket_dir =
auth_type = trust
auth_file = $D/userlist.txt
pool_mode = transaction
default_pool_size = 64
max_client_conn = 2000
logfile = $D/pgbouncer.log
INI
if [ "$(id -u)" = 0 ]; then chown -R postgres $D; su postgres -s /bin/sh -c "exec pgbouncer $D/pgbouncer.ini" >/dev/null 2>&1 & else pgbouncer $D/pgbouncer.ini >/dev/null 2>&1 & fi
PGB_PID=$!
