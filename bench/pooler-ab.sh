#!/bin/bash
# Plaintext pooling, side by side in one run: PgBouncer, and two pgherald binaries (A and B,
# e.g. before and after a change), all transaction mode, pool 64, one Postgres 15.
# pgbench -n -M simple -S -j 2 at each client count, targets alternated. Prints
#   target clients rep tps p99_ms cpu_us_per_txn
# (cpu of the pooler process, from /proc/PID/stat).
# Usage: A=old/pgherald B=new/pgherald C="8 64" T=8 REPS=3 bench/pooler-ab.sh
set -e
A=${A:?binary A}; B=${B:?binary B}
D=/tmp/pgh-ab; PGPORT=5497; PGB=6521; PA=6522; PB=6523
C=${C:-"8 64"}; T=${T:-8}; REPS=${REPS:-3}
. "$(dirname "$(realpath "$0")")/plain-setup.sh"
trap 'kill $PGB_PID $A_PID $B_PID 2>/dev/null; eval "$PG_STOP"' EXIT
for p in $PA $PB; do
  printf "listen = \"127.0.0.1:$p\"\nupstream = \"postgres://postgres@127.0.0.1:$PGPORT\"\npool_mode = \"transaction\"\ndefault_pool_size = 64\nmax_client_conn = 2000\n" > h$p.toml
done
$A --config $D/h$PA.toml >$D/a.log 2>&1 & A_PID=$!
$B --config $D/h$PB.toml >$D/b.log 2>&1 & B_PID=$!
sleep 2
PGB_REAL=$(pgrep -f "^pgbouncer $D/pgbouncer.ini" | head -1)
hz=$(getconf CLK_TCK)
run() { # name port pid clients
  local t0 t1 out n
  t0=$(awk '{print $14+$15}' /proc/$3/stat)
  out=$(pgbench -n -M simple -S -c $4 -j 2 -T $T -r -h 127.0.0.1 -p $2 -U postgres postgres -l --log-prefix=$D/lat 2>&1)
  t1=$(awk '{print $14+$15}' /proc/$3/stat)
  n=$(echo "$out" | grep -oP 'number of transactions actually processed: \K[0-9]+')
  p99=$(cat $D/lat.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int(NR*0.99)]/1000}')
  rm -f $D/lat.*
  echo "$1 $4 $5 $(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1) $p99 $(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$hz 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')"
}
for c in $C; do
  for i in $(seq $REPS); do
    run pgbouncer $PGB $PGB_REAL $c $i
    run pgherald-A $PA $A_PID $c $i
    run pgherald-B $PB $B_PID $c $i
  done
done
