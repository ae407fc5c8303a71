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
