//! A TCP proxy for fault tests: forwards loopback connections to an upstream address and, once, cuts
//! every open connection after a given number of client-to-server bytes (as a dropped link would).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A running proxy.
pub struct Proxy {
    /// Address to connect to.
    pub addr: String,
    /// Client-to-server bytes forwarded.
    pub forwarded: Arc<AtomicU64>,
    /// Whether the cut happened.
    pub cut: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy to `upstream` that cuts once after `cut_after` client-to-server bytes.
    pub fn start(upstream: &str, cut_after: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (f, c, up) = (forwarded.clone(), cut.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&up) else { continue };
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        open.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                    }
                }
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                let (f1, cut1, open1) = (f.clone(), c.clone(), open.clone());
                // client -> server, counted, cut once past the budget
                std::thread::spawn(move || pump(client, server, Some((f1, cut1, open1, cut_after))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Ok(Self { addr, forwarded, cut })
    }
}

type Budget = (Arc<AtomicU64>, Arc<AtomicBool>, Arc<Mutex<Vec<TcpStream>>>, u64);

fn pump(mut from: TcpStream, mut to: TcpStream, budget: Option<Budget>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((count, cut, open, limit)) = &budget {
            let total = count.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total > *limit && !cut.swap(true, Ordering::SeqCst) {
                // Drop every connection mid-stream, without forwarding this piece.
                for s in open.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
