//! Recording a real session through the proxy, then replaying it as a case.

mod support;

use compendium_client::{Client, ClientBuilder};
use compendium_conformance::case::Case;
use compendium_conformance::recorder::{Labels, Recorder};
use compendium_conformance::report::Verdict;
use compendium_conformance::runner::{RunOptions, run_case};
use compendium_conformance::session;
use compendium_server::Config;
use serde_json::json;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_as_a_passing_case() {
    let upstream = support::our_relay(Config::ephemeral()).await;
    let recorder = Recorder::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &upstream,
        ClientBuilder::default(),
    )
    .await
    .expect("bind");
    let proxy = format!("ws://{}", recorder.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let labels = Labels {
        id: "3.3/90".into(),
        description: "recorded PC/phone exchange".into(),
    };
    let recording = tokio::spawn(recorder.run(
        async {
            let _ = stopped.await;
        },
        labels,
    ));

    // Real clients, through the proxy: a request/response, a 404, a re-INIT, a close.
    let mut pc = Client::connect(&format!("{proxy}/init"))
        .await
        .expect("connect");
    let mut phone = Client::connect(&proxy).await.expect("connect");
    let pc_addr = pc.init().await.expect("init");
    let phone_addr = phone.init().await.expect("init");
    pc.route(
        &phone_addr,
        &json!({"kind": "hello", "reply_to": pc_addr.to_string()}),
    )
    .await
    .expect("route");
    let hello: serde_json::Value = phone.recv_json().await.expect("hello");
    assert_eq!(hello["reply_to"], pc_addr.to_string());
    phone
        .route(&pc_addr, &json!({"kind": "welcome"}))
        .await
        .expect("route");
    let _: serde_json::Value = pc.recv_json().await.expect("welcome");
    phone
        .route(
            &"0123456789abcdef0123456789abcdef".parse().expect("address"),
            &json!({}),
        )
        .await
        .expect("route");
    assert!(matches!(
        phone.next_event().await,
        Some(compendium_client::Event::Error(_))
    ));
    let _second = pc.init().await.expect("re-init");
    pc.close().await.expect("close");
    phone.close().await.expect("close");

    let _ = stop.send(());
    let recorded = recording.await.expect("recorder");
    let text = serde_json::to_string_pretty(&recorded).expect("json");
    let session = session::parse("recorded.json", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(session.actors.len(), 2);
    for placeholder in ["\"$A\"", "\"$B\"", "\"$A2\"", "$NEW1"] {
        assert!(text.contains(placeholder), "{placeholder} missing:\n{text}");
    }
    assert!(
        !text.contains(&pc_addr.to_string()),
        "live addresses must become placeholders:\n{text}"
    );

    // Replay it against a fresh relay.
    let fresh = support::our_relay(Config::ephemeral()).await;
    let result = run_case(&Case::from_session(session), &RunOptions::new(&fresh)).await;
    assert_eq!(result.verdict, Verdict::Pass, "{:?}\n{text}", result.detail);
}

/// Version 2 through the recorder: the handshake's subprotocol is passed on and recorded,
/// resume secrets become placeholders like addresses, ROUTEACKs (whose timing is the
/// relay's) are left out; the recording replays as a passing case against a fresh relay,
/// and as UNSUPPORTED against one that does not speak version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_version_2_session_replays_with_its_secrets_as_placeholders() {
    use compendium_conformance::peer::{Peer, Received};
    use compendium_messages::Message;
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(5);

    let upstream = support::our_relay(Config::ephemeral()).await;
    let recorder = Recorder::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &upstream,
        ClientBuilder::default(),
    )
    .await
    .expect("bind");
    let proxy = format!("ws://{}", recorder.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let labels = Labels {
        id: "6.3/90".into(),
        description: "recorded resume after a lost connection".into(),
    };
    let recording = tokio::spawn(recorder.run(
        async {
            let _ = stopped.await;
        },
        labels,
    ));
    let text_of = |frame: Received| match frame {
        Received::Text(text) => text,
        other => panic!("expected a text frame, got {other}"),
    };
    let options = ClientBuilder::default();
    let mut phone = Peer::connect_v2(&proxy, &options)
        .await
        .expect("connect")
        .expect("version 2 through the recorder");
    let mut pc = Peer::connect(&proxy, &options).await.expect("connect");
    phone
        .send_text(r#"{"type":"INIT"}"#.into())
        .await
        .expect("INIT");
    let Ok(Message::Initresp {
        ephe_wss_addr,
        secret: Some(secret),
        ..
    }) = Message::parse(&text_of(phone.next(WAIT).await.expect("INITRESP")))
    else {
        panic!("a version 2 INITRESP");
    };
    let route =
        |n: u32| format!(r#"{{"type":"ROUTE","EpheWssAddr":"{ephe_wss_addr}","msg":{{"n":{n}}}}}"#);
    pc.send_text(route(1)).await.expect("route");
    let first = text_of(phone.next(WAIT).await.expect("DELIVER"));
    assert!(first.contains(r#""seq":1"#), "{first}");
    phone.drop_abruptly();
    pc.send_text(route(2)).await.expect("route");
    let mut back = Peer::connect_v2(&proxy, &options)
        .await
        .expect("connect")
        .expect("version 2");
    back.send_text(format!(
        r#"{{"type":"RESUME","EpheWssAddr":"{ephe_wss_addr}","secret":"{}","seq":0}}"#,
        secret.expose_hex()
    ))
    .await
    .expect("RESUME");
    let resumed = text_of(back.next(WAIT).await.expect("RESUMED"));
    assert!(resumed.starts_with(r#"{"type":"RESUMED""#), "{resumed}");
    for n in 1..=2 {
        let replayed = text_of(back.next(WAIT).await.expect("replay"));
        assert!(replayed.contains(&format!(r#""n":{n}"#)), "{replayed}");
    }
    back.send_text(r#"{"type":"END"}"#.into())
        .await
        .expect("END");
    assert_eq!(
        back.wait_for_end(WAIT).await.expect("closed").map(|c| c.0),
        Some(1000)
    );
    // (The recorder ends a proxied connection as soon as it forwards a close frame.)
    let _ = pc.close(WAIT).await;

    let _ = stop.send(());
    let recorded = recording.await.expect("recorder");
    let text = serde_json::to_string_pretty(&recorded).expect("json");
    let session = session::parse("recorded.json", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(session.actors.len(), 3);
    assert!(text.contains(r#""subprotocol": "compendium.v2""#), "{text}");
    for placeholder in ["\"$SA\"", "\"$SA_2\""] {
        assert!(text.contains(placeholder), "{placeholder} missing:\n{text}");
    }
    assert!(
        !text.contains(&secret.expose_hex()),
        "secrets must become placeholders:\n{text}"
    );

    let case = Case::from_session(session);
    let fresh = support::our_relay(Config::ephemeral()).await;
    let result = run_case(&case, &RunOptions::new(&fresh)).await;
    assert_eq!(result.verdict, Verdict::Pass, "{:?}\n{text}", result.detail);
    let mut v1_only = Config::ephemeral();
    v1_only.sessions.grace = Duration::ZERO;
    let v1 = support::our_relay(v1_only).await;
    let result = run_case(&case, &RunOptions::new(&v1)).await;
    assert_eq!(result.verdict, Verdict::Unsupported, "{:?}", result.detail);
}
