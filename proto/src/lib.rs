//! Wire types of tracefleet, generated from the `.proto` files under `proto/proto`.
//!
//! The package is versioned (`tracefleet.v1`); every message is documented in its `.proto` file.

// The library surface other crates build on: every public item says what it is.
#![warn(missing_docs)]

/// `tracefleet.v1`: inventory, control, upload and sweep messages.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tracefleet.v1.rs"));
}

use std::time::Duration;

use tracefleet_common::sweep::{Mode, Placement};

/// `host:port` → `http://host:port`; a URL with a scheme stays as it is.
pub fn url(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}

/// What a client trusts and presents over TLS (PEM bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificate(s) that sign the coordinator's certificate.
    pub ca: Option<Vec<u8>>,
    /// This client's certificate chain and private key, for a coordinator that requires one (mutual
    /// TLS: agents and operators).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }
}

/// The endpoint of a coordinator at `addr` (`host:port`, `http://...` or `https://...`), as the agent
/// and the CLI dial it: a 5 s connect timeout, HTTP/2 keep-alives every 10 s (a dead peer is noticed in
/// 20 s), and TLS with `tls`'s CA and client certificate when given.
///
/// # Errors
/// `addr` is not a valid URI, or the TLS settings are refused.
pub fn endpoint(addr: &str, tls: &ClientTls) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let mut e = tonic::transport::Endpoint::from_shared(url(addr))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if tls.is_set() {
        let mut cfg = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        e = e.tls_config(cfg)?;
    }
    Ok(e)
}

/// What to do about a failed connection or call, for the mistakes people make with TLS and identities,
/// read from the error's whole text (its chain) and its gRPC code when there is one; `None` when the
/// error says enough by itself.
pub fn connection_hint(code: Option<tonic::Code>, text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["frame_size", "frame size", "frame with invalid size"]) {
        // A TLS record read as an HTTP/2 frame: the other side speaks TLS.
        return Some("the coordinator speaks TLS: dial https:// with --tls-ca, --tls-cert and --tls-key");
    }
    if has(&["invalidcontenttype", "corrupt message"]) {
        return Some("the coordinator speaks plain text (it runs with --insecure): dial http://, not https://");
    }
    if has(&["unknownissuer", "unknown issuer", "invalid peer certificate"]) {
        return Some(
            "the coordinator's certificate is not signed by a CA this client trusts: pass --tls-ca with the CA \
             that signed it",
        );
    }
    if has(&["operator token"]) {
        return Some("check the token file against the coordinator's --operator-tokens file");
    }
    if has(&["certificaterequired", "certificate required"]) || code == Some(tonic::Code::Unauthenticated) {
        return Some(
            "the coordinator requires a client certificate: pass --tls-cert and --tls-key (`coord certs init` \
             makes a set to try)",
        );
    }
    if has(&["badcertificate", "bad certificate", "unknownca", "unknown ca", "decrypterror"]) {
        return Some("the coordinator does not accept this client certificate: it must be signed by its --client-ca");
    }
    if code == Some(tonic::Code::PermissionDenied) && t.contains("role") {
        return Some("use a certificate with the role the message names (its Organization)");
    }
    if has(&["operation was canceled", "connection reset", "broken pipe", "connection closed"]) {
        return Some(
            "the coordinator closed the connection: a TLS coordinator needs https://, --tls-ca and a client \
             certificate it accepts (--tls-cert, --tls-key); otherwise it stopped or restarted, or the address \
             is not its gRPC port (the metrics port, say)",
        );
    }
    None
}

/// The sweep file's mode on the wire.
impl From<Mode> for v1::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Decode => v1::Mode::Decode,
            Mode::Prefill => v1::Mode::Prefill,
        }
    }
}

impl v1::Mode {
    /// The mode, or `None` for `MODE_UNSPECIFIED` (a message from a sender that did not set it).
    pub fn known(self) -> Option<Mode> {
        match self {
            v1::Mode::Unspecified => None,
            v1::Mode::Decode => Some(Mode::Decode),
            v1::Mode::Prefill => Some(Mode::Prefill),
        }
    }
}

impl v1::Point {
    /// The point's mode as folder names, drivers and command templates write it (`decode`, `prefill`;
    /// `unknown` when unspecified, which the coordinator refuses at submission).
    pub fn mode_name(&self) -> &'static str {
        tracefleet_common::aggregate::mode_label::name(self.mode().known())
    }
}

/// The sweep file's placement on the wire.
impl From<Placement> for v1::Placement {
    fn from(p: Placement) -> Self {
        match p {
            Placement::Spread => v1::Placement::Spread,
            Placement::Each => v1::Placement::Each,
        }
    }
}

/// `PLACEMENT_UNSPECIFIED` reads as spread, as the proto documents.
impl From<v1::Placement> for Placement {
    fn from(p: v1::Placement) -> Self {
        match p {
            v1::Placement::Unspecified | v1::Placement::Spread => Placement::Spread,
            v1::Placement::Each => Placement::Each,
        }
    }
}

impl v1::SweepState {
    /// Whether the sweep has ended (completed, failed or cancelled); `UNSPECIFIED` has not.
    pub fn ended(self) -> bool {
        matches!(self, v1::SweepState::Completed | v1::SweepState::Failed | v1::SweepState::Cancelled)
    }

    /// The state in lower case (`running`, `completed`, ...), as `coord status` prints it and the state
    /// database stores it; `None` for `UNSPECIFIED`.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            v1::SweepState::Unspecified => return None,
            v1::SweepState::Running => "running",
            v1::SweepState::Completed => "completed",
            v1::SweepState::Failed => "failed",
            v1::SweepState::Cancelled => "cancelled",
        })
    }

    /// The inverse of [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Self> {
        [v1::SweepState::Running, v1::SweepState::Completed, v1::SweepState::Failed, v1::SweepState::Cancelled]
            .into_iter()
            .find(|st| st.name() == Some(s))
    }

    /// The event that announces a sweep's end in this state; `None` while it runs.
    pub fn end_event(self) -> Option<v1::SweepEventKind> {
        match self {
            v1::SweepState::Completed => Some(v1::SweepEventKind::Completed),
            v1::SweepState::Failed => Some(v1::SweepEventKind::Failed),
            v1::SweepState::Cancelled => Some(v1::SweepEventKind::Cancelled),
            v1::SweepState::Unspecified | v1::SweepState::Running => None,
        }
    }
}

impl v1::SweepEventKind {
    /// Whether the event ends a sweep (the last event of a `Watch`).
    pub fn ends_sweep(self) -> bool {
        matches!(self, v1::SweepEventKind::Completed | v1::SweepEventKind::Failed | v1::SweepEventKind::Cancelled)
    }
}

/// Messages that coordinators before the enum fields stored with string fields: reading one moves the
/// strings into the enums, so a sweep submitted before an upgrade reads the same after it.
pub trait UpgradeLegacy {
    /// Fills each enum field that is unspecified from its legacy string field, when that names a value.
    fn upgrade_legacy(&mut self);
}

/// Decodes a message stored by any coordinator version, with its legacy fields moved into the enums:
/// the one way stored specs and assignments are read.
///
/// # Errors
/// The bytes are not a valid encoding of `M`.
pub fn decode_stored<M: prost::Message + Default + UpgradeLegacy>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    let mut m = M::decode(bytes)?;
    m.upgrade_legacy();
    Ok(m)
}

#[allow(deprecated)] // reading the legacy fields is the point
impl UpgradeLegacy for v1::Point {
    fn upgrade_legacy(&mut self) {
        if self.mode() == v1::Mode::Unspecified
            && let Ok(m) = self.legacy_mode.parse::<Mode>()
        {
            self.set_mode(m.into());
        }
        self.legacy_mode.clear();
    }
}

#[allow(deprecated)]
impl UpgradeLegacy for v1::SweepSpec {
    fn upgrade_legacy(&mut self) {
        if self.mode() == v1::Mode::Unspecified
            && let Ok(m) = self.legacy_mode.parse::<Mode>()
        {
            self.set_mode(m.into());
        }
        if self.placement() == v1::Placement::Unspecified
            && let Ok(p) = self.legacy_placement.parse::<Placement>()
        {
            self.set_placement(p.into());
        }
        self.legacy_mode.clear();
        self.legacy_placement.clear();
        self.points.iter_mut().for_each(UpgradeLegacy::upgrade_legacy);
    }
}

impl UpgradeLegacy for v1::AssignJob {
    fn upgrade_legacy(&mut self) {
        self.points.iter_mut().for_each(UpgradeLegacy::upgrade_legacy);
    }
}

/// A step's GPU telemetry on the wire and in the engine are the same numbers.
impl From<&tracefleet_common::telemetry::StepTelemetry> for v1::StepTelemetry {
    fn from(t: &tracefleet_common::telemetry::StepTelemetry) -> Self {
        Self {
            samples: t.samples,
            sm_clock_mhz_min: t.sm_clock_mhz_min,
            sm_clock_mhz_max: t.sm_clock_mhz_max,
            mem_clock_mhz_min: t.mem_clock_mhz_min,
            mem_clock_mhz_max: t.mem_clock_mhz_max,
            temperature_c_max: t.temperature_c_max,
            power_w_mean: t.power_w_mean,
            power_w_max: t.power_w_max,
            reasons: t.reasons,
            window_us: t.window_us,
        }
    }
}

impl From<v1::StepTelemetry> for tracefleet_common::telemetry::StepTelemetry {
    fn from(t: v1::StepTelemetry) -> Self {
        Self {
            samples: t.samples,
            sm_clock_mhz_min: t.sm_clock_mhz_min,
            sm_clock_mhz_max: t.sm_clock_mhz_max,
            mem_clock_mhz_min: t.mem_clock_mhz_min,
            mem_clock_mhz_max: t.mem_clock_mhz_max,
            temperature_c_max: t.temperature_c_max,
            power_w_mean: t.power_w_mean,
            power_w_max: t.power_w_max,
            reasons: t.reasons,
            window_us: t.window_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tracefleet_common::telemetry::StepTelemetry;

    use super::{UpgradeLegacy, v1};

    /// The fields of `SweepSpec` and `Point` as coordinators before the enums wrote them: a spec stored
    /// then must read with the same mode and placement now.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldPoint {
        #[prost(string, tag = "1")]
        point_id: String,
        #[prost(string, tag = "2")]
        mode: String,
        #[prost(uint32, tag = "3")]
        batch_size: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct OldSpec {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        points: Vec<OldPoint>,
        #[prost(string, tag = "4")]
        placement: String,
        #[prost(string, tag = "9")]
        mode: String,
    }

    #[test]
    fn a_spec_stored_with_string_fields_reads_with_the_same_mode_and_placement() {
        let old = OldSpec {
            name: "s".into(),
            points: vec![OldPoint { point_id: "p".into(), mode: "prefill".into(), batch_size: 4 }],
            placement: "each".into(),
            mode: "prefill".into(),
        };
        let mut spec = v1::SweepSpec::decode(&old.encode_to_vec()[..]).expect("decodes");
        spec.upgrade_legacy();
        assert_eq!(spec.placement(), v1::Placement::Each);
        assert_eq!(spec.mode(), v1::Mode::Prefill);
        assert_eq!((spec.points[0].mode(), spec.points[0].batch_size), (v1::Mode::Prefill, 4));
        // New data is left as it is.
        let mut new = spec.clone();
        new.upgrade_legacy();
        assert_eq!(new, spec);
    }

    #[test]
    fn sweep_states_round_trip_through_their_names() {
        for st in
            [v1::SweepState::Running, v1::SweepState::Completed, v1::SweepState::Failed, v1::SweepState::Cancelled]
        {
            assert_eq!(st.name().and_then(v1::SweepState::from_name), Some(st));
            assert_eq!(st.ended(), st.end_event().is_some());
        }
        assert_eq!(v1::SweepState::from_name("done"), None);
    }

    #[test]
    fn telemetry_survives_the_wire() {
        let t = StepTelemetry {
            samples: 3,
            sm_clock_mhz_min: 1770,
            sm_clock_mhz_max: 1980,
            mem_clock_mhz_min: 3201,
            mem_clock_mhz_max: 3201,
            temperature_c_max: 46,
            power_w_mean: 301.5,
            power_w_max: 325.4,
            reasons: 0x4,
            window_us: 19_600.0,
        };
        assert_eq!(StepTelemetry::from(super::v1::StepTelemetry::from(&t)), t);
    }
}
