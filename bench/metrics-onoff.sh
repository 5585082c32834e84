#!/bin/bash
# Metrics on vs off (issue 14) and plaintext select-only: pgbench -S through two pgherald
# processes of the same binary, one with metrics_listen, alternated, medians.
set -e
BIN=${BIN:-/work/main/target/release/pgherald}
PGD=/tmp/pgb-metrics-pg
PGPORT=5499
if [ ! -d $PGD ]; then
  su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $PGD -A trust" >/dev/null
fi
su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $PGD -l $PGD.log -o '-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300' start" >/dev/null || true
sleep 2
pgbench -i -q -h 127.0.0.1 -p $PGPORT -U postgres postgres >/dev/null 2>&1
cat > /tmp/pgb-off.toml <<T
listen = "127.0.0.1:6501"
upstream = "postgres://postgres@127.0.0.1:$PGPORT"
pool_mode = "transaction"
default_pool_size = 64
max_client_conn = 2000
T
cp /tmp/pgb-off.toml /tmp/pgb-on.toml
sed -i 's/6501/6502/' /tmp/pgb-on.toml
echo 'metrics_listen = "127.0.0.1:9501"' >> /tmp/pgb-on.toml
$BIN --config /tmp/pgb-off.toml >/tmp/pgb-off.log 2>&1 & OFF=$!
$BIN --config /tmp/pgb-on.toml >/tmp/pgb-on.log 2>&1 & ON=$!
sleep 1
C=${C:-8}; T=${T:-8}; REPS=${REPS:-3}
for i in $(seq $REPS); do
  for p in 6501 6502; do
    pid=$([ $p = 6501 ] && echo $OFF || echo $ON)
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$(pgbench -n -M simple -S -c $C -j 2 -T $T -h 127.0.0.1 -p $p -U postgres postgres 2>/dev/null)
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    tps=$(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1)
    n=$(echo "$out" | grep -oP 'number of transactions actually processed: \K[0-9]+')
    hz=$(getconf CLK_TCK)
    cpu=$(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$hz 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
    echo "port=$p rep=$i tps=$tps cpu_us_per_txn=$cpu"
  done
  curl -s http://127.0.0.1:9501/metrics | grep -c pgherald_ >/dev/null || true
done
kill $OFF $ON
