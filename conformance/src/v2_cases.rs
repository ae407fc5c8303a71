//! Cases for protocol version 2, resumable sessions (docs/protocol.md section 6). Each
//! opens its connections offering `compendium.v2`; a relay that selects no subprotocol
//! does not speak version 2, and the case is UNSUPPORTED, not failed.

use std::time::Duration;

use compendium_messages::Message;

use crate::case::{Case, Ctx, Outcome};
use crate::code_cases::{Run, case, connect, init, route};
use crate::peer::{Peer, Received, clip};
use crate::report::Verdict;
use crate::session::Level;

/// Every version 2 case.
pub(crate) fn all() -> Vec<Case> {
    use Level::Must;
    let v2 = |id: &str, description: &str, requirement: &str, body: fn(Ctx) -> Run| {
        case(id, Must, description, requirement, body)
    };
    vec![
        v2(
            "6.1/1",
            "offered compendium.v2, INITRESP carries a 64-hex secret and the grace",
            "A server that speaks version 2 and has it enabled MUST select it",
            |ctx| Box::pin(run(ctx, initresp_has_a_secret)),
        ),
        v2(
            "6.2/1",
            "a connection closed without END can be resumed with its address",
            "When the connection ends in any way other than after END … the session is detached: its address stays reserved",
            |ctx| Box::pin(run(ctx, close_then_resume)),
        ),
        v2(
            "6.3/1",
            "a RESUME that cannot resume gets ERR 410, the same for an unknown address and a wrong secret",
            "ERR 410, whose errMsg is the same whatever the reason",
            |ctx| Box::pin(run(ctx, refusals_alike)),
        ),
        v2(
            "6.3/2",
            "after a reset, RESUME replays every DELIVER after its seq, in order, with the same numbers",
            "After RESUMED the server sends, in order, every stream message numbered above N",
            |ctx| Box::pin(run(ctx, replay_after_reset)),
        ),
        v2(
            "6.3/3",
            "a RESUME while the old connection is open takes the session over; the old one is closed with 4001",
            "the RESUME takes it over at once … the server closes it with close code 4001",
            |ctx| Box::pin(run(ctx, takeover)),
        ),
        v2(
            "6.3/4",
            "RESUMED carries a new secret; once it is used, the old one no longer resumes",
            "secret is a fresh secret that replaces the old one, which works no more once the client has shown that the RESUMED reached it",
            |ctx| Box::pin(run(ctx, secret_rotates)),
        ),
        v2(
            "6.4/1",
            "an ACK beyond the last stream message sent is ERR 400",
            "An ACK beyond the last message sent is invalid (ERR 400)",
            |ctx| Box::pin(run(ctx, ack_beyond)),
        ),
        v2(
            "6.5/1",
            "a resent ROUTE number is acted on once; a skipped number is ERR 400",
            "The server acts on each number once",
            |ctx| Box::pin(run(ctx, routes_once)),
        ),
        v2(
            "6.6/1",
            "an ERR answering a numbered ROUTE names it (route) and is numbered (seq)",
            "An ERR that answers a numbered ROUTE carries route, that ROUTE's seq, and a stream seq",
            |ctx| Box::pin(run(ctx, err_names_route)),
        ),
        v2(
            "6.7/1",
            "END closes with 1000 and releases the address at once",
            "the server releases its address at once (ROUTEs to it get 404) … closes the connection with close code 1000",
            |ctx| Box::pin(run(ctx, end_releases)),
        ),
        v2(
            "6.8/1",
            "a ROUTE to a detached session is delivered when it resumes; its sender hears nothing",
            "A ROUTE to a detached session is held for a hold window … if the session resumes in time it is delivered then",
            |ctx| Box::pin(run(ctx, held_until_resume)),
        ),
        v2(
            "6.9/1",
            "a RESUME with a superseded secret (its successor used) ends the session: 410, the holder closed with 4002, the address 404",
            "the server ends that session at once (its address is released; an attached connection is closed with close code 4002, session revoked)",
            |ctx| Box::pin(run(ctx, stale_secret_revokes)),
        ),
    ]
}

/// Proof that the relay selected version 2, handed to each case body.
struct V2;

async fn run(ctx: Ctx, body: fn(Ctx, V2) -> Step) -> Outcome {
    match Peer::connect_v2(ctx.next_url(), &ctx.client).await {
        Ok(None) => Outcome::with(
            Verdict::Unsupported,
            "the relay selected no subprotocol when offered compendium.v2: it does not speak version 2",
        ),
        Err(err) => Outcome::fail(format!("cannot connect: {err}")),
        Ok(Some(probe)) => {
            drop(probe);
            body(ctx, V2).await.into()
        }
    }
}

type Step = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

async fn v2_peer(ctx: &Ctx) -> Result<Peer, String> {
    Peer::connect_v2(ctx.next_url(), &ctx.client)
        .await?
        .ok_or_else(|| "the relay selected version 2 once, then not".to_owned())
}

/// The next text frame parsed, skipping ROUTEACKs.
async fn next_message(peer: &mut Peer, ctx: &Ctx, expecting: &str) -> Result<Message, String> {
    loop {
        match peer
            .next(ctx.timeout)
            .await
            .map_err(|e| format!("expected {expecting}: {e}"))?
        {
            Received::Text(text) => match Message::parse(&text) {
                Ok(Message::Routeack { .. }) => continue,
                Ok(message) => return Ok(message),
                Err(err) => {
                    return Err(format!(
                        "expected {expecting}, got an invalid message ({err}): {}",
                        clip(&text)
                    ));
                }
            },
            Received::Close(_) | Received::Ended(_) => {
                return Err(format!(
                    "expected {expecting}, but {}",
                    peer.ended().unwrap_or("the connection ended")
                ));
            }
            other => return Err(format!("expected {expecting}, got {other}")),
        }
    }
}

async fn init_v2(peer: &mut Peer, ctx: &Ctx) -> Result<(String, String), String> {
    peer.send_text(Message::init().to_json()).await?;
    match next_message(peer, ctx, "INITRESP").await? {
        Message::Initresp {
            ephe_wss_addr,
            secret: Some(secret),
            grace: Some(_),
            ..
        } => Ok((ephe_wss_addr.to_string(), secret.expose_hex())),
        other => Err(format!(
            "expected INITRESP with secret and grace, got {}",
            other.to_json()
        )),
    }
}

fn resume(address: &str, secret: &str, seq: u64) -> String {
    format!(r#"{{"type":"RESUME","EpheWssAddr":"{address}","secret":"{secret}","seq":{seq}}}"#)
}

fn route_v2(to: &str, seq: u64, msg: &str) -> String {
    format!(r#"{{"type":"ROUTE","EpheWssAddr":"{to}","seq":{seq},"msg":{msg}}}"#)
}

async fn expect_resumed(peer: &mut Peer, ctx: &Ctx, address: &str) -> Result<String, String> {
    match next_message(peer, ctx, "RESUMED").await? {
        Message::Resumed {
            ephe_wss_addr,
            secret,
            ..
        } if ephe_wss_addr.to_string() == address => Ok(secret.expose_hex()),
        other => Err(format!(
            "expected RESUMED for {address}, got {}",
            other.to_json()
        )),
    }
}

async fn expect_deliver(peer: &mut Peer, ctx: &Ctx) -> Result<(Option<u64>, String), String> {
    match next_message(peer, ctx, "DELIVER").await? {
        Message::Deliver { seq, msg, .. } => Ok((seq, msg.as_str().to_owned())),
        other => Err(format!("expected DELIVER, got {}", other.to_json())),
    }
}

async fn expect_err(peer: &mut Peer, ctx: &Ctx, code: u16) -> Result<Message, String> {
    match next_message(peer, ctx, &format!("ERR {code}")).await? {
        m @ Message::Err { err_code, .. } if err_code == code => Ok(m),
        other => Err(format!("expected ERR {code}, got {}", other.to_json())),
    }
}

async fn expect_close(peer: &mut Peer, ctx: &Ctx, code: u16) -> Result<(), String> {
    loop {
        match peer
            .next(ctx.timeout)
            .await
            .map_err(|e| format!("expected close {code}: {e}"))?
        {
            Received::Close(Some((got, _))) if got == code => return Ok(()),
            Received::Close(other) => return Err(format!("expected close {code}, got {other:?}")),
            Received::Ended(how) => {
                return Err(format!(
                    "expected close {code}, the connection ended ({how})"
                ));
            }
            _ => continue,
        }
    }
}

fn initresp_has_a_secret(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (_, secret) = init_v2(&mut a, &ctx).await?;
        if secret.len() == 64 {
            Ok(())
        } else {
            Err(format!("secret {secret:?} is not 64 hex characters"))
        }
    })
}

fn close_then_resume(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut a, &ctx).await?;
        a.close(ctx.timeout).await?;
        let mut again = v2_peer(&ctx).await?;
        again.send_text(resume(&address, &secret, 0)).await?;
        expect_resumed(&mut again, &ctx, &address).await?;
        let mut b = connect(&ctx).await?;
        b.send_text(route(&address, r#"{"after":"resume"}"#))
            .await?;
        let (seq, msg) = expect_deliver(&mut again, &ctx).await?;
        match (seq, msg.as_str()) {
            (Some(1), r#"{"after":"resume"}"#) => Ok(()),
            other => Err(format!("expected DELIVER seq 1 of the msg, got {other:?}")),
        }
    })
}

fn refusals_alike(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut owner = v2_peer(&ctx).await?;
        let (address, _) = init_v2(&mut owner, &ctx).await?;
        let mut guesser = v2_peer(&ctx).await?;
        let wrong = "5".repeat(64);
        guesser.send_text(resume(&address, &wrong, 0)).await?;
        let first = expect_err(&mut guesser, &ctx, 410).await?;
        let mut other = v2_peer(&ctx).await?;
        other.send_text(resume(&"7".repeat(32), &wrong, 0)).await?;
        let second = expect_err(&mut other, &ctx, 410).await?;
        let text = |m: &Message| match m {
            Message::Err { err_msg, .. } => err_msg.clone(),
            _ => String::new(),
        };
        if text(&first) == text(&second) {
            Ok(())
        } else {
            Err(format!(
                "the refusals differ: {:?} vs {:?}",
                text(&first),
                text(&second)
            ))
        }
    })
}

fn replay_after_reset(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut a, &ctx).await?;
        let mut b = connect(&ctx).await?;
        for n in 1..=3 {
            b.send_text(route(&address, &format!(r#"{{"n":{n}}}"#)))
                .await?;
        }
        for n in 1..=3u64 {
            let (seq, _) = expect_deliver(&mut a, &ctx).await?;
            if seq != Some(n) {
                return Err(format!("DELIVER {n} has seq {seq:?}"));
            }
        }
        a.drop_abruptly();
        let mut again = v2_peer(&ctx).await?;
        again.send_text(resume(&address, &secret, 1)).await?;
        expect_resumed(&mut again, &ctx, &address).await?;
        for n in 2..=3u64 {
            let (seq, msg) = expect_deliver(&mut again, &ctx).await?;
            if seq != Some(n) || msg != format!(r#"{{"n":{n}}}"#) {
                return Err(format!(
                    "replay: expected seq {n}, got seq {seq:?} msg {msg}"
                ));
            }
        }
        Ok(())
    })
}

fn takeover(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut old = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut old, &ctx).await?;
        let mut new = v2_peer(&ctx).await?;
        new.send_text(resume(&address, &secret, 0)).await?;
        expect_resumed(&mut new, &ctx, &address).await?;
        expect_close(&mut old, &ctx, 4001).await
    })
}

fn secret_rotates(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut a, &ctx).await?;
        a.drop_abruptly();
        let mut again = v2_peer(&ctx).await?;
        again.send_text(resume(&address, &secret, 0)).await?;
        let fresh = expect_resumed(&mut again, &ctx, &address).await?;
        if fresh == secret {
            return Err("RESUMED gave back the same secret".into());
        }
        // Resuming with the new secret shows the RESUMED arrived: the old one is done.
        again.drop_abruptly();
        let mut third = v2_peer(&ctx).await?;
        third.send_text(resume(&address, &fresh, 0)).await?;
        let newest = expect_resumed(&mut third, &ctx, &address).await?;
        if newest == fresh {
            return Err("RESUMED gave back the same secret".into());
        }
        let mut stale = v2_peer(&ctx).await?;
        stale.send_text(resume(&address, &secret, 0)).await?;
        expect_err(&mut stale, &ctx, 410).await.map(drop)
    })
}

fn routes_once(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        init_v2(&mut a, &ctx).await?;
        let mut b = connect(&ctx).await?;
        let b_addr = init(&mut b, &ctx).await?;
        for (seq, n) in [(1, 1), (1, 1), (2, 2)] {
            a.send_text(route_v2(&b_addr, seq, &format!(r#"{{"n":{n}}}"#)))
                .await?;
        }
        a.send_text(route_v2(&b_addr, 4, r#"{"n":4}"#)).await?;
        expect_err(&mut a, &ctx, 400).await?;
        a.send_text(route_v2(&b_addr, 3, r#"{"n":3}"#)).await?;
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(crate::code_cases::delivered_text(&mut b, ctx.timeout).await?);
        }
        let want = [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#];
        if got != want {
            return Err(format!("the target got {got:?}, expected {want:?}"));
        }
        // Nothing more: the resent number 1 was not delivered again.
        match b.next(Duration::from_millis(200)).await {
            Err(_) => Ok(()),
            Ok(other) => Err(format!("a fourth frame arrived: {other}")),
        }
    })
}

fn err_names_route(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        init_v2(&mut a, &ctx).await?;
        a.send_text(route_v2(&"0".repeat(32), 1, "{}")).await?;
        match expect_err(&mut a, &ctx, 404).await? {
            Message::Err {
                route: Some(1),
                seq: Some(_),
                ..
            } => Ok(()),
            other => Err(format!(
                "the ERR does not name ROUTE 1 with a stream seq: {}",
                other.to_json()
            )),
        }
    })
}

fn end_releases(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, _) = init_v2(&mut a, &ctx).await?;
        a.send_text(r#"{"type":"END"}"#.to_owned()).await?;
        expect_close(&mut a, &ctx, 1000).await?;
        let mut b = connect(&ctx).await?;
        b.send_text(route(&address, "{}")).await?;
        match next_message(&mut b, &ctx, "ERR 404").await? {
            Message::Err { err_code: 404, .. } => Ok(()),
            other => Err(format!(
                "a ROUTE to an ENDed address got {}",
                other.to_json()
            )),
        }
    })
}

fn ack_beyond(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, _) = init_v2(&mut a, &ctx).await?;
        let mut b = connect(&ctx).await?;
        b.send_text(route(&address, "{}")).await?;
        expect_deliver(&mut a, &ctx).await?;
        a.send_text(r#"{"type":"ACK","seq":1}"#.to_owned()).await?;
        a.send_text(r#"{"type":"ACK","seq":2}"#.to_owned()).await?;
        expect_err(&mut a, &ctx, 400).await.map(drop)
    })
}

fn held_until_resume(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut a, &ctx).await?;
        a.close(ctx.timeout).await?;
        let mut b = connect(&ctx).await?;
        b.send_text(route(&address, r#"{"while":"away"}"#)).await?;
        let mut again = v2_peer(&ctx).await?;
        again.send_text(resume(&address, &secret, 0)).await?;
        expect_resumed(&mut again, &ctx, &address).await?;
        let (seq, msg) = expect_deliver(&mut again, &ctx).await?;
        if (seq, msg.as_str()) != (Some(1), r#"{"while":"away"}"#) {
            return Err(format!(
                "expected DELIVER seq 1 of the held msg, got {seq:?} {msg}"
            ));
        }
        match b.next(Duration::from_millis(200)).await {
            Err(_) => Ok(()),
            Ok(other) => Err(format!("the sender of a delivered ROUTE got {other}")),
        }
    })
}

fn stale_secret_revokes(ctx: Ctx, _: V2) -> Step {
    Box::pin(async move {
        let mut a = v2_peer(&ctx).await?;
        let (address, secret) = init_v2(&mut a, &ctx).await?;
        a.drop_abruptly();
        // The secret of a RESUME stays good until the client shows that the RESUMED
        // reached it (rule 6.9): a second RESUME, with the secret the first gave, shows it.
        let mut first = v2_peer(&ctx).await?;
        first.send_text(resume(&address, &secret, 0)).await?;
        let next = expect_resumed(&mut first, &ctx, &address).await?;
        first.drop_abruptly();
        let mut holder = v2_peer(&ctx).await?;
        holder.send_text(resume(&address, &next, 0)).await?;
        expect_resumed(&mut holder, &ctx, &address).await?;
        let mut thief = v2_peer(&ctx).await?;
        thief.send_text(resume(&address, &secret, 0)).await?;
        expect_err(&mut thief, &ctx, 410).await?;
        expect_close(&mut holder, &ctx, 4002).await?;
        let mut b = connect(&ctx).await?;
        b.send_text(route(&address, "{}")).await?;
        match next_message(&mut b, &ctx, "ERR 404").await? {
            Message::Err { err_code: 404, .. } => Ok(()),
            other => Err(format!(
                "a ROUTE to a revoked address got {}",
                other.to_json()
            )),
        }
    })
}
