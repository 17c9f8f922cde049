//! Mutual TLS and identities, with real processes and certificates from `coord certs init`: agents act
//! only under their certificate's name, operators alone submit/cancel/fetch/delete, forged calls from raw
//! gRPC clients are refused with the right status and a clear message, plain text needs `--insecure`,
//! certificates are reloaded when their files change, and a sweep run under all that gives the same
//! results as `coord ingest` of the same traces.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tracefleet_proto::v1::agent_control_client::AgentControlClient;
use tracefleet_proto::v1::agent_message::Msg;
use tracefleet_proto::v1::sweeps_client::SweepsClient;
use tracefleet_proto::v1::trace_upload_client::TraceUploadClient;
use tracefleet_proto::v1::{
    AgentMessage, Hello, HostInventory, ListAgentsRequest, SweepRef, UploadId, UploadOpen, WriteRequest,
};
use tracefleet_tests::bin;
use tracefleet_tests::pki::{Pki, https_url};
use tracefleet_tests::procs::{Coord, agent_with};
use tracefleet_tests::sweeps::{assert_same_as_ingest, replay_tree, spec};

/// Runs a command to its end; returns its success and its stderr.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits until `n` agents are connected, asking with `c`.
async fn wait_connected(c: &mut SweepsClient<tonic::transport::Channel>, n: usize) {
    let t0 = Instant::now();
    loop {
        let r = c.list_agents(ListAgentsRequest {}).await.expect("list agents").into_inner();
        if r.agents.iter().filter(|a| a.connected).count() >= n {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "agents did not connect: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A control stream that says hello as `host` (instance `instance`) and nothing more.
fn hello_stream(host: &str, instance: &str) -> ReceiverStream<AgentMessage> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let hello = Hello {
        inventory: Some(HostInventory { host: host.into(), ..Default::default() }),
        instance: instance.into(),
        ..Default::default()
    };
    tx.try_send(AgentMessage { msg: Some(Msg::Hello(hello)) }).expect("queue");
    ReceiverStream::new(rx)
}

/// One upload open, as its own stream; the coordinator's answer.
async fn open_upload(
    c: &mut TraceUploadClient<tonic::transport::Channel>,
    id: UploadId,
) -> Result<tracefleet_proto::v1::WriteResponse, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let open = UploadOpen { id: Some(id), raw_size: 10, gpu: String::new(), telemetry: None };
    tx.send(WriteRequest { open: Some(open), chunk: None, finish: None }).await.expect("queue");
    drop(tx);
    c.write(ReceiverStream::new(rx)).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_names_and_roles_and_refuses_forgeries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki"), &["agent-a", "agent-b"]).expect("certificates");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &strs(&pki.serve_flags())).expect("coord");
    let url = https_url(&coord.addr);
    let replay = replay_tree(tmp.path());

    // Real agents, each with its own certificate.
    let _a = agent_with(&url, "agent-a", &tmp.path().join("a"), &strs(&pki.agent_flags("agent-a"))).expect("agent a");
    let _b = agent_with(&url, "agent-b", &tmp.path().join("b"), &strs(&pki.agent_flags("agent-b"))).expect("agent b");
    let operator = pki.channel(&url, Some(("operator.pem", "operator-key.pem"))).await.expect("operator channel");
    let mut op = SweepsClient::new(operator.clone());
    wait_connected(&mut op, 2).await;

    // An agent that claims another name than its certificate's is refused, and says why.
    let (ok, err) = run(Command::new(bin("agent"))
        .args(["--coordinator", &url, "--name", "agent-c", "--spool-dir"])
        .arg(tmp.path().join("c"))
        .args(pki.agent_flags("agent-a")));
    assert!(!ok, "{err}");
    assert!(err.contains("agent name \"agent-c\" is not the certificate's identity \"agent-a\""), "{err}");

    // A client without a certificate gets no TLS session at all.
    assert!(
        pki.channel(&url, None).await.is_err() || {
            let ch = pki.channel(&url, None).await.expect("channel");
            SweepsClient::new(ch).list_agents(ListAgentsRequest {}).await.is_err()
        }
    );
    // A certificate from another CA: refused too.
    let other = Pki::init(&tmp.path().join("other-pki"), &["agent-a"]).expect("other certificates");
    let foreign = async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(pki.dir.join("ca.pem"))?))
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(other.dir.join("operator.pem"))?,
                std::fs::read(other.dir.join("operator-key.pem"))?,
            ));
        let ch = tonic::transport::Endpoint::from_shared(url.clone())?.tls_config(tls)?.connect().await?;
        SweepsClient::new(ch).list_agents(ListAgentsRequest {}).await?;
        anyhow::Ok(())
    };
    assert!(foreign.await.is_err(), "a certificate of another CA must be refused");

    // An agent's certificate cannot submit, cancel, fetch or delete (PERMISSION_DENIED, naming the role).
    let agent_ch = pki.channel(&url, Some(("agents/agent-b.pem", "agents/agent-b-key.pem"))).await.expect("agent ch");
    let mut as_agent = SweepsClient::new(agent_ch.clone());
    let e = as_agent.submit(spec(&replay, 0)).await.expect_err("an agent cannot submit");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs the tracefleet:operator role"), "{}", e.message());
    let e = as_agent.cancel(SweepRef { sweep_id: "x".into() }).await.expect_err("an agent cannot cancel");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // ... but may read (its own status tools).
    as_agent.list_agents(ListAgentsRequest {}).await.expect("an agent may list agents");

    // An operator's certificate cannot act as an agent: no control stream, no uploads.
    let mut op_control = AgentControlClient::new(operator.clone());
    let e = op_control.session(hello_stream("operator", "x")).await.expect_err("an operator is not an agent");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs the tracefleet:agent role"), "{}", e.message());

    // A raw client with agent-b's certificate saying hello as agent-a: refused, agent-a keeps its session.
    let mut forged = AgentControlClient::new(agent_ch.clone());
    let e = forged.session(hello_stream("agent-a", "impostor")).await.expect_err("impostor");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not the certificate's identity \"agent-b\""), "{}", e.message());

    // The operator runs a sweep over the two agents.
    let id = op.submit(spec(&replay, 100)).await.expect("submit").into_inner().sweep_id;
    // While it runs, agent-b's certificate tries to upload as agent-a, and into agent-a's job.
    let mut up = TraceUploadClient::new(agent_ch.clone());
    let as_a = UploadId {
        sweep_id: id.clone(),
        point_id: "decode-bs1".into(),
        host: "agent-a".into(),
        trace_name: "forged.json".into(),
        job_id: format!("{id}-j0"),
    };
    let e = open_upload(&mut up, as_a.clone()).await.expect_err("upload as another host");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("upload host \"agent-a\" is not the certificate's identity"), "{}", e.message());
    let e = up.query_write_status(as_a.clone()).await.expect_err("status as another host");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Jobs are dealt in order: j0 to one agent, j1 to the other. Whichever j0's agent is, agent-b
    // uploading into agent-a's job is refused.
    let jobs = [format!("{id}-j0"), format!("{id}-j1")];
    let mut refused_foreign_job = false;
    for j in &jobs {
        let as_b = UploadId { host: "agent-b".into(), job_id: j.clone(), ..as_a.clone() };
        match open_upload(&mut up, as_b).await {
            Err(e)
                if e.code() == Code::PermissionDenied && e.message().contains("is assigned to agent \"agent-a\"") =>
            {
                refused_foreign_job = true;
            }
            // agent-b's own job: refused only for a point that is not the job's.
            Err(e) if e.code() == Code::PermissionDenied && e.message().contains("is not part of job") => {}
            Ok(r) => assert!(!r.complete, "agent-b's own job and point: opened, never finished, not counted"),
            other => panic!("agent-b uploading into {j}: {other:?}"),
        }
    }
    assert!(refused_foreign_job, "one of the two jobs is agent-a's");
    let e = open_upload(&mut up, UploadId { host: "agent-b".into(), job_id: "made-up".into(), ..as_a.clone() })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The sweep completes with what the real agents made, exactly as `coord ingest` reads the traces.
    let t0 = Instant::now();
    let status = loop {
        let s = op.status(SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner();
        if s.state() != tracefleet_proto::v1::SweepState::Running {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "sweep did not end: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.state(), tracefleet_proto::v1::SweepState::Completed, "{status:?}");
    assert_eq!(status.traces_uploaded, 18, "no forged trace counted");
    assert!(coord.metric("tracefleet_uploads_refused_total") >= 4.0);

    // The CLI as operator fetches the results; the same with an agent's certificate is refused.
    let results = tmp.path().join("results");
    let (ok, err) = run(Command::new(bin("coord"))
        .args(["fetch", &id, "--coordinator", &url, "--out"])
        .arg(&results)
        .args(pki.operator_flags()));
    assert!(ok, "{err}");
    assert_same_as_ingest(&results, &replay);
    let (ok, err) = run(Command::new(bin("coord"))
        .args(["fetch", &id, "--coordinator", &url, "--out"])
        .arg(tmp.path().join("denied"))
        .args(strs(&pki.agent_flags("agent-b"))));
    assert!(!ok && err.contains("needs the tracefleet:operator role"), "{err}");

    // Mistakes people make get a message that says what to do.
    let plain = format!("http://{}", coord.addr);
    let (ok, err) = run(Command::new(bin("coord")).args(["sweeps", "--coordinator", &plain]));
    // (The coordinator's TLS alert reads as a bad frame, or the connection is already closed: both say
    // to dial https://.)
    assert!(!ok && err.contains("hint:") && err.contains("https://"), "plain text to TLS: {err}");
    // The same mistake with `coord sweep`: the same hint.
    let file = tmp.path().join("hint.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"h\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1]\n[replay]\ndir = \"{}\"\n",
            replay.display()
        ),
    )
    .expect("write");
    let (ok, err) = run(Command::new(bin("coord")).arg("sweep").arg(&file).args(["--coordinator", &plain]));
    assert!(!ok && err.contains("hint:") && err.contains("https://"), "coord sweep, plain text to TLS: {err}");
    let (ok, err) =
        run(Command::new(bin("coord")).args(["sweeps", "--coordinator", &url, "--tls-ca"]).arg(pki.dir.join("ca.pem")));
    // (The refusal comes after the handshake under TLS 1.3: the client sees an alert or a closed connection.)
    assert!(!ok && err.contains("hint:") && err.contains("client certificate"), "no client certificate: {err}");
    let (ok, err) = run(Command::new(bin("coord"))
        .args(["sweeps", "--coordinator", &url, "--tls-ca"])
        .arg(other.dir.join("ca.pem"))
        .args(["--tls-cert", &pki.path("operator.pem"), "--tls-key", &pki.path("operator-key.pem")]));
    assert!(!ok && err.contains("not signed by a CA this client trusts"), "wrong CA: {err}");

    // An agent dialling the TLS coordinator in plain text logs what to do (and keeps trying).
    let mut plain_agent = Command::new(bin("agent"))
        .args(["--coordinator", &plain, "--name", "agent-a", "--spool-dir"])
        .arg(tmp.path().join("plain-agent"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    let stderr = plain_agent.stderr.take().expect("stderr");
    let hint = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("control stream") && l.contains("https://") && l.contains("--tls-ca"))
    });
    let found = tokio::time::timeout(Duration::from_secs(20), hint).await;
    let _ = plain_agent.kill();
    let _ = plain_agent.wait();
    assert!(matches!(found, Ok(Ok(Some(_)))), "the plain-text agent never said to use https:// and --tls-ca");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_needs_insecure_and_certificates_reload_when_their_files_change() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Neither TLS nor --insecure: refused at start, saying how to do either.
    let (ok, err) = run(Command::new(bin("coord"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"])
        .arg(tmp.path().join("d0")));
    assert!(!ok && err.contains("--tls-cert, --tls-key and --client-ca") && err.contains("--insecure"), "{err}");
    // --insecure: served, with a warning.
    let c = Coord::start(&tmp.path().join("d1"), "127.0.0.1:0", &[]).expect("insecure coord");
    assert!(c.serving_line.contains("plain text (--insecure)"), "{}", c.serving_line);
    drop(c);

    // TLS with the first set; then the files are replaced by a second set (another CA).
    let first = Pki::init(&tmp.path().join("first"), &[]).expect("first");
    let second = Pki::init(&tmp.path().join("second"), &[]).expect("second");
    let live = Pki::init(&tmp.path().join("live"), &[]).expect("live");
    for f in ["coordinator.pem", "coordinator-key.pem", "ca.pem"] {
        std::fs::copy(first.dir.join(f), live.dir.join(f)).expect("copy");
    }
    let coord = Coord::start(&tmp.path().join("d2"), "127.0.0.1:0", &strs(&live.serve_flags())).expect("tls coord");
    let url = https_url(&coord.addr);
    let op = Some(("operator.pem", "operator-key.pem"));
    let ask = |pki: &Pki| {
        let url = url.clone();
        let dir = pki.dir.clone();
        async move {
            let ch = Pki { dir }.channel(&url, op).await?;
            SweepsClient::new(ch).list_agents(ListAgentsRequest {}).await?;
            anyhow::Ok(())
        }
    };
    ask(&first).await.expect("the first set is served");
    for f in ["coordinator.pem", "coordinator-key.pem", "ca.pem"] {
        // Written whole, then renamed over the old file, as a secret mount updates.
        let tmpf = live.dir.join(format!("{f}.new"));
        std::fs::copy(second.dir.join(f), &tmpf).expect("copy");
        std::fs::rename(&tmpf, live.dir.join(f)).expect("rename");
    }
    let t0 = Instant::now();
    while ask(&second).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the new certificates were not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ask(&first).await.is_err(), "the old CA's clients are no longer accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_3_is_spoken() {
    use rustls_pki_types::pem::PemObject;
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki"), &[]).expect("certificates");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &strs(&pki.serve_flags())).expect("coord");
    let handshake = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let (pki_dir, addr) = (pki.dir.clone(), coord.addr.clone());
        async move {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_file_iter(pki_dir.join("ca.pem"))? {
                roots.add(c?)?;
            }
            let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(pki_dir.join("operator.pem"))?
                .collect::<Result<_, _>>()?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki_dir.join("operator-key.pem"))?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?;
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await?;
            anyhow::Ok(tls.get_ref().1.protocol_version())
        }
    };
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    let v13 = handshake(&TLS13).await.expect("TLS 1.3 is served");
    assert_eq!(v13, Some(rustls::ProtocolVersion::TLSv1_3));
    let e = handshake(&TLS12).await.expect_err("TLS 1.2 is refused");
    assert!(format!("{e:#}").to_lowercase().contains("protocol"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_picks_up_rotated_certificates_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let first = Pki::init(&tmp.path().join("first"), &["agent-a"]).expect("first");
    let second = Pki::init(&tmp.path().join("second"), &["agent-a"]).expect("second");
    let live = Pki { dir: tmp.path().join("live") };
    let files = ["coordinator.pem", "coordinator-key.pem", "ca.pem", "agents/agent-a.pem", "agents/agent-a-key.pem"];
    let install = |from: &Pki| {
        std::fs::create_dir_all(live.dir.join("agents")).expect("mkdir");
        for f in files {
            // Written whole, then renamed over the old file, as a secret volume is updated.
            let tmpf = live.dir.join(format!("{f}.new"));
            std::fs::copy(from.dir.join(f), &tmpf).expect("copy");
            std::fs::rename(&tmpf, live.dir.join(f)).expect("rename");
        }
    };
    install(&first);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let data = tmp.path().join("coord");
    let coord = Coord::start(&data, &addr, &strs(&live.serve_flags())).expect("coord");
    let url = https_url(&coord.addr);
    let _agent =
        agent_with(&url, "agent-a", &tmp.path().join("a"), &strs(&live.agent_flags("agent-a"))).expect("agent");
    let connected = |pki: &Pki| {
        let (dir, url) = (pki.dir.clone(), url.clone());
        async move {
            let ch = Pki { dir }.channel(&url, Some(("operator.pem", "operator-key.pem"))).await?;
            let r = SweepsClient::new(ch).list_agents(ListAgentsRequest {}).await?.into_inner();
            anyhow::Ok(r.agents.iter().any(|a| a.connected))
        }
    };
    let t0 = Instant::now();
    while !connected(&first).await.unwrap_or(false) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the agent did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both sides' files rotate to another CA; the coordinator restarts (its connections drop) and the
    // agent, still running, reconnects with its new files.
    install(&second);
    drop(coord);
    let _coord = Coord::start(&data, &addr, &strs(&live.serve_flags())).expect("restart");
    let t0 = Instant::now();
    while !connected(&second).await.unwrap_or(false) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the agent did not reconnect with its rotated certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_may_use_a_token_instead_of_a_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki"), &["agent-a"]).expect("certificates");
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "# operators\nalice 0123456789abcdef0123456789\n").expect("tokens");
    let mut flags = pki.serve_flags();
    flags.extend(["--operator-tokens".to_string(), tokens.display().to_string()]);
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &strs(&flags)).expect("coord");
    let url = https_url(&coord.addr);
    let _a = agent_with(&url, "agent-a", &tmp.path().join("a"), &strs(&pki.agent_flags("agent-a"))).expect("agent");
    let operator = pki.channel(&url, Some(("operator.pem", "operator-key.pem"))).await.expect("operator");
    wait_connected(&mut SweepsClient::new(operator), 1).await;
    let token = tmp.path().join("alice.token");
    std::fs::write(&token, "0123456789abcdef0123456789\n").expect("token");
    let ca = pki.path("ca.pem");
    let cli = |args: &[&str], token_file: &std::path::Path| {
        run(Command::new(bin("coord"))
            .args(args)
            .args(["--coordinator", &url, "--tls-ca", &ca, "--token-file"])
            .arg(token_file))
    };
    // A sweep end to end with the token alone (no client certificate).
    let replay = replay_tree(tmp.path());
    let file = tmp.path().join("s.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"token\"\nmode = \"decode\"\nbackend = \"replay\"\nbatch_sizes = [1, 8]\nprofile_steps = 3\n[replay]\ndir = \"{}\"\n",
            replay.display()
        ),
    )
    .expect("write");
    let out = tmp.path().join("out");
    let (ok, err) = cli(&["sweep", &file.display().to_string(), "--out", &out.display().to_string()], &token);
    assert!(ok, "{err}");
    assert!(out.join("op_times.tsv").exists());
    // A token the coordinator does not know: UNAUTHENTICATED, said so.
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-a-token-of-this-coordinator\n").expect("token");
    let (ok, err) = cli(&["sweeps"], &wrong);
    assert!(!ok && err.contains("the operator token is not one of this coordinator's"), "{err}");
    assert!(err.contains("hint: check the token file"), "{err}");
    // No raw gRPC debug text in what people read.
    assert!(!err.contains("code: '") && !err.contains("source: Some"), "{err}");
    // Neither token nor certificate: UNAUTHENTICATED.
    let (ok, err) = run(Command::new(bin("coord")).args(["sweeps", "--coordinator", &url, "--tls-ca", &ca]));
    assert!(!ok && err.contains("no client certificate or operator token"), "{err}");
    // A token never makes an agent.
    let ch = pki.channel(&url, None).await.expect("channel");
    let mut control = AgentControlClient::with_interceptor(ch, |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", "Bearer 0123456789abcdef0123456789".parse().expect("header"));
        Ok(r)
    });
    let e = control.session(hello_stream("alice", "t")).await.expect_err("a token holder is not an agent");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_name_takes_its_certificates() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&tmp.path().join("pki"), &["gpu-node-7"]).expect("certificates");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &strs(&pki.serve_flags())).expect("coord");
    let url = https_url(&coord.addr);
    let mut child = Command::new(bin("agent"))
        .args(["--coordinator", &url, "--spool-dir"])
        .arg(tmp.path().join("spool"))
        .args(pki.agent_flags("gpu-node-7"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    let ch = pki.channel(&url, Some(("operator.pem", "operator-key.pem"))).await.expect("operator");
    let mut op = SweepsClient::new(ch);
    let t0 = Instant::now();
    loop {
        let agents = op.list_agents(ListAgentsRequest {}).await.expect("list").into_inner().agents;
        if agents.iter().any(|a| a.connected && a.inventory.as_ref().is_some_and(|i| i.host == "gpu-node-7")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no agent named after its certificate: {agents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
