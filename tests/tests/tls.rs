//! TLS between agents, clients and the coordinator: real certificates (made by `coord certs init`),
//! real rustls on both sides, mutual TLS 1.3; a plain-text client is refused, and the CLI runs a sweep end
//! to end as an operator.

use std::process::Command;
use std::time::Duration;

use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_tests::bin;
use tracefleet_tests::pki::{Pki, https_url};
use tracefleet_tests::procs::{Coord, agent_with, wait_agents};
use tracefleet_tests::sweeps::replay_tree;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_runs_over_tls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki"), &["tls-agent"]).expect("certificates");
    let serve_flags = pki.serve_flags();
    let flags: Vec<&str> = serve_flags.iter().map(String::as_str).collect();
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &flags).expect("coord");
    let url = https_url(&coord.addr);

    // A plain-text client gets nowhere (an error, or no answer at all).
    let plain = async {
        let mut c = SweepsClient::connect(format!("http://{}", coord.addr)).await?;
        c.list_agents(tracefleet_proto::v1::ListAgentsRequest {}).await?;
        anyhow::Ok(())
    };
    let served = matches!(tokio::time::timeout(Duration::from_secs(3), plain).await, Ok(Ok(())));
    assert!(!served, "plain text must not be served");

    let agent_flags = pki.agent_flags("tls-agent");
    let agent_flags: Vec<&str> = agent_flags.iter().map(String::as_str).collect();
    let _agent = agent_with(&url, "tls-agent", &tmp.path().join("spool"), &agent_flags).expect("agent");
    let channel = pki.channel(&url, Some(("operator.pem", "operator-key.pem"))).await.expect("connect");
    let mut c = SweepsClient::new(channel);
    wait_agents(&mut c, 1).await.expect("the agent connects over TLS");
    // The CLI, over TLS, runs a sweep end to end.
    let replay = replay_tree(tmp.path());
    let file = tmp.path().join("s.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"tls\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1, 8]\nprofile_steps = 3\n[replay]\ndir = \"{}\"\n",
            replay.display()
        ),
    )
    .expect("write");
    let o = Command::new(bin("coord"))
        .arg("sweep")
        .arg(&file)
        .args(["--coordinator", &url])
        .args(pki.operator_flags())
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("traces 6 uploaded, 6 read"), "{stdout}");
    assert!(tmp.path().join("out/op_times.tsv").exists());
}
