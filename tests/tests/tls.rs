//! TLS between agents, clients and the coordinator: real certificates (generated for the test), real
//! rustls on both sides; a plain-text client is refused.

use std::process::Command;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_tests::bin;
use tracefleet_tests::procs::{Coord, agent_with, wait_agents};
use tracefleet_tests::sweeps::replay_tree;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_runs_over_tls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).expect("write");
    std::fs::write(&key_path, &key_pem).expect("write");
    let coord = Coord::start(
        &tmp.path().join("coord"),
        "127.0.0.1:0",
        &["--tls-cert", cert_path.to_str().unwrap_or_default(), "--tls-key", key_path.to_str().unwrap_or_default()],
    )
    .expect("coord");
    let port = coord.addr.rsplit(':').next().unwrap_or_default().to_string();
    let url = format!("https://localhost:{port}");

    // A plain-text client gets nowhere (an error, or no answer at all).
    let plain = async {
        let mut c = SweepsClient::connect(format!("http://{}", coord.addr)).await?;
        c.list_agents(tracefleet_proto::v1::ListAgentsRequest {}).await?;
        anyhow::Ok(())
    };
    let served = matches!(tokio::time::timeout(Duration::from_secs(3), plain).await, Ok(Ok(())));
    assert!(!served, "plain text must not be served");

    let ca = cert_path.to_str().unwrap_or_default();
    let _agent = agent_with(&url, "tls-agent", &tmp.path().join("spool"), &["--tls-ca", ca]).expect("agent");

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert_pem));
    let channel = Endpoint::from_shared(url.clone())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
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
        .args(["--coordinator", &url, "--tls-ca"])
        .arg(&cert_path)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("traces 6 uploaded, 6 parsed"), "{stdout}");
    assert!(tmp.path().join("out/op_times.tsv").exists());
}
