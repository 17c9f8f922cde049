//! Errors a user meets say what happened and what to do: an unreachable coordinator, a second agent
//! with a name in use, a data dir or spool already in use by another process; a closed pipe ends quietly.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracefleet_tests::bin;
use tracefleet_tests::procs::{Coord, agent, wait_agents};

/// Waits (bounded) for a process that must exit by itself; returns its status and stderr.
fn exits(mut child: Child) -> (std::process::ExitStatus, String) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
}

#[test]
fn an_unreachable_coordinator_says_why_and_what_to_do() {
    let o = Command::new(bin("coord")).args(["status", "--coordinator", "127.0.0.1:1"]).output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(
            "cannot reach the coordinator at 127.0.0.1:1: nothing listens there; start one with `coord serve`"
        ),
        "{err}"
    );
}

#[test]
fn https_without_a_ca_says_what_it_needs_and_how_to_dial_a_plain_text_coordinator() {
    // No TLS settings for an https:// address: refused once connected, before any byte is sent, whatever
    // listens there (here a socket that never answers).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let o = Command::new(bin("coord")).args(["status", "--coordinator", &url]).output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("an https:// address needs --tls-ca")
            && err.contains("a coordinator started with --insecure is dialled as http:// or HOST:PORT"),
        "{err}"
    );
    // The transport's cause once, not "X: X".
    assert!(err.matches("Connecting to HTTPS without TLS enabled").count() == 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_or_a_folder_in_use_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("coord");
    let coord = Coord::start(&data, "127.0.0.1:0", &[]).expect("coord");
    let _a = agent(&coord.addr, "same", &tmp.path().join("a")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");

    // A second agent process under the same name.
    let (status, err) = exits(spawn(
        Command::new(bin("agent"))
            .args(["--coordinator", &coord.addr, "--name", "same", "--spool-dir"])
            .arg(tmp.path().join("b")),
    ));
    assert!(!status.success(), "{err}");
    assert!(err.contains("agent name \"same\" is in use by another agent process"), "{err}");

    // A second agent on the first one's spool.
    let (status, err) = exits(spawn(
        Command::new(bin("agent"))
            .args(["--coordinator", &coord.addr, "--name", "other", "--spool-dir"])
            .arg(tmp.path().join("a")),
    ));
    assert!(!status.success(), "{err}");
    assert!(err.contains("is in use by another agent process") && err.contains("another --spool-dir"), "{err}");

    // A second coordinator on the first one's data dir.
    let (status, err) = exits(spawn(
        Command::new(bin("coord"))
            .args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"])
            .arg(&data),
    ));
    assert!(!status.success(), "{err}");
    assert!(err.contains("is in use by another coord process"), "{err}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // A table longer than a pipe's buffer, read 10 bytes of.
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("wide.json");
    let events: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"ph":"X","cat":"cpu_op","name":"op_{i}","pid":1,"tid":1,"ts":{},"dur":1}}"#, i * 2))
        .collect();
    std::fs::write(&f, format!(r#"{{"traceEvents":[{}]}}"#, events.join(","))).expect("write");
    let mut child = Command::new(bin("coord"))
        .arg("analyze")
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut head = [0u8; 10];
    child.stdout.as_mut().expect("stdout").read_exact(&mut head).expect("read");
    drop(child.stdout.take());
    let (status, err) = exits(child);
    assert!(status.success(), "{err}");
    assert!(err.is_empty(), "{err}");
}
