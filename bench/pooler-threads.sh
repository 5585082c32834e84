#!/bin/bash
# Where a forwarded transaction's time goes (issue 17), side by side in one run: PgBouncer,
# pgherald as shipped (one runtime, a worker per core), pgherald with one worker
# (TOKIO_WORKER_THREADS=1), and two pgherald processes of one worker each sharing the port
# (so_reuseport, pool split 32 + 32): the per-core layout with nothing crossing threads.
# All transaction mode, pool 64 in all, one Postgres 15 (pgbench scale 10).
# For each workload (S = select-only, tpcb = tpcb-like), client count and repetition, the
# targets alternate; each row is
#   target workload clients rep tps p99_ms cpu_us/txn ctxsw/txn syscalls/txn
# for the pooler's processes only (CPU from /proc/PID/stat, context switches and syscalls
# from `perf stat -e context-switches,raw_syscalls:sys_enter -p PIDS`).
# Usage: BIN=target/release/pgherald W="S tpcb" C="8 64 512" T=8 REPS=3 bench/pooler-threads.sh
set -e
BIN=$(realpath ${BIN:-target/release/pgherald})
D=/tmp/pgh-threads; PGPORT=5498; PGB=6541; P1=6542; P2=6543; P3=6544
W=${W:-"S tpcb"}; C=${C:-"8 64 512"}; T=${T:-8}; REPS=${REPS:-3}
ulimit -n 20000 2>/dev/null || true
MAXCONN=400
. "$(dirname "$(realpath "$0")")/plain-setup.sh"
PIDS=($PGB_PID)
trap 'kill ${PIDS[@]} 2>/dev/null; eval "$PG_STOP"' EXIT
conf() { # port pool extra
  printf "listen = \"127.0.0.1:$1\"\nupstream = \"postgres://postgres@127.0.0.1:$PGPORT\"\npool_mode = \"transaction\"\ndefault_pool_size = $2\nmax_client_conn = 2000\n$3\n" > $D/h$1-$4.toml
}
conf $P1 64 "" a; $BIN --config $D/h$P1-a.toml >$D/p1.log 2>&1 & H1=$!; PIDS+=($H1)
conf $P2 64 "" a; TOKIO_WORKER_THREADS=1 $BIN --config $D/h$P2-a.toml >$D/p2.log 2>&1 & H2=$!; PIDS+=($H2)
conf $P3 32 "so_reuseport = true" a; conf $P3 32 "so_reuseport = true" b
TOKIO_WORKER_THREADS=1 $BIN --config $D/h$P3-a.toml >$D/p3a.log 2>&1 & H3A=$!; PIDS+=($H3A)
TOKIO_WORKER_THREADS=1 $BIN --config $D/h$P3-b.toml >$D/p3b.log 2>&1 & H3B=$!; PIDS+=($H3B)
sleep 2
PGB_REAL=$(pgrep -f "^pgbouncer $D/pgbouncer.ini" | head -1)
hz=$(getconf CLK_TCK)
cpu() { local s=0; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
run() { # name port workload clients rep pids...
  local name=$1 port=$2 w=$3 c=$4 rep=$5; shift 5
  local pids="$*" t0 t1 out n p99 flag=""
  [ "$w" = S ] && flag="-S"
  t0=$(cpu $pids)
  perf stat -x, -e context-switches,raw_syscalls:sys_enter -p $(echo $pids | tr ' ' ,) -o $D/perf.txt &
  local perf=$!
  out=$(pgbench -n -M simple $flag -c $c -j 2 -T $T -h 127.0.0.1 -p $port -U postgres postgres -l --log-prefix=$D/lat 2>&1)
  kill -INT $perf; wait $perf 2>/dev/null || true
  t1=$(cpu $pids)
  n=$(echo "$out" | grep -oP 'number of transactions actually processed: \K[0-9]+')
  p99=$(cat $D/lat.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int(NR*0.99)]/1000}')
  rm -f $D/lat.*
  local cs sc
  cs=$(grep context-switches $D/perf.txt | cut -d, -f1)
  sc=$(grep raw_syscalls $D/perf.txt | cut -d, -f1)
  echo "$name $w $c $rep $(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1) $p99 $(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$hz -v cs=$cs -v sc=$sc 'BEGIN{printf "%.1f %.2f %.1f", (b-a)/hz*1e6/n, cs/n, sc/n}')"
}
echo "target workload clients rep tps p99_ms cpu_us/txn ctxsw/txn syscalls/txn"
for w in $W; do
  for c in $C; do
    for i in $(seq $REPS); do
      run pgbouncer $PGB $w $c $i $PGB_REAL
      run pgherald $P1 $w $c $i $H1
      run pgherald-1w $P2 $w $c $i $H2
      run pgherald-2x1w $P3 $w $c $i $H3A $H3B
    done
  done
done
