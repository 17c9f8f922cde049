//! Who may call what. Under mutual TLS every caller has a certificate signed by the client CA; its subject
//! names it (Common Name) and gives its roles (Organization `tracefleet:agent`, `tracefleet:operator`; a
//! certificate may carry both), as Kubernetes reads user and groups from client certificates. A tower
//! layer in front of every service checks the role each method needs before the method runs, and hands
//! the caller to the method in the request's extensions ([`Caller`]); a method not listed is refused.
//!
//! | methods | role |
//! |---|---|
//! | `AgentControl/Session`, `TraceUpload/*` | agent (and the name in the call must be the certificate's) |
//! | `Sweeps/Submit`, `Cancel`, `FetchResults`, `FetchTraces`, `DeleteSweep` | operator |
//! | `Sweeps/Status`, `Watch`, `ListSweeps`, `ListAgents` | agent or operator |
//! | `grpc.health.v1.Health/*` | anyone with a valid certificate |
//!
//! With `--operator-tokens`, a call may instead carry `authorization: Bearer TOKEN`: a token of the file
//! gives the operator role (never the agent's) under the token's name. Without TLS (`coord serve
//! --insecure`) nobody is identified and every call is allowed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::state::OperatorTokens;

/// The Organization value that makes a certificate an agent's.
pub const AGENT_ROLE: &str = "tracefleet:agent";
/// The Organization value that makes a certificate an operator's.
pub const OPERATOR_ROLE: &str = "tracefleet:operator";

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Plain text, nobody identified, everything allowed (`--insecure`).
    Insecure,
    /// Mutual TLS: roles from client certificates.
    MutualTls,
}

/// The authenticated caller, in the request's extensions under mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's Common Name: an agent's name, an operator's user name.
    pub name: String,
    /// Has the agent role.
    pub agent: bool,
    /// Has the operator role.
    pub operator: bool,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Agent,
    Operator,
    AgentOrOperator,
    Anyone,
}

/// The role a gRPC method (`/package.Service/Method`) needs; `None` for methods this server does not list.
fn need_of(path: &str) -> Option<Need> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("tracefleet.v1.AgentControl", _) | ("tracefleet.v1.TraceUpload", _) => Need::Agent,
        ("tracefleet.v1.Sweeps", "Submit" | "Cancel" | "FetchResults" | "FetchTraces" | "DeleteSweep") => {
            Need::Operator
        }
        ("tracefleet.v1.Sweeps", "Status" | "Watch" | "ListSweeps" | "ListAgents") => Need::AgentOrOperator,
        ("grpc.health.v1.Health", _) => Need::Anyone,
        _ => return None,
    })
}

/// The caller a client certificate (DER) names.
///
/// # Errors
/// The certificate does not parse, or has no Common Name.
pub fn caller_of(cert_der: &[u8]) -> Result<Caller, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the client certificate has no Common Name (CN) to name its holder")?
        .to_string();
    let orgs: Vec<&str> = subject.iter_organization().filter_map(|o| o.as_str().ok()).collect();
    Ok(Caller { name, agent: orgs.contains(&AGENT_ROLE), operator: orgs.contains(&OPERATOR_ROLE) })
}

/// The bearer token of a request's `authorization` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Decides a call: the caller to hand on (`None` under `--insecure`), or the refusal.
fn authorize(
    mode: AuthMode,
    tokens: Option<&OperatorTokens>,
    path: &str,
    headers: &http::HeaderMap,
    ext: &http::Extensions,
) -> Result<Option<Caller>, Status> {
    if mode == AuthMode::Insecure {
        return Ok(None);
    }
    let need = need_of(path).ok_or_else(|| Status::permission_denied(format!("{path} is not served here")))?;
    let cert =
        ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.peer_certs()).and_then(|c| c.first().cloned());
    let by_token = match (bearer(headers), tokens) {
        (Some(t), Some(tokens)) => Some(
            tokens
                .name_of(t)
                .ok_or_else(|| Status::unauthenticated("the operator token is not one of this coordinator's"))?,
        ),
        (Some(_), None) => return Err(Status::unauthenticated("this coordinator takes no operator tokens")),
        (None, _) => None,
    };
    let mut caller = match (cert, by_token) {
        (Some(cert), _) => caller_of(&cert).map_err(Status::unauthenticated)?,
        (None, Some(name)) => Caller { name, agent: false, operator: false },
        (None, None) => {
            return Err(Status::unauthenticated(
                "no client certificate or operator token: agents and operators connect with --tls-cert and \
                 --tls-key (operators may use --token-file instead where the coordinator takes tokens)",
            ));
        }
    };
    // A valid token makes its bearer an operator (never an agent).
    caller.operator |= bearer(headers).is_some();
    let allowed = match need {
        Need::Anyone => true,
        Need::Agent => caller.agent,
        Need::Operator => caller.operator,
        Need::AgentOrOperator => caller.agent || caller.operator,
    };
    if !allowed {
        let role = match need {
            Need::Agent => AGENT_ROLE,
            Need::Operator => OPERATOR_ROLE,
            _ => "tracefleet:agent or tracefleet:operator",
        };
        return Err(Status::permission_denied(format!(
            "{path} needs the {role} role; the certificate of {:?} does not carry it (its Organization)",
            caller.name
        )));
    }
    Ok(Some(caller))
}

/// The caller of a request under mutual TLS; `None` under `--insecure`.
pub fn caller<T>(req: &tonic::Request<T>) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// Checks that the name a call acts as (an agent's `--name`, an upload's host) is the caller's own.
///
/// # Errors
/// PERMISSION_DENIED naming both names.
pub fn check_acts_as(caller: Option<&Caller>, what: &str, name: &str) -> Result<(), Status> {
    match caller {
        Some(c) if c.name != name => Err(Status::permission_denied(format!(
            "{what} {name:?} is not the certificate's identity {:?}: an agent acts only under its own name",
            c.name
        ))),
        _ => Ok(()),
    }
}

/// The tower layer that authorizes every call (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    /// How callers are authenticated.
    pub mode: AuthMode,
    /// Operator tokens, when the coordinator takes them.
    pub tokens: Option<Arc<OperatorTokens>>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, mode: self.mode, tokens: self.tokens.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    mode: AuthMode,
    tokens: Option<Arc<OperatorTokens>>,
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(self.mode, self.tokens.as_deref(), req.uri().path(), req.headers(), req.extensions()) {
            Ok(caller) => {
                if let Some(c) = caller {
                    req.extensions_mut().insert(c);
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_listed_and_others_are_not() {
        assert_eq!(need_of("/tracefleet.v1.Sweeps/Submit"), Some(Need::Operator));
        assert_eq!(need_of("/tracefleet.v1.Sweeps/ListAgents"), Some(Need::AgentOrOperator));
        assert_eq!(need_of("/tracefleet.v1.TraceUpload/Write"), Some(Need::Agent));
        assert_eq!(need_of("/tracefleet.v1.Sweeps/Unknown"), None);
        assert_eq!(need_of("/grpc.reflection.v1.ServerReflection/Info"), None);
        assert_eq!(need_of("nonsense"), None);
    }

    #[test]
    fn insecure_mode_lets_everything_through_unidentified() {
        let (ext, headers) = (http::Extensions::new(), http::HeaderMap::new());
        let submit = "/tracefleet.v1.Sweeps/Submit";
        assert_eq!(authorize(AuthMode::Insecure, None, submit, &headers, &ext).ok(), Some(None));
        let refused = authorize(AuthMode::MutualTls, None, submit, &headers, &ext);
        assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::Unauthenticated));
    }
}
