//! Attacks a public relay will see, each against a real server on 127.0.0.1:0; every
//! test also checks that a bystander connection is unaffected and that, once everyone has
//! gone, no address or connection slot is left taken. (Hardening, issue 7.) The attacks
//! themselves are in `support/hostile.rs`, shared with `attacks.rs`.

mod support;

use std::collections::HashSet;

use support::{Client, TestServer, hostile};

/// The bystander still gets served: INIT, then a message to itself.
async fn bystander_is_fine(client: &mut Client) {
    let me = client.init().await;
    client.route(&me, r#"{"still":"fine"}"#).await;
    assert_eq!(
        client.recv_text().await,
        r#"{"type":"DELIVER","msg":{"still":"fine"}}"#
    );
}

/// The end of every test: with all its clients gone (`connections` WebSocket connections
/// in all), no address is live and no connection slot is taken — the attack left nothing
/// in the directory. (Memory is judged from outside the process, in `attacks.rs`.)
async fn back_to_baseline(server: TestServer, connections: u64) {
    server.handle.wait_for_ended_connections(connections).await;
    assert_eq!(server.handle.live_addresses(), 0, "live addresses");
    assert_eq!(server.handle.open_connections(), 0, "open connections");
    server.stop().await;
}

/// Play one attack beside a bystander connection and return what the attack saw — after
/// checking that the bystander is still served and that, once it has gone too
/// (`connections` WebSocket connections in all), nothing is left behind.
async fn beside_a_bystander<T>(connections: u64, attack: impl AsyncFnOnce(&str) -> T) -> T {
    let server = TestServer::default().await;
    let mut bystander = server.client().await;
    let seen = attack(&server.url).await;
    bystander_is_fine(&mut bystander).await;
    drop(bystander);
    back_to_baseline(server, connections).await;
    seen
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_dropped() {
    // No WebSocket connection comes of it: only the bystander's ends.
    beside_a_bystander(1, hostile::garbage_instead_of_a_handshake).await;
}

#[tokio::test]
async fn garbage_after_a_valid_handshake_closes_1002() {
    let code = beside_a_bystander(2, hostile::garbage_after_a_handshake).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let code = beside_a_bystander(2, hostile::invalid_utf8_in_a_text_frame).await;
    assert_eq!(code, Some(1007));
}

#[tokio::test]
async fn a_reserved_opcode_closes_1002() {
    let code = beside_a_bystander(2, hostile::a_reserved_opcode).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_1002() {
    let code = beside_a_bystander(2, hostile::an_unmasked_client_frame).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn a_frame_announcing_2_pow_63_bytes_is_refused_without_allocating_it() {
    let code = beside_a_bystander(2, hostile::a_frame_announcing_2_pow_63_bytes).await;
    // Refused (too big, or malformed) — and the process is still here to say so.
    assert!(matches!(code, Some(1009 | 1002)), "{code:?}");
}

#[tokio::test]
async fn hostile_json_gets_precise_400s_and_the_connection_stays() {
    beside_a_bystander(2, async |url: &str| {
        let mut a = Client::connect(url).await;
        hostile::send_hostile_json(&mut a).await;
        a.init().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_1009() {
    let code = beside_a_bystander(2, hostile::a_message_over_the_limit).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn addresses_do_not_repeat_and_their_bits_are_balanced() {
    let server = TestServer::default().await;
    let mut client = server.client().await;
    const INITS: usize = 100_000;
    let mut seen = HashSet::with_capacity(INITS);
    let mut ones = 0u64;
    for _ in 0..INITS / 1000 {
        for _ in 0..1000 {
            client.send(r#"{"type":"INIT"}"#).await;
        }
        for _ in 0..1000 {
            let reply = client.recv_json().await;
            let address = reply["EpheWssAddr"]
                .as_str()
                .expect("an address")
                .to_owned();
            let bits = u128::from_str_radix(&address, 16).expect("hex");
            ones += u64::from(bits.count_ones());
            assert!(seen.insert(address), "an address repeated");
        }
    }
    let share = ones as f64 / (INITS as f64 * 128.0);
    assert!(
        (share - 0.5).abs() < 0.005,
        "one bits: {share:.4} of all bits"
    );
    assert_eq!(
        server.handle.live_addresses(),
        1,
        "each INIT retired the one before"
    );
    drop(client);
    back_to_baseline(server, 1).await;
}

#[tokio::test]
async fn a_404_does_not_tell_a_retired_address_from_an_unknown_one() {
    let server = TestServer::default().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let retired = a.init().await;
    a.init().await;
    b.route(&retired, "{}").await;
    let for_retired = b.recv_text().await;
    b.route("0123456789abcdef0123456789abcdef", "{}").await;
    let for_unknown = b.recv_text().await;
    assert_eq!(for_retired, for_unknown);
    drop((a, b));
    back_to_baseline(server, 2).await;
}
