//! `coord serve` answers the standard gRPC health check (`grpc.health.v1.Health/Check`, what
//! `grpc_health_probe` and Kubernetes' gRPC probes call) for the whole server and each service.

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracefleet_tests::procs::Coord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_serve_answers_grpc_health_checks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", coord.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut c = HealthClient::new(channel);
    for service in ["", "tracefleet.v1.Sweeps", "tracefleet.v1.AgentControl", "tracefleet.v1.TraceUpload"] {
        let r = c.check(HealthCheckRequest { service: service.into() }).await.expect("check").into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = c.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.map_err(|s| s.code()).err(), Some(tonic::Code::NotFound));
}

#[test]
fn metrics_answer_on_their_path_only_with_histograms() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &[]).expect("coord");
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&coord.metrics).expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let ok = get("/metrics");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("tracefleet_uploads_completed_total 0"), "{ok}");
    assert!(ok.contains("# TYPE tracefleet_trace_parse_seconds histogram"), "{ok}");
    assert!(ok.contains("# TYPE tracefleet_upload_ack_seconds histogram"), "{ok}");
    assert!(ok.contains("tracefleet_agents_connected 0"), "{ok}");
    assert!(ok.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    for path in ["/", "/metricsx", "/favicon.ico"] {
        let r = get(path);
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
    }
}

/// With mutual TLS, `--health-listen` serves grpc.health.v1 alone in plain text, for Kubernetes' gRPC
/// probes (which present no client certificate); nothing else is reachable there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_health_port_beside_mutual_tls_answers_the_health_check_only() {
    use tracefleet_proto::v1::sweeps_client::SweepsClient;
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = tracefleet_tests::pki::Pki::init(&tmp.path().join("pki"), &["agent-a"]).expect("certificates");
    let health_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };
    let mut flags = pki.serve_flags();
    flags.extend(["--health-listen".to_string(), health_addr.clone()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _coord = Coord::start(&tmp.path().join("coord"), "127.0.0.1:0", &flags).expect("coord");
    let channel = async {
        for _ in 0..100 {
            if let Ok(c) =
                tonic::transport::Channel::from_shared(format!("http://{health_addr}")).expect("url").connect().await
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the health port never opened");
    }
    .await;
    let r = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("plain-text health check")
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);
    let sweeps = SweepsClient::new(channel).list_sweeps(tracefleet_proto::v1::ListSweepsRequest::default()).await;
    assert_eq!(
        sweeps.map_err(|s| s.code()).err(),
        Some(tonic::Code::Unimplemented),
        "only the health check is served there"
    );
}
