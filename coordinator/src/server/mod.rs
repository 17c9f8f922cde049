//! The gRPC server (agent control, trace upload, sweeps) and the Prometheus endpoint: thin adapters over
//! the shared state (`state`), the scheduler (`schedule`) and the parse pool (`parse`).

pub mod auth;
mod control;
mod metrics;
mod sweeps;
pub mod tls;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;
use tracefleet_common::wire::MAX_MESSAGE_BYTES;
use tracefleet_proto::v1::agent_control_server::AgentControlServer;
use tracefleet_proto::v1::sweeps_server::SweepsServer;
use tracefleet_proto::v1::trace_upload_server::TraceUploadServer;

use crate::schedule::ScheduleError;
use crate::state::Coordinator;
use crate::store::StoreError;

/// Maps a store error to a gRPC status.
pub fn internal(e: StoreError) -> Status {
    Status::internal(e.to_string())
}

impl From<ScheduleError> for Status {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid(m) => Status::invalid_argument(m),
            ScheduleError::NoAgent(m) => Status::failed_precondition(m),
            ScheduleError::NotFound(m) => Status::not_found(m),
            other => Status::internal(other.to_string()),
        }
    }
}

/// Serves gRPC on `listener` (and metrics on `metrics`, and the plain-text health check alone on
/// `health_listener`) until the process is stopped.
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    health_listener: Option<tokio::net::TcpListener>,
) -> anyhow::Result<()> {
    // grpc.health.v1: the whole server and each service are NOT_SERVING until the store is open (it is,
    // by now) and the parse pool runs with its queue refilled from the store.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    crate::parse::start(&coord)?;
    health.set_serving::<AgentControlServer<control::Control>>().await;
    health.set_serving::<TraceUploadServer<upload::Upload>>().await;
    health.set_serving::<SweepsServer<sweeps::SweepService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    if let Some(l) = metrics_listener {
        tokio::spawn(metrics::serve(coord.clone(), l));
    }
    if let Some(l) = health_listener {
        // grpc.health.v1 alone, in plain text and without authentication: Kubernetes' gRPC probes present
        // no client certificate. It says only whether the coordinator serves.
        let health = health_service.clone();
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await;
            if let Err(e) = r {
                tracing::error!("the health check listener stopped: {e}");
            }
        });
    }
    tokio::spawn(control::watchdog(coord.clone()));
    if let Some(tokens) = coord.cfg.operator_tokens.clone() {
        // The token file is read again when it changes (as the certificates are).
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tls::RELOAD_EVERY).await;
                match tokens.reload_if_changed() {
                    Ok(true) => tracing::info!("operator tokens reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("reloading the operator tokens: {e}; the previous ones stay in use"),
                }
            }
        });
    }
    let control = AgentControlServer::new(control::Control(coord.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let upload = TraceUploadServer::new(upload::Upload(coord.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = SweepsServer::new(sweeps::SweepService(coord.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mode = if coord.cfg.tls.is_some() { auth::AuthMode::MutualTls } else { auth::AuthMode::Insecure };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        // Streams one connection may open at once: uploads run a few per agent, and the per-agent and
        // global upload limits answer the rest.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(auth::AuthLayer { mode, tokens: coord.cfg.operator_tokens.clone() })
        .add_service(health_service)
        .add_service(control)
        .add_service(upload)
        .add_service(sweeps);
    match &coord.cfg.tls {
        Some(files) => {
            let cfg = files.load()?;
            router.serve_with_incoming(tls::incoming(listener, files.clone(), cfg)).await?;
        }
        None => {
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await?;
        }
    }
    Ok(())
}

/// HTTP/2 streams one connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// Binds a listener, resolving `host:port`.
pub async fn bind(addr: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let a = l.local_addr()?;
    Ok((l, a))
}
