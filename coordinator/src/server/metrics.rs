//! Prometheus metrics over HTTP: `GET /metrics` answers the registry in the OpenMetrics text format;
//! any other path is 404.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::state::Coordinator;

/// The OpenMetrics text of the registry, with the gauges that mirror the state set first.
pub fn render(coord: &Coordinator) -> String {
    let m = &coord.metrics;
    m.parse_queue_depth.set(coord.parse_queue.len() as i64);
    m.agents_connected.set(coord.agents().len() as i64);
    m.uploads_in_flight.set((coord.cfg.max_inflight_uploads - coord.upload_slots.available_permits()) as i64);
    let secs = m.parse_seconds_total.get();
    m.parse_mb_per_second.set(if secs > 0.0 { m.parsed_bytes.get() as f64 / 1e6 / secs } else { 0.0 });
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

fn answer(coord: &Coordinator, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut r = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(render(coord))));
        if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    } else {
        Response::new(Full::new(Bytes::from_static(b"not found: the metrics are at GET /metrics\n")))
    };
    if req.uri().path() != "/metrics" || req.method() != Method::GET {
        *r.status_mut() = StatusCode::NOT_FOUND;
    }
    r
}

/// Serves the metrics on `listener` (HTTP/1.1) until the process ends.
pub async fn serve(coord: Arc<Coordinator>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else { continue };
        let coord = coord.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&coord, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // One request per connection (a scrape every few seconds needs no more); a client that goes
            // away mid-request is no error of ours.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}
