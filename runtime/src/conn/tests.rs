use super::*;
use lbp_abi::tcp_flag::{ACK, FIN, RST, SYN};

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[10] = 0xff;
    x[11] = 0xff;
    x[12..].copy_from_slice(&a);
    x
}

fn key(client: u32, cport: u16, vport: u16, proto: u8) -> ConnKey {
    ConnKey {
        client: v4(client.to_be_bytes()),
        vip: v4([198, 18, 0, 10]),
        client_port: cport,
        vport,
        version: 4,
        proto,
    }
}

/// A target derived from the key, so a reader can check it got the right one.
fn target_of(k: &ConnKey) -> Target {
    let h = hash_words(
        &[
            u64::from(k.client_port),
            u64::from(k.vport),
            u64::from(k.client[15]),
        ],
        5,
    );
    Target {
        service: (h >> 40) as u32,
        backend: h as u32,
        backend_addr: v4([198, 19, 0, (h >> 8) as u8]),
        backend_port: 8000 + (h >> 16) as u16 % 100,
    }
}

fn table(max: usize) -> ConnTable {
    ConnTable::with_config(max, Timeouts::default(), 0xfeed)
}

#[test]
fn insert_lookup_remove() {
    let t = table(1000);
    let k = key(0xc612_0001, 40000, 80, PROTO_TCP);
    assert_eq!(t.lookup(&k, SYN, 0), None);
    let tg = target_of(&k);
    let Insert::New(c) = t.insert(&k, tg, SYN, 10) else {
        panic!("not new")
    };
    assert_eq!(c.target, tg);
    assert_eq!(c.state, State::SynSent);
    assert_eq!(t.len(), 1);
    // A second insert of the same key (another core raced) returns the first.
    let other = Target { backend: 99, ..tg };
    assert!(matches!(t.insert(&k, other, SYN, 11), Insert::Existing(c) if c.target == tg));
    let c = t.lookup(&k, ACK, 20).unwrap();
    assert_eq!(
        (c.target, c.state, c.last_seen),
        (tg, State::Established, 20)
    );
    // Time going backwards (another core's older clock read) does not rewind.
    assert_eq!(t.lookup(&k, ACK, 15).unwrap().last_seen, 20);
    // Other keys differing in one field are different connections.
    for k2 in [
        ConnKey { vport: 81, ..k },
        ConnKey {
            client_port: 40001,
            ..k
        },
        ConnKey {
            proto: PROTO_UDP,
            ..k
        },
        ConnKey { version: 6, ..k },
        ConnKey {
            vip: v4([198, 18, 0, 11]),
            ..k
        },
    ] {
        assert_eq!(t.lookup(&k2, ACK, 20), None);
    }
    assert_eq!(t.remove(&k).map(|c| c.target), Some(tg));
    assert_eq!(t.remove(&k), None);
    assert_eq!(t.lookup(&k, ACK, 21), None);
    assert!(t.is_empty());
    let s = t.stats();
    assert_eq!(
        (s.inserts, s.evictions, s.refusals, s.expired),
        (1, 0, 0, 0)
    );
}

#[test]
fn reverse_lookup_for_nat_return_traffic() {
    let t = table(100);
    let k = key(0xc612_0002, 5555, 443, PROTO_TCP);
    let tg = target_of(&k);
    assert!(matches!(t.insert(&k, tg, SYN, 0), Insert::New(_)));
    let r = ReverseKey {
        backend: tg.backend_addr,
        client: k.client,
        backend_port: tg.backend_port,
        client_port: k.client_port,
        version: 4,
        proto: PROTO_TCP,
    };
    let (k2, c) = t.lookup_reverse(&r, SYN | ACK, 1).unwrap();
    assert_eq!(k2, k);
    assert_eq!(c.state, State::SynRecv);
    assert_eq!(t.lookup(&k, ACK, 2).unwrap().state, State::Established);
    // Wrong back-end port, address, client port or protocol: no match.
    for r2 in [
        ReverseKey {
            backend_port: tg.backend_port.wrapping_add(1),
            ..r
        },
        ReverseKey {
            backend: v4([198, 19, 9, 9]),
            ..r
        },
        ReverseKey {
            client_port: 5556,
            ..r
        },
        ReverseKey {
            proto: PROTO_UDP,
            ..r
        },
    ] {
        assert_eq!(t.lookup_reverse(&r2, ACK, 3), None);
    }
    // A FIN from the back end moves the connection to FinWait.
    assert_eq!(
        t.lookup_reverse(&r, FIN | ACK, 4).unwrap().1.state,
        State::FinWait
    );
    // Peeking finds it as it is, and changes nothing.
    let (pk, pc) = t.peek_reverse(&r, 5).unwrap();
    assert_eq!((pk, pc.state, pc.last_seen), (k, State::FinWait, 4));
    assert_eq!(t.peek_reverse(&r, 5).unwrap(), (pk, pc));
    assert_eq!(
        t.peek_reverse(
            &ReverseKey {
                client_port: 5556,
                ..r
            },
            5
        ),
        None
    );
    assert_eq!(t.peek_reverse(&r, u64::MAX), None);
}

#[test]
fn a_new_nat_connection_supersedes_one_with_the_same_back_end_tuple() {
    let t = table(100);
    // The same client address and port to two services (ports 80 and 81) that
    // NAT to the same back-end address and port.
    let k80 = key(0xc612_0002, 50688, 80, PROTO_TCP);
    let k81 = ConnKey { vport: 81, ..k80 };
    let tg = Target {
        service: 1,
        backend: 2,
        backend_addr: v4([198, 18, 2, 13]),
        backend_port: 8080,
    };
    assert!(matches!(t.insert(&k81, tg, SYN, 0), Insert::New(_)));
    let r = ReverseKey {
        backend: tg.backend_addr,
        client: k80.client,
        backend_port: 8080,
        client_port: 50688,
        version: 4,
        proto: PROTO_TCP,
    };
    let tg80 = Target { service: 0, ..tg };
    assert!(matches!(t.insert(&k80, tg80, SYN, NS), Insert::New(_)));
    // The back end's answer is the new connection's; the old one is gone.
    assert_eq!(t.lookup_reverse(&r, SYN | ACK, 2 * NS).unwrap().0, k80);
    assert_eq!(t.lookup(&k81, ACK, 2 * NS), None);
    assert_eq!((t.len(), t.stats().superseded), (1, 1));
    // A different back-end port is another tuple: both live.
    let k82 = ConnKey { vport: 82, ..k80 };
    let tg82 = Target {
        backend_port: 8081,
        ..tg
    };
    assert!(matches!(t.insert(&k82, tg82, SYN, 3 * NS), Insert::New(_)));
    assert_eq!(t.len(), 2);
    // DSR entries (no back-end port: answers bypass the appliance) keep the
    // virtual IP as the destination, so never share a tuple: both live.
    let dsr = Target {
        backend_port: 0,
        ..tg
    };
    let d1 = ConnKey { vport: 90, ..k80 };
    let d2 = ConnKey { vport: 91, ..k80 };
    assert!(matches!(t.insert(&d1, dsr, SYN, 4 * NS), Insert::New(_)));
    assert!(matches!(t.insert(&d2, dsr, SYN, 4 * NS), Insert::New(_)));
    assert_eq!((t.len(), t.stats().superseded), (4, 1));
}

#[test]
fn tcp_states_follow_flags() {
    use State::*;
    assert_eq!(State::initial(PROTO_TCP, SYN), SynSent);
    assert_eq!(State::initial(PROTO_TCP, ACK), Established);
    assert_eq!(State::initial(PROTO_TCP, FIN | ACK), FinWait);
    assert_eq!(State::initial(PROTO_TCP, RST), Closed);
    assert_eq!(State::initial(PROTO_UDP, SYN), Other);
    assert_eq!(SynSent.next(SYN | ACK, false), SynRecv);
    assert_eq!(SynSent.next(SYN | ACK, true), SynSent);
    assert_eq!(SynRecv.next(ACK, true), Established);
    assert_eq!(SynSent.next(ACK, true), Established);
    assert_eq!(SynSent.next(ACK, false), SynSent);
    // The back end's ACK after its SYN-ACK: the client's ACK came first.
    assert_eq!(SynRecv.next(ACK, false), Established);
    assert_eq!(SynRecv.next(SYN | ACK, false), SynRecv);
    assert_eq!(Established.next(SYN, true), Established);
    assert_eq!(Established.next(FIN | ACK, false), FinWait);
    assert_eq!(FinWait.next(ACK, true), FinWait);
    assert_eq!(FinWait.next(SYN, true), SynSent);
    assert_eq!(Established.next(RST, true), Closed);
    assert_eq!(Closed.next(FIN, true), Closed);
    assert_eq!(Closed.next(SYN, true), SynSent);
    assert_eq!(Other.next(RST, true), Other);
    // Every flag combination from every state gives a state, no panic.
    for s in [Other, SynSent, SynRecv, Established, FinWait, Closed] {
        for f in 0..=255u8 {
            let _ = s.next(f, true);
            let _ = s.next(f, false);
        }
    }
}

#[test]
fn idle_timeouts_per_protocol_and_state() {
    let to = Timeouts::default();
    let t = table(100);
    let syn = key(1, 1, 80, PROTO_TCP);
    let est = key(2, 2, 80, PROTO_TCP);
    let fin = key(3, 3, 80, PROTO_TCP);
    let udp = key(4, 4, 53, PROTO_UDP);
    let icmp = key(5, 0, 0, 1);
    for (k, f) in [(&syn, SYN), (&est, SYN), (&fin, SYN), (&udp, 0), (&icmp, 0)] {
        assert!(matches!(t.insert(k, target_of(k), f, 0), Insert::New(_)));
    }
    t.lookup(&est, ACK, 1).unwrap();
    t.lookup(&fin, ACK, 1).unwrap();
    t.lookup(&fin, FIN | ACK, 1).unwrap();
    assert!(to.tcp_syn <= 10 * NS && to.tcp_established >= 120 * NS);
    assert!(to.tcp_fin < to.tcp_established && (30 * NS..=60 * NS).contains(&to.udp));
    // Just before each timeout: alive (peek does not refresh).
    assert!(t.peek(&syn, to.tcp_syn - 1).is_some());
    assert!(t.peek(&syn, to.tcp_syn).is_none());
    assert!(t.peek(&fin, 1 + to.tcp_fin - 1).is_some());
    assert!(t.peek(&fin, 1 + to.tcp_fin).is_none());
    assert!(t.peek(&udp, to.udp - 1).is_some());
    assert!(t.peek(&udp, to.udp).is_none());
    assert!(t.peek(&icmp, to.other).is_none());
    // Traffic refreshes: a UDP flow seen every 50 s lives on.
    let mut now = 0;
    for _ in 0..10 {
        now += to.udp - NS;
        assert!(t.lookup(&udp, 0, now).is_some());
    }
    // The established connection outlives everything but its own timeout.
    assert!(t.peek(&est, 1 + to.tcp_established - 1).is_some());
    assert_eq!(t.lookup(&est, ACK, 1 + to.tcp_established), None);
    assert_eq!(t.stats().expired, 1);
    // A sweep at the end removes the rest; len counts them out.
    let removed = t.sweep(now + to.udp, t.buckets());
    assert_eq!(removed, 4);
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 5);
}

#[test]
fn sweep_is_bounded_and_cycles() {
    let t = table(4096);
    for i in 0..2000u32 {
        let k = key(i, 1000 + (i % 50) as u16, 80, PROTO_UDP);
        assert!(matches!(t.insert(&k, target_of(&k), 0, 0), Insert::New(_)));
    }
    assert_eq!(t.len(), 2000);
    let later = Timeouts::default().udp;
    let nb = t.buckets();
    let mut total = 0;
    let mut calls = 0;
    while total < 2000 {
        let r = t.sweep(later, 16);
        // 16 buckets hold at most 16 * SLOTS entries.
        assert!(r <= 16 * SLOTS);
        total += r;
        calls += 1;
        assert!(calls <= nb / 16, "sweep did not finish in one pass");
    }
    assert_eq!(t.len(), 0);
    assert_eq!(t.sweep(later, 0), 0);
}

#[test]
fn full_table_prefers_established_and_reuses_expired() {
    // 10 entries in 2 buckets: every key's two choices are the whole table, so
    // "oldest" is global and exactly testable.
    let t = table(10);
    assert_eq!(t.buckets(), 2);
    let est: Vec<ConnKey> = (0..10).map(|i| key(100 + i, 2000, 80, PROTO_TCP)).collect();
    for (i, k) in est.iter().enumerate() {
        assert!(matches!(
            t.insert(k, target_of(k), SYN, i as u64),
            Insert::New(_)
        ));
        t.lookup(k, ACK, i as u64).unwrap();
    }
    assert_eq!(t.len(), 10);
    // A new SYN cannot push out a live established connection.
    let s1 = key(500, 3000, 80, PROTO_TCP);
    assert_eq!(t.insert(&s1, target_of(&s1), SYN, 20), Insert::NotRecorded);
    // Nor can a UDP flow.
    let u1 = key(501, 53, 53, PROTO_UDP);
    assert_eq!(t.insert(&u1, target_of(&u1), 0, 20), Insert::NotRecorded);
    assert_eq!(t.stats().refusals, 2);
    assert_eq!(t.len(), 10);
    for k in &est {
        assert!(t.peek(k, 20).is_some());
    }
    // A connection picked up mid-flow (established) evicts the oldest.
    let m1 = key(502, 3001, 80, PROTO_TCP);
    assert!(matches!(
        t.insert(&m1, target_of(&m1), ACK, 21),
        Insert::New(_)
    ));
    assert!(t.peek(&est[0], 21).is_none());
    assert!(t.peek(&est[1], 21).is_some());
    assert_eq!(t.stats().evictions, 1);
    // Close one by RST: it is now the first to go, even though it is newest.
    t.lookup(&est[9], RST, 22).unwrap();
    assert!(matches!(
        t.insert(&s1, target_of(&s1), SYN, 23),
        Insert::New(_)
    ));
    assert!(t.peek(&est[9], 23).is_none());
    assert!(t.peek(&s1, 23).is_some());
    // Half-open versus half-open: the oldest goes first.
    let s2 = key(503, 3002, 80, PROTO_TCP);
    assert_eq!(
        t.insert(&s2, target_of(&s2), SYN, 24),
        Insert::New(Conn {
            target: target_of(&s2),
            state: State::SynSent,
            last_seen: 24
        })
    );
    assert!(t.peek(&s1, 24).is_none(), "older half-open entry evicted");
    assert_eq!(t.len(), 10);
    assert_eq!(t.stats().evictions, 3);
    // Once the established entries expire, new SYNs reuse their slots.
    let late = 25 + Timeouts::default().tcp_established;
    for i in 0..9u32 {
        let k = key(600 + i, 4000, 80, PROTO_TCP);
        assert!(
            matches!(t.insert(&k, target_of(&k), SYN, late), Insert::New(_)),
            "{i}"
        );
    }
    let s = t.stats();
    assert_eq!(s.len, 10);
    assert_eq!(s.evictions, 3);
    assert!(s.expired >= 9, "{s:?}");
}

#[test]
fn full_bucket_in_a_large_table() {
    // The same client address and port to many virtual ports: all these keys
    // share their two buckets, 2 * SLOTS entries in all.
    let t = table(10_000);
    let ks: Vec<ConnKey> = (0..3 * SLOTS as u16)
        .map(|p| key(7, 7777, 1000 + p, PROTO_TCP))
        .collect();
    let mut new = 0;
    for k in &ks {
        match t.insert(k, target_of(k), ACK, 1) {
            Insert::New(_) => new += 1,
            Insert::NotRecorded => {}
            Insert::Existing(_) => panic!("distinct keys"),
        }
    }
    // All established and equally old: eviction picks among them, so every
    // insert succeeds, but only 2 * SLOTS stay.
    assert_eq!(new, ks.len());
    assert_eq!(t.len(), 2 * SLOTS);
    assert_eq!(t.stats().evictions, SLOTS as u64);
    // A SYN to the same buckets is refused; one from another client is not.
    let s = key(7, 7777, 9, PROTO_TCP);
    assert_eq!(t.insert(&s, target_of(&s), SYN, 2), Insert::NotRecorded);
    let s = key(8, 7777, 9, PROTO_TCP);
    assert!(matches!(
        t.insert(&s, target_of(&s), SYN, 2),
        Insert::New(_)
    ));
}

#[test]
fn hostile_keys_and_times_do_not_panic() {
    let t = ConnTable::new(64);
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut removed = 0u64;
    for _ in 0..20_000 {
        let r = next();
        let k = ConnKey {
            // Arbitrary bytes, but from a small pool so keys repeat.
            client: (u128::from(r % 16) << 100 | 0xffff).to_le_bytes(),
            vip: u128::from(next() % 4)
                .wrapping_mul(u128::MAX / 3)
                .to_le_bytes(),
            client_port: (r >> 16) as u16 % 8,
            vport: (r >> 32) as u16 % 4,
            version: (r >> 48) as u8 & 0x82,
            proto: (r >> 56) as u8 & 0x13,
        };
        let now = next() % (2000 * NS);
        match r % 5 {
            0 | 1 => {
                let _ = t.insert(&k, target_of(&k), (r >> 8) as u8, now);
            }
            2 => {
                if let Some(c) = t.lookup(&k, (r >> 8) as u8, now) {
                    assert_eq!(c.target, target_of(&k));
                }
            }
            3 => {
                let _ = t.sweep(now, (r >> 20) as usize % 100);
            }
            _ => {
                removed += u64::from(t.remove(&k).is_some());
            }
        }
        assert!(t.len() <= 64);
    }
    // Every entry ever inserted is live, expired, evicted or removed; and the
    // count of live entries agrees with the slots.
    let s = t.stats();
    assert!(
        s.inserts > 1000 && s.evictions > 0 && s.expired > 0 && removed > 0,
        "{s:?}"
    );
    assert_eq!(
        s.inserts,
        s.len as u64 + s.expired + s.evictions + s.superseded + removed
    );
    let live: usize = t
        .buckets
        .iter()
        .map(|b| b.lock().iter().filter(|s| s.used).count())
        .sum();
    assert_eq!(live, s.len);
}

#[test]
fn concurrent_inserts_and_lookups_see_only_their_own_values() {
    let t = table(20_000);
    let threads = 4u32;
    let per = 3000u32;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for th in 0..threads {
            let t = &t;
            workers.push(s.spawn(move || {
                let mut x = 0x9e37_79b9u64 + u64::from(th);
                for i in 0..per {
                    // Keys are shared between threads (half of them collide on
                    // purpose): whoever inserts first wins, and all must agree.
                    let owner = if i % 2 == 0 { th } else { 0 };
                    let k = key(owner * 100_000 + i, (i % 64) as u16 + 1, 80, PROTO_TCP);
                    let now = u64::from(i);
                    match t.insert(&k, target_of(&k), SYN, now) {
                        Insert::New(c) | Insert::Existing(c) => {
                            assert_eq!(c.target, target_of(&k))
                        }
                        Insert::NotRecorded => panic!("table has room"),
                    }
                    assert_eq!(
                        t.lookup(&k, ACK, now).map(|c| c.target),
                        Some(target_of(&k))
                    );
                    // Look up some random earlier key of any thread.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let j = (x % u64::from(i + 1)) as u32;
                    let o = (x >> 32) as u32 % threads;
                    let o = if j.is_multiple_of(2) { o } else { 0 };
                    let k2 = key(o * 100_000 + j, (j % 64) as u16 + 1, 80, PROTO_TCP);
                    if let Some(c) = t.lookup(&k2, ACK, now) {
                        assert_eq!(c.target, target_of(&k2));
                    }
                }
            }));
        }
        // The control core sweeps meanwhile (nothing is expired: no effect
        // except lock traffic).
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(t.sweep(per as u64, 64), 0);
                std::thread::yield_now();
            }
        });
        // Let the workers finish (a failed assertion in one is re-raised
        // here), then stop the sweeper.
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Ordering::Relaxed);
        for r in results {
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        }
    });
    let distinct = per / 2 * threads + per / 2;
    assert_eq!(t.len(), distinct as usize);
    assert_eq!(t.stats().inserts, u64::from(distinct));
    for th in 0..threads {
        for i in 0..per {
            let owner = if i % 2 == 0 { th } else { 0 };
            let k = key(owner * 100_000 + i, (i % 64) as u16 + 1, 80, PROTO_TCP);
            assert_eq!(
                t.peek(&k, u64::from(per)).map(|c| c.target),
                Some(target_of(&k))
            );
        }
    }
}

#[test]
fn concurrent_churn_on_a_tiny_table() {
    // Two buckets, 10 entries, 4 threads inserting, looking up, removing and
    // sweeping keys from one small pool: every lock is contended and entries
    // are evicted and expired all the time. Whatever a thread finds must be
    // exactly what was inserted for that key, and the count must stay exact.
    let t = ConnTable::with_config(
        10,
        Timeouts {
            tcp_established: 50,
            udp: 30,
            ..Timeouts::default()
        },
        7,
    );
    std::thread::scope(|s| {
        for th in 0..4u64 {
            let t = &t;
            s.spawn(move || {
                let mut x = 0x2545_f491_4f6c_dd1d ^ th;
                for step in 0..20_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let proto = if x & 1 == 0 { PROTO_TCP } else { PROTO_UDP };
                    let k = key((x >> 8) as u32 % 24, (x >> 16) as u16 % 3, 80, proto);
                    let now = step;
                    let found = match (x >> 32) % 4 {
                        0 => match t.insert(&k, target_of(&k), ACK, now) {
                            Insert::New(c) | Insert::Existing(c) => Some(c),
                            Insert::NotRecorded => None,
                        },
                        1 => t.lookup(&k, ACK, now),
                        2 => t.remove(&k),
                        _ => {
                            t.sweep(now, 1);
                            None
                        }
                    };
                    if let Some(c) = found {
                        assert_eq!(c.target, target_of(&k));
                    }
                    assert!(t.len() <= 10);
                }
            });
        }
    });
    let live: usize = t
        .buckets
        .iter()
        .map(|b| b.lock().iter().filter(|s| s.used).count())
        .sum();
    assert_eq!(live, t.len());
    let st = t.stats();
    assert!(st.evictions > 0 && st.expired > 0, "{st:?}");
}
