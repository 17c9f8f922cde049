//! Agents cannot make the coordinator's agent list grow without end: an oversized inventory is refused
//! at hello (and `coord status` keeps working), and agents not heard from past the expiry are forgotten.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tracefleet_proto::v1::agent_control_client::AgentControlClient;
use tracefleet_proto::v1::agent_message::Msg;
use tracefleet_proto::v1::{AgentMessage, Hello, HostInventory, ListAgentsRequest};
use tracefleet_tests::bin;
use tracefleet_tests::procs::{Coord, agent, wait_agents};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inventories_are_refused_and_old_agents_expire() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &["--agent-expiry-hours", "0"]).expect("coord");

    // A 1 MB inventory (labels): INVALID_ARGUMENT, nothing stored.
    let mut labels = std::collections::HashMap::new();
    for i in 0..1000 {
        labels.insert(format!("label-{i}"), "x".repeat(1000));
    }
    let hello = Hello {
        inventory: Some(HostInventory { host: "bloated".into(), labels, ..Default::default() }),
        instance: "i".into(),
        ..Default::default()
    };
    let mut control = AgentControlClient::connect(format!("http://{}", coord.addr))
        .await
        .expect("connect")
        .max_encoding_message_size(4 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(AgentMessage { msg: Some(Msg::Hello(hello)) }).await.expect("queue");
    let e = control.session(ReceiverStream::new(rx)).await.expect_err("oversized inventory");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("at most 65536 are accepted"), "{}", e.message());
    let out = Command::new(bin("coord")).args(["status", "--coordinator", &coord.addr]).output().expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("bloated"));

    // A real agent is listed while connected; once it is gone (expiry 0 h), it is forgotten.
    let mut c = coord.client().await.expect("client");
    let a = agent(&coord.addr, "short-lived", &tmp.path().join("spool")).expect("agent");
    wait_agents(&mut c, 1).await.expect("agent");
    drop(a); // SIGKILL
    let t0 = Instant::now();
    loop {
        let listed = c.list_agents(ListAgentsRequest {}).await.expect("list").into_inner().agents;
        if listed.is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "a gone agent stayed listed: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
