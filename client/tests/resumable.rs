//! Resumable mode against the real relay, through a proxy that breaks the link for real
//! (TCP reset, half-open stall): the oracle counts every message both ways — none lost,
//! none repeated, order kept — and the application hears of each resume.

mod support;

use std::time::Duration;

use compendium_client::{Client, Event, blocking};
use compendium_server::Config;
use serde_json::{Value, json};
use support::link::Link;
use support::{PATIENCE, relay};

/// Collect `count` delivered `n`s from `client`, counting resumes; fails on anything else.
async fn collect(client: &mut Client, count: usize) -> (Vec<u64>, usize) {
    let mut got = Vec::new();
    let mut resumes = 0;
    while got.len() < count {
        let event = tokio::time::timeout(PATIENCE, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived: {got:?}", got.len()));
        match event {
            Some(Event::Deliver(msg)) => {
                let value: Value = msg.decode().expect("JSON");
                got.push(value["n"].as_u64().expect("n"));
            }
            Some(Event::Resumed { .. }) => resumes += 1,
            other => panic!("unexpected {other:?} after {got:?}"),
        }
    }
    (got, resumes)
}

/// Read `client`'s events until a resume, adding what is delivered meanwhile to `got`;
/// returns 1 (the resume). Fails on anything else.
async fn until_resumed(client: &mut Client, got: &mut Vec<u64>) -> usize {
    loop {
        let event = tokio::time::timeout(PATIENCE, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("no resume after {} messages", got.len()));
        match event {
            Some(Event::Deliver(msg)) => {
                let value: Value = msg.decode().expect("JSON");
                got.push(value["n"].as_u64().expect("n"));
            }
            Some(Event::Resumed { .. }) => return 1,
            other => panic!("unexpected {other:?} after {got:?}"),
        }
    }
}

/// A phone (built by `phone`, which sets resumable mode) behind a [`Link`], a resumable
/// PC connected directly, both INITed.
struct Pair {
    link: Link,
    phone: Client,
    pc: Client,
    phone_addr: compendium_client::Address,
    pc_addr: compendium_client::Address,
    _relay: compendium_server::Handle,
}

async fn pair(phone: compendium_client::ClientBuilder) -> Pair {
    let (url, relay) = relay(Config::ephemeral()).await;
    let link = Link::start(&url).await;
    let phone = phone.connect(&link.url).await.expect("phone");
    let pc = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect("pc");
    let phone_addr = phone.init().await.expect("phone INIT");
    let pc_addr = pc.init().await.expect("pc INIT");
    Pair {
        link,
        phone,
        pc,
        phone_addr,
        pc_addr,
        _relay: relay,
    }
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[tokio::test]
async fn a_reset_link_is_resumed_and_nothing_is_lost_or_repeated_either_way() {
    let Pair {
        link,
        mut phone,
        mut pc,
        phone_addr,
        pc_addr,
        _relay,
    } = pair(Client::builder().resumable(true)).await;
    const N: u64 = 200;
    for n in 1..=N {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("pc route");
        phone
            .route(&pc_addr, &json!({ "n": n }))
            .await
            .expect("phone route");
        if n == N / 2 {
            link.reset_all();
        }
    }
    let (to_phone, resumes) = collect(&mut phone, N as usize).await;
    assert_eq!(to_phone, one_to(N), "PC to phone: exactly once, in order");
    assert_eq!(resumes, 1, "the phone resumed once");
    let (to_pc, _) = collect(&mut pc, N as usize).await;
    assert_eq!(to_pc, one_to(N), "phone to PC: exactly once, in order");
    assert_eq!(link.accepted(), 2);
    phone.close().await.expect("close");
    pc.close().await.expect("close");
}

#[tokio::test]
async fn a_reconnection_that_stalls_is_given_up_after_the_idle_timeout() {
    // The handshake timeout alone would keep the phone on the stalled attempt for an
    // hour: only the idle timeout can end it.
    let builder = Client::builder()
        .resumable(true)
        .handshake_timeout(Duration::from_secs(3600))
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(300)));
    let Pair {
        link,
        mut phone,
        pc,
        phone_addr,
        ..
    } = pair(builder).await;
    link.stall_new(true);
    link.reset_all();
    // The first reconnection stalls; the phone gives it up and dials again.
    tokio::time::timeout(PATIENCE, link.wait_accepted(3))
        .await
        .expect("the phone gave up the stalled attempt and dialled again");
    link.stall_new(false);
    pc.route(&phone_addr, &json!({ "n": 1 }))
        .await
        .expect("route");
    // (The resume is reported before what it replays.)
    let (got, resumes) = collect(&mut phone, 1).await;
    assert_eq!(got, [1]);
    assert_eq!(resumes, 1, "one resume, after the stalled attempt");
    assert!(link.accepted() >= 3);
}

#[tokio::test]
async fn a_half_open_link_is_noticed_by_keepalive_and_the_session_taken_over() {
    let builder = Client::builder()
        .resumable(true)
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(500)));
    let Pair {
        link,
        mut phone,
        pc,
        phone_addr,
        ..
    } = pair(builder).await;
    for n in 1..=10 {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("route");
    }
    let (first, _) = collect(&mut phone, 10).await;
    assert_eq!(first, one_to(10));
    // The link goes silent both ways; the relay still believes the old connection alive.
    link.stall_all();
    for n in 11..=30 {
        pc.route(&phone_addr, &json!({ "n": n }))
            .await
            .expect("route");
    }
    let (rest, resumes) = collect(&mut phone, 20).await;
    assert_eq!(
        rest,
        (11..=30).collect::<Vec<_>>(),
        "written into the dead link, replayed once"
    );
    assert_eq!(resumes, 1);
    phone.close().await.expect("close");
}

#[tokio::test]
async fn a_send_stuck_on_a_stalled_link_is_given_up_after_the_idle_timeout() {
    // Writes that cannot go anywhere (the link went silent with its TCP buffers full)
    // must not hold the phone: it gives the link up after the idle timeout, as it would a
    // silent one, resumes, and replays — so every message still arrives, once, in order.
    let builder = Client::builder()
        .resumable(true)
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(500)));
    let Pair {
        link,
        phone,
        mut pc,
        pc_addr,
        ..
    } = pair(builder).await;
    link.stall_all();
    // 200 × 128 KiB: far more than the kernel's and the proxy's buffers hold.
    const N: u64 = 200;
    let pad = "x".repeat(128 << 10);
    let sender = phone.sender();
    let sending = tokio::spawn(async move {
        for n in 1..=N {
            sender
                .route(&pc_addr, &json!({ "n": n, "pad": pad }))
                .await
                .expect("route");
        }
    });
    let (got, _) = collect(&mut pc, N as usize).await;
    assert_eq!(
        got,
        one_to(N),
        "written into the stalled link, replayed once"
    );
    tokio::time::timeout(PATIENCE, sending)
        .await
        .expect("the sends finish")
        .expect("sending task");
    assert!(link.accepted() >= 2, "the phone dialled again");
    phone.close().await.expect("close");
}

#[tokio::test]
async fn a_session_that_cannot_come_back_is_reported_never_replaced() {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::from_secs(1);
    config.sessions.hold = Duration::from_millis(500);
    let (url, relay) = relay(config).await;
    let mut phone = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect("phone");
    phone.init().await.expect("INIT");
    relay.shutdown(); // the relay is gone: nothing to resume on within the grace
    let mut lost = None;
    while let Some(event) = tokio::time::timeout(PATIENCE, phone.next_event())
        .await
        .expect("events")
    {
        match event {
            Event::SessionLost { reason } => lost = Some(reason),
            Event::Closed { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let reason = lost.expect("a SessionLost event");
    assert!(
        reason.contains("could not resume within the session's grace"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_close_that_waits_on_a_resume_that_fails_reports_the_loss() {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::from_secs(1);
    config.sessions.hold = Duration::from_millis(500);
    let (url, _relay) = relay(config).await;
    let link = Link::start(&url).await;
    let phone = Client::builder()
        .resumable(true)
        .idle_timeout(Some(Duration::from_millis(300)))
        .connect(&link.url)
        .await
        .expect("phone");
    let pc = Client::builder().connect(&url).await.expect("pc");
    let pc_addr = pc.init().await.expect("pc INIT");
    phone.init().await.expect("phone INIT");
    // Every reconnection stalls until the grace has passed: the session cannot come back.
    link.stall_new(true);
    link.reset_all();
    // The phone is resuming (it has dialled again) when the application sends and closes.
    tokio::time::timeout(PATIENCE, link.wait_accepted(2))
        .await
        .expect("the phone dialled again");
    let (sender, _events) = phone.split();
    sender
        .route(&pc_addr, &json!({ "n": 1 }))
        .await
        .expect("queued");
    let closed = tokio::time::timeout(PATIENCE, sender.close())
        .await
        .expect("close returns");
    let Err(compendium_client::Error::Closed { reason, .. }) = closed else {
        panic!("a close whose session was lost reported {closed:?}");
    };
    assert!(reason.contains("could not resume"), "{reason}");
    // And so does a close after the end.
    assert!(sender.close().await.is_err());
}

#[tokio::test]
async fn resumable_mode_against_a_version_1_relay_fails_clearly() {
    let mut config = Config::ephemeral();
    config.sessions.grace = Duration::ZERO;
    let (url, _relay) = relay(config).await;
    let err = Client::builder()
        .resumable(true)
        .connect(&url)
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("does not speak protocol version 2"), "{text}");
}

#[test]
fn the_blocking_client_resumes_too() {
    let (runtime, url) = support::relay_in_background();
    let link = runtime.block_on(Link::start(&url));
    let builder = Client::builder().resumable(true);
    let mut phone = blocking::Client::connect_with(&builder, &link.url).expect("connect");
    let address = phone.init().expect("INIT");
    phone.route(&address, &json!({ "n": 1 })).expect("route");
    let first: Value = phone.recv_json().expect("first");
    assert_eq!(first["n"], 1);
    link.reset_all();
    phone
        .route(&address, &json!({ "n": 2 }))
        .expect("route after reset");
    let second: Value = phone.recv_json().expect("second, after the resume");
    assert_eq!(second["n"], 2);
    phone.close().expect("close");
}

/// A slow, flaky network, both ways at once: both clients behind the same link, which
/// delays every chunk by up to 3 ms at random (a jittery mobile link), messages
/// flowing continuously in both directions, and the link cut five times while they flow —
/// three TCP resets and two half-open stalls (noticed by keepalive, taken over) — each
/// cut triggered by the phone's progress, not by a timer. Every message arrives exactly
/// once and in order on both sides, and each side heard of each resume. Senders keep at
/// most `WINDOW` messages ahead of their receiver (well inside the relay's 256-message
/// session buffer: beyond it the relay would answer 503, as rule 6.4 says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways_across_repeated_resets_and_stalls() {
    const N: u64 = 600;
    const WINDOW: u64 = 100;
    const STEP: usize = 50;
    let (url, _relay) = relay(Config::ephemeral()).await;
    let link = Link::start(&url).await;
    link.jitter(Duration::from_millis(3));
    let builder = Client::builder()
        .resumable(true)
        .ping_interval(Some(Duration::from_millis(100)))
        .idle_timeout(Some(Duration::from_millis(400)));
    let mut phone = builder.connect(&link.url).await.expect("phone");
    let mut pc = builder.connect(&link.url).await.expect("pc");
    let phone_addr = phone.init().await.expect("phone INIT");
    let pc_addr = pc.init().await.expect("pc INIT");
    // How many messages each side has received so far.
    let (phone_got, phone_progress) = tokio::sync::watch::channel(0u64);
    let (pc_got, pc_progress) = tokio::sync::watch::channel(0u64);
    let send_all = |sender: compendium_client::Sender,
                    to: compendium_client::Address,
                    mut progress: tokio::sync::watch::Receiver<u64>| {
        tokio::spawn(async move {
            for n in 1..=N {
                progress
                    .wait_for(|got| n <= got + WINDOW)
                    .await
                    .expect("receiver alive");
                sender.route(&to, &json!({ "n": n })).await.expect("route");
            }
        })
    };
    let senders = [
        send_all(pc.sender(), phone_addr, phone_progress),
        send_all(phone.sender(), pc_addr, pc_progress),
    ];
    let pc_side = tokio::spawn(async move {
        let (mut got, mut resumes) = (Vec::new(), 0);
        while got.len() < N as usize {
            let (more, r) = collect(&mut pc, STEP).await;
            got.extend(more);
            resumes += r;
            let _ = pc_got.send(got.len() as u64);
        }
        (got, resumes, pc)
    });
    // The phone collects in steps; at the cut points, the link is cut.
    let cuts = [
        (100, "reset"),
        (200, "stall"),
        (300, "reset"),
        (400, "stall"),
        (500, "reset"),
    ];
    let (mut got, mut resumes, mut cut) = (Vec::new(), 0, 0);
    while got.len() < N as usize {
        let (more, r) = collect(&mut phone, STEP).await;
        got.extend(more);
        resumes += r;
        let _ = phone_got.send(got.len() as u64);
        let Some((at, fault)) = cuts.get(cut) else {
            continue;
        };
        if got.len() < *at {
            continue;
        }
        // Cut only once the phone has resumed from the cut before: the phone can be
        // reading messages it received before that cut, and a cut of a link that is
        // already dead would cost it nothing, proving nothing.
        while resumes < cut {
            resumes += until_resumed(&mut phone, &mut got).await;
            let _ = phone_got.send(got.len() as u64);
        }
        match *fault {
            "reset" => link.reset_all(),
            _ => link.stall_all(),
        }
        cut += 1;
    }
    // The resume from the last cut can come after the last message.
    while resumes < cut {
        resumes += until_resumed(&mut phone, &mut got).await;
    }
    assert_eq!(got, one_to(N), "PC to phone: exactly once, in order");
    for sender in senders {
        sender.await.expect("sender");
    }
    let (to_pc, pc_resumes, pc) = pc_side.await.expect("pc side");
    assert_eq!(to_pc, one_to(N), "phone to PC: exactly once, in order");
    assert_eq!(cut, cuts.len(), "every cut was made");
    assert!(resumes >= cuts.len(), "the phone resumed after every cut");
    // The PC's link can be cut while it is still dead from the cut before (its keepalive
    // notices a stall in its own time), so it resumes at least once, not once per cut.
    assert!(pc_resumes >= 1, "the PC resumed");
    // Each resume took a connection of its own, besides the first two.
    assert!(
        link.accepted() as usize >= 2 + resumes + pc_resumes,
        "{} connections for {resumes} + {pc_resumes} resumes",
        link.accepted()
    );
    phone.close().await.expect("close");
    pc.close().await.expect("close");
}
