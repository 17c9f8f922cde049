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
