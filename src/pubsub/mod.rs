//! In-memory LISTEN/NOTIFY pub/sub: pgherald serves listeners itself, keyed by
//! (database, channel bytes), with one commit order per database and bounded mailboxes.

mod history;
pub mod hub;
mod mailbox;
pub mod relay;

pub use hub::{ChannelEvent, Delivery, Hub, HubStats, Mailbox, Notification, Subscriber};

/// Hub unit tests (kept here so `hub.rs` stays a readable size); public API only.
#[cfg(test)]
mod hub_tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;

    fn note(pid: i32, channel: &str, payload: &str) -> Notification {
        Notification {
            pid,
            channel: Bytes::copy_from_slice(channel.as_bytes()),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    /// Decodes an `A` frame into (pid, channel, payload), checking its framing.
    fn decode(d: Delivery) -> (i32, String, String) {
        let Delivery::Frame(f) = d else {
            panic!("expected a frame, got {d:?}")
        };
        assert_eq!(f[0], b'A');
        let len = i32::from_be_bytes(f[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 1);
        let pid = i32::from_be_bytes(f[5..9].try_into().unwrap());
        let rest = &f[9..];
        let nul = rest.iter().position(|b| *b == 0).unwrap();
        let (chan, rest) = (&rest[..nul], &rest[nul + 1..]);
        assert_eq!(rest.last(), Some(&0));
        let payload = &rest[..rest.len() - 1];
        assert!(!payload.contains(&0));
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        (pid, s(chan), s(payload))
    }

    fn drain(m: &mut Mailbox) -> Vec<(i32, String, String)> {
        std::iter::from_fn(|| m.try_recv()).map(decode).collect()
    }

    #[test]
    fn frame_encoding_is_exact() {
        let hub = Hub::new(8);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"ch");
        hub.publish("db", &[note(0x01020304, "ch", "hi")]);
        let Some(Delivery::Frame(f)) = m.try_recv() else {
            panic!()
        };
        assert_eq!(&f[..], b"A\x00\x00\x00\x0e\x01\x02\x03\x04ch\x00hi\x00");
        hub.publish("db", &[note(7, "ch", "")]);
        assert_eq!(drain(&mut m), [(7, "ch".into(), "".into())]);
    }

    #[test]
    fn same_frame_bytes_shared_by_all_listeners() {
        let hub = Hub::new(8);
        let (s1, mut m1) = hub.subscriber("db");
        let (s2, mut m2) = hub.subscriber("db");
        s1.listen(b"c");
        s2.listen(b"c");
        hub.publish("db", &[note(1, "c", "x")]);
        let (Some(Delivery::Frame(a)), Some(Delivery::Frame(b))) = (m1.try_recv(), m2.try_recv())
        else {
            panic!()
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "encoded once, cloned");
    }

    #[test]
    fn self_delivery_in_batch_order() {
        let hub = Hub::new(16);
        let (me, mut mine) = hub.subscriber("db");
        me.listen(b"c");
        me.listen(b"d");
        hub.publish(
            "db",
            &[
                note(42, "c", "1"),
                note(42, "x", "skip"),
                note(42, "d", "2"),
            ],
        );
        assert_eq!(
            drain(&mut mine),
            [(42, "c".into(), "1".into()), (42, "d".into(), "2".into())]
        );
        let st = hub.stats();
        assert_eq!((st.published, st.delivered, st.overflows), (3, 2, 0));
    }

    #[test]
    fn unlisten_stops_delivery_and_listen_is_idempotent() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"c");
        s.listen(b"c");
        assert_eq!(hub.listener_count("db", b"c"), 1);
        hub.publish("db", &[note(1, "c", "a")]);
        assert_eq!(drain(&mut m).len(), 1, "one frame despite two LISTENs");
        s.unlisten(b"c");
        s.unlisten(b"never");
        assert!(!s.is_listening(b"c"));
        hub.publish("db", &[note(1, "c", "b")]);
        assert!(m.try_recv().is_none());
        s.listen(b"c");
        s.listen(b"e");
        s.unlisten_all();
        hub.publish("db", &[note(1, "c", "c"), note(1, "e", "e")]);
        assert!(m.try_recv().is_none());
        assert_eq!(hub.channel_count("db"), 0);
    }

    #[test]
    fn channel_match_is_exact_bytes() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.listen("Àbc".as_bytes());
        hub.publish(
            "db",
            &[
                note(1, "àbc", "no"),
                note(1, "ÀBC", "no"),
                note(1, "Àbc", "yes"),
            ],
        );
        assert_eq!(drain(&mut m), [(1, "Àbc".into(), "yes".into())]);
    }

    #[test]
    fn item31_database_scoping() {
        let hub = Hub::new(16);
        let (sa, mut ma) = hub.subscriber("a");
        let (sb, mut mb) = hub.subscriber("b");
        sa.listen(b"c");
        sb.listen(b"c");
        hub.publish("a", &[note(1, "c", "for a")]);
        hub.publish("nobody", &[note(1, "c", "lost")]);
        assert_eq!(drain(&mut ma), [(1, "c".into(), "for a".into())]);
        assert!(mb.try_recv().is_none());
        assert_eq!(hub.listener_count("a", b"c"), 1);
        assert_eq!(hub.listener_count("nobody", b"c"), 0);
    }

    #[test]
    fn overflow_reported_once_after_queue_and_others_unaffected() {
        let hub = Hub::new(3);
        let (slow, mut slow_box) = hub.subscriber("db");
        let (fast, mut fast_box) = hub.subscriber("db");
        slow.listen(b"c");
        fast.listen(b"c");
        let mut fast_got = Vec::new();
        for i in 0..5 {
            hub.publish("db", &[note(1, "c", &i.to_string())]);
            fast_got.extend(drain(&mut fast_box));
        }
        let payloads: Vec<String> = fast_got.into_iter().map(|n| n.2).collect();
        assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
        assert_eq!(slow_box.len(), 3);
        assert!(!slow_box.is_closed());
        let got: Vec<String> = (0..3)
            .map(|_| decode(slow_box.try_recv().unwrap()).2)
            .collect();
        assert_eq!(got, ["0", "1", "2"]);
        assert_eq!(slow_box.try_recv(), Some(Delivery::Overflow { limit: 3 }));
        assert_eq!(slow_box.try_recv(), None);
        assert!(slow_box.is_closed());
        // Still subscribed until the session drops it, but nothing more is queued.
        hub.publish("db", &[note(1, "c", "late")]);
        assert_eq!(slow_box.try_recv(), None);
        let st = hub.stats();
        assert_eq!(st.overflows, 1);
        assert_eq!(st.delivered, 3 + 5 + 1);
        drop(slow);
        assert_eq!(hub.listener_count("db", b"c"), 1);
    }

    #[tokio::test]
    async fn recv_waits_then_ends_after_overflow() {
        let hub = Hub::new(1);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"c");
        hub.publish("db", &[note(1, "c", "a"), note(1, "c", "b")]);
        assert_eq!(decode(m.recv().await.unwrap()).2, "a");
        assert_eq!(m.recv().await, Some(Delivery::Overflow { limit: 1 }));
        assert_eq!(m.recv().await, None);
    }

    #[tokio::test]
    async fn recv_wakes_on_publish_and_ends_on_subscriber_drop() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"c");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(d) = m.recv().await {
                got.push(decode(d).2);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.publish("db", &[note(1, "c", "1")]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.publish("db", &[note(1, "c", "2"), note(1, "c", "3")]);
        drop(s);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"c");
        let timed_out = tokio::time::timeout(Duration::from_millis(10), m.recv()).await;
        assert!(timed_out.is_err());
        hub.publish("db", &[note(1, "c", "after")]);
        let d = tokio::time::timeout(Duration::from_secs(5), m.recv())
            .await
            .unwrap();
        assert_eq!(decode(d.unwrap()).2, "after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishers_one_order_per_database() {
        const PUBLISHERS: i32 = 8;
        const BATCHES: i32 = 200;
        let hub = Hub::new(1_000_000);
        let mut subs = Vec::new();
        for _ in 0..4 {
            let (s, m) = hub.subscriber("db");
            s.listen(b"a");
            s.listen(b"b");
            subs.push((s, m));
        }
        let (only_a, mut only_a_box) = hub.subscriber("db");
        only_a.listen(b"a");
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let hub = Arc::clone(&hub);
            tasks.push(tokio::spawn(async move {
                for b in 0..BATCHES {
                    let batch: Vec<Notification> = ["a", "b", "a"]
                        .iter()
                        .enumerate()
                        .map(|(i, c)| note(p, c, &format!("{b}.{i}")))
                        .collect();
                    hub.publish("db", &batch);
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let seqs: Vec<Vec<(i32, String, String)>> =
            subs.iter_mut().map(|(_, m)| drain(m)).collect();
        let total = (PUBLISHERS * BATCHES * 3) as usize;
        assert_eq!(seqs[0].len(), total);
        for s in &seqs[1..] {
            assert_eq!(s, &seqs[0], "every listener sees the same order");
        }
        // Each batch is contiguous and in issue order; each publisher's batches in its order.
        for chunk in seqs[0].chunks(3) {
            let b = chunk[0].2.split('.').next().unwrap().to_string();
            let expect: Vec<(i32, String, String)> = ["a", "b", "a"]
                .iter()
                .enumerate()
                .map(|(i, c)| (chunk[0].0, c.to_string(), format!("{b}.{i}")))
                .collect();
            assert_eq!(chunk, &expect[..]);
        }
        for p in 0..PUBLISHERS {
            let mine: Vec<i32> = seqs[0]
                .iter()
                .filter(|n| n.0 == p && n.2.ends_with(".0"))
                .map(|n| n.2.split('.').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(mine, (0..BATCHES).collect::<Vec<_>>());
        }
        let expect_a: Vec<_> = seqs[0].iter().filter(|n| n.1 == "a").cloned().collect();
        assert_eq!(
            drain(&mut only_a_box),
            expect_a,
            "a channel subset keeps the same order"
        );
    }

    #[test]
    fn cost_follows_channel_listeners_only() {
        let hub = Hub::new(16);
        let mut idle = Vec::new();
        for i in 0..1000 {
            let (s, m) = hub.subscriber("db");
            s.listen(format!("quiet{i}").as_bytes());
            idle.push((s, m));
        }
        let mut hot = Vec::new();
        for _ in 0..10 {
            let (s, m) = hub.subscriber("db");
            s.listen(b"hot");
            hot.push((s, m));
        }
        assert_eq!(hub.listener_count("db", b"hot"), 10);
        assert_eq!(hub.listener_count("db", b"quiet7"), 1);
        assert_eq!(hub.channel_count("db"), 1001);
        hub.publish("db", &[note(1, "hot", "x")]);
        assert_eq!(hub.stats().delivered, 10);
        // Removal from the middle of a channel's listener list keeps the index consistent.
        hot.swap_remove(3);
        hot.swap_remove(0);
        assert_eq!(hub.listener_count("db", b"hot"), 8);
        hub.publish("db", &[note(1, "hot", "y")]);
        assert_eq!(hub.stats().delivered, 18);
        for (_, m) in &mut hot {
            assert_eq!(drain(m).len(), 2);
        }
        assert!(idle.iter_mut().all(|(_, m)| m.try_recv().is_none()));
    }

    #[test]
    fn update_applies_net_changes_together() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.update(&[b"a".as_slice(), b"b".as_slice()], &[] as &[&[u8]]);
        s.update(&[b"c".to_vec()], &[b"a".to_vec()]);
        assert!(!s.is_listening(b"a") && s.is_listening(b"b") && s.is_listening(b"c"));
        hub.publish(
            "db",
            &[note(1, "a", "1"), note(1, "b", "2"), note(1, "c", "3")],
        );
        let got: Vec<String> = drain(&mut m).into_iter().map(|n| n.2).collect();
        assert_eq!(got, ["2", "3"]);
    }

    #[test]
    fn drop_cleans_up_channels_and_database() {
        let hub = Hub::new(16);
        let (s1, _m1) = hub.subscriber("db");
        let (s2, m2) = hub.subscriber("db");
        s1.listen(b"shared");
        s1.listen(b"one");
        s2.listen(b"shared");
        s2.listen(b"two");
        assert_eq!(hub.channel_count("db"), 3);
        drop(s1);
        assert_eq!(hub.channel_count("db"), 2);
        assert_eq!(hub.listener_count("db", b"shared"), 1);
        assert_eq!(hub.listener_count("db", b"one"), 0);
        // A dropped mailbox stops queuing even while the subscriber lives.
        drop(m2);
        hub.publish("db", &[note(1, "two", "x")]);
        assert_eq!(hub.stats().delivered, 0);
        drop(s2);
        assert_eq!(hub.channel_count("db"), 0);
        assert!(format!("{hub:?}").contains("Hub"));
        // The database entry went too: a later subscriber starts fresh and works.
        let (s3, mut m3) = hub.subscriber("db");
        s3.listen(b"two");
        hub.publish("db", &[note(1, "two", "y")]);
        assert_eq!(drain(&mut m3).len(), 1);
    }

    #[test]
    fn reservation_counts_as_listener_and_admits_only_what_it_is_told() {
        let hub = Hub::new(16);
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        hub.watch(Box::new(move |e| {
            seen.lock().unwrap().push((e.channel, e.active))
        }));
        let (s, mut m) = hub.subscriber("db");
        s.reserve(&[b"r".as_slice()]);
        assert_eq!(
            hub.listener_count("db", b"r"),
            1,
            "the relay is told at once"
        );
        assert!(s.is_registered(b"r") && !s.is_listening(b"r"));
        hub.publish("db", &[note(7, "r", "before"), note(9, "r", "other")]);
        assert!(
            m.try_recv().is_none(),
            "a reservation takes nothing at first"
        );
        s.admit_own(7);
        hub.publish("db", &[note(7, "r", "own NOTIFY"), note(9, "r", "other")]);
        assert!(
            m.try_recv().is_none(),
            "its own NOTIFYs through pgherald committed before its LISTEN (item 16)"
        );
        // The LISTEN commits: everything from now on.
        s.update(&[b"r".as_slice()], &[] as &[&[u8]]);
        s.drop_reserved();
        assert!(s.is_listening(b"r"));
        hub.publish("db", &[note(9, "r", "after")]);
        assert_eq!(drain(&mut m), [(9, "r".into(), "after".into())]);
        assert!(!s.fed(), "only pgherald's own notifications so far");
        hub.publish_relayed("db", &[note(9, "elsewhere", "x")]);
        assert!(!s.fed(), "fed only by what reaches it");
        hub.publish_relayed("db", &[note(9, "r", "from Postgres")]);
        assert!(s.fed());
        drain(&mut m);
        // A reservation no LISTEN committed goes, and the relay is told.
        s.reserve(&[b"gone".as_slice(), b"r".as_slice()]);
        s.admit_own(7);
        hub.publish_relayed("db", &[note(7, "gone", "raised"), note(9, "gone", "other")]);
        assert_eq!(drain(&mut m), [(7, "gone".into(), "raised".into())]);
        s.drop_reserved();
        assert_eq!(hub.listener_count("db", b"gone"), 0);
        assert!(
            s.is_listening(b"r"),
            "a listened channel is not a reservation"
        );
        hub.publish("db", &[note(7, "gone", "x")]);
        assert!(m.try_recv().is_none());
        let ev = events.lock().unwrap().clone();
        assert_eq!(
            ev,
            [
                (bytes::Bytes::from_static(b"r"), true),
                (bytes::Bytes::from_static(b"gone"), true),
                (bytes::Bytes::from_static(b"gone"), false),
            ]
        );
    }

    #[test]
    fn unencodable_notification_is_skipped_not_sent() {
        let hub = Hub::new(16);
        let (s, mut m) = hub.subscriber("db");
        s.listen(b"c");
        hub.publish("db", &[note(1, "c", "bad\0byte"), note(1, "c", "ok")]);
        assert_eq!(drain(&mut m), [(1, "c".into(), "ok".into())]);
    }
}
