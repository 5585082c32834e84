//! Micro-benchmark of the pub/sub hub's publish step (`cargo bench --bench hub`): the cost of
//! one notification on a channel with 1, 10, 100 and 1,000 listeners, and on a channel with
//! one listener while 0 or 10,000 other subscribers listen on other channels, which must stay
//! flat. Mailboxes are drained outside the timed part so they never overflow.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgherald::pubsub::{Hub, Mailbox, Notification, Subscriber};

/// Publishes timed between two drains; also each mailbox's limit, so none overflows.
const CHUNK: u64 = 256;
const DB: &str = "bench";

/// A hub with `hot` subscribers on channel "hot" and `others` on a channel each.
fn setup(hot: usize, others: usize) -> (std::sync::Arc<Hub>, Vec<(Subscriber, Mailbox)>) {
    let hub = Hub::new(CHUNK as usize + 1);
    let mut subs = Vec::with_capacity(hot + others);
    for _ in 0..hot {
        let (s, m) = hub.subscriber(DB);
        s.listen(b"hot");
        subs.push((s, m));
    }
    for i in 0..others {
        let (s, m) = hub.subscriber(DB);
        s.listen(format!("other_{i}").as_bytes());
        subs.push((s, m));
    }
    (hub, subs)
}

/// A 50-byte payload on "hot", as the writers load tool sends.
fn note() -> Notification {
    Notification {
        pid: 4242,
        channel: Bytes::from_static(b"hot"),
        payload: Bytes::from(vec![b'x'; 50]),
    }
}

/// Times `iters` publishes of one notification, draining the listeners of "hot" (the first
/// entries of `subs`, `hot` of them) between chunks; the others never receive anything.
fn timed_publishes(
    hub: &Hub,
    subs: &mut [(Subscriber, Mailbox)],
    hot: usize,
    iters: u64,
) -> Duration {
    let batch = [note()];
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let t = Instant::now();
        for _ in 0..n {
            hub.publish(black_box(DB), black_box(&batch));
        }
        total += t.elapsed();
        left -= n;
        for (_, m) in subs[..hot].iter_mut() {
            while let Some(d) = m.try_recv() {
                black_box(d);
            }
        }
    }
    total
}

fn publish_by_channel_listeners(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_to_channel_with_n_listeners");
    for n in [1usize, 10, 100, 1000] {
        let (hub, mut subs) = setup(n, 0);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| timed_publishes(&hub, &mut subs, n, iters))
        });
    }
    g.finish();
}

fn publish_beside_other_channels(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_to_1_listener_beside_n_others");
    for others in [0usize, 10_000] {
        let (hub, mut subs) = setup(1, others);
        g.bench_with_input(BenchmarkId::from_parameter(others), &others, |b, _| {
            b.iter_custom(|iters| timed_publishes(&hub, &mut subs, 1, iters))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short windows: a 2-core machine, and the answer is an order of magnitude, not a digit.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = publish_by_channel_listeners, publish_beside_other_channels
}
criterion_main!(benches);
