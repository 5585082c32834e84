#!/bin/bash
# TLS on both sides (issue 13): pgbench through PgBouncer and through pgherald, each with
# client TLS and server TLS to one Postgres 15 with ssl = on, alternated, plus Postgres
# direct over TLS. Certificates are made here with openssl. Prints one line per run:
#   target mode clients rep tps
# Usage: C="8 64" T=8 REPS=3 bench/tls.sh   (BIN=path/to/pgherald, default target/release)
set -e
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/pgherald}
D=/tmp/pgh-tlsbench
PGPORT=5498
PGB=6511
PGH=6512
C=${C:-"8 64"}; T=${T:-8}; REPS=${REPS:-3}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }

rm -rf $D && mkdir -p $D && chmod 777 $D
cd $D
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
chmod 600 server.key ca.key && chmod 644 server.crt ca.crt
cp server.key pg.key && cp server.crt pg.crt
[ "$(id -u)" = 0 ] && chown postgres pg.key pg.crt

as_pg "$PGBIN/initdb -D $D/pg -A trust" >/dev/null
cat >> pg/postgresql.conf <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$D'
max_connections = 300
ssl = on
ssl_cert_file = '$D/pg.crt'
ssl_key_file = '$D/pg.key'
EOF
as_pg "$PGBIN/pg_ctl -D $D/pg -l $D/pg.log start -w" >/dev/null
trap 'kill $PGB_PID $PGH_PID 2>/dev/null; pkill -f "pgbouncer $D/pgbouncer.ini"; as_pg "$PGBIN/pg_ctl -D $D/pg stop -m fast" >/dev/null' EXIT
PGSSLMODE=require pgbench -i -q -h 127.0.0.1 -p $PGPORT -U postgres postgres >/dev/null 2>&1

printf '"postgres" ""\n' > userlist.txt
cat > pgbouncer.ini <<EOF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB
unix_socket_dir =
auth_type = trust
auth_file = $D/userlist.txt
pool_mode = transaction
default_pool_size = 64
max_client_conn = 2000
client_tls_sslmode = require
client_tls_key_file = $D/server.key
client_tls_cert_file = $D/server.crt
server_tls_sslmode = require
logfile = $D/pgbouncer.log
EOF
cat > pgherald.toml <<EOF
listen = "127.0.0.1:$PGH"
upstream = "postgres://postgres@127.0.0.1:$PGPORT?sslmode=require"
pool_mode = "transaction"
default_pool_size = 64
max_client_conn = 2000
client_tls_sslmode = "require"
client_tls_key_file = "$D/server.key"
client_tls_cert_file = "$D/server.crt"
EOF
if [ "$(id -u)" = 0 ]; then chown -R postgres $D; su postgres -s /bin/sh -c "pgbouncer $D/pgbouncer.ini" >/dev/null 2>&1 & else pgbouncer $D/pgbouncer.ini >/dev/null 2>&1 & fi
PGB_PID=$!
$BIN --config $D/pgherald.toml >$D/pgherald.log 2>&1 & PGH_PID=$!
sleep 2

run() { # target port mode clients
  local args="-n -M simple -S -c $4 -j 2 -T $T -h 127.0.0.1 -p $2 -U postgres"
  [ "$3" = storm ] && args="$args -C"
  PGSSLMODE=require pgbench $args postgres 2>&1 | grep -oP 'tps = \K[0-9.]+' | head -1
}
for c in $C; do
  for i in $(seq $REPS); do
    for mode in select storm; do
      for t in pgbouncer:$PGB pgherald:$PGH postgres:$PGPORT; do
        echo "${t%%:*} $mode $c $i $(run ${t%%:*} ${t##*:} $mode $c)"
      done
    done
  done
done
