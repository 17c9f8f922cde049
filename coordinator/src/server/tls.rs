//! Mutual TLS for the gRPC port (the settings: [`TlsFiles::load`]): handshakes off the accept loop, and
//! the certificate, key and CA files read again when they change
//! (checked every [`RELOAD_EVERY`]): new connections use the new files, open ones keep theirs. A reload that
//! fails (a half-written file, a key that does not match) is logged and the previous files stay in use.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::state::TlsFiles;

/// How often the files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// Accepts connections on `listener` and completes their TLS handshakes (each in its own task, within
/// [`HANDSHAKE_TIMEOUT`], so a slow client holds up no one); yields the established streams. A failed
/// handshake is logged with the peer's address and, for the usual mistakes, what to do.
pub fn incoming(
    listener: TcpListener,
    files: TlsFiles,
    initial: Arc<ServerConfig>,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let current = Arc::new(RwLock::new(initial));
    tokio::spawn(reload(files, current.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            // A flood of connections that never finish their handshake holds at most this many tasks.
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return; // the server stopped
            }
            let cfg = current.read().unwrap_or_else(|e| e.into_inner()).clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(cfg).accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::warn!("TLS handshake with {peer} failed: {}", explain_handshake(&e)),
                    Err(_) => tracing::debug!("no TLS handshake from {peer} within {HANDSHAKE_TIMEOUT:?}"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A handshake error, with the likely cause for the ones people meet.
fn explain_handshake(e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("CorruptMessage") || text.contains("InvalidContentType") || text.contains("corrupt") {
        " (a plain-text client? this coordinator requires TLS: dial https:// with a client certificate)"
    } else if text.contains("NoCertificatesPresented") || text.contains("no certificates") {
        " (the client sent no certificate: agents and operators need --tls-cert and --tls-key)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (the client's certificate is not signed by --client-ca)"
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        " (the client's certificate is out of its validity period)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Re-reads the files when they change, forever.
async fn reload(files: TlsFiles, current: Arc<RwLock<Arc<ServerConfig>>>) {
    let mut seen = files.fingerprint();
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = files.fingerprint();
        if now.is_none() || now == seen {
            continue;
        }
        match files.load() {
            Ok(cfg) => {
                *current.write().unwrap_or_else(|e| e.into_inner()) = cfg;
                seen = now;
                tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded");
            }
            // Tried again at the next check: a file may be half written.
            Err(e) => tracing::error!("reloading the TLS certificates: {e}; the previous ones stay in use"),
        }
    }
}
