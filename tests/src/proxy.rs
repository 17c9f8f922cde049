//! A TCP proxy for fault tests: forwards loopback connections to an upstream address and misbehaves as a
//! bad link would: it cuts every open connection once after a number of client-to-server bytes
//! ([`Proxy::start`]), or again every so many bytes ([`Proxy::flaky`]), it can partition (drop every
//! connection and refuse new ones until healed: [`Proxy::partition`]), cut every open connection at once
//! ([`Proxy::cut_now`]), hold new connections (accepted, nothing forwarded) until released, as a
//! link that is slow to come back ([`Proxy::hold_new`]), and keep the server's side of a connection open
//! when its client goes away, as a host that died without a word ([`Proxy::silent_client_close`]).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// When the proxy cuts.
#[derive(Debug, Clone, Copy)]
enum Cuts {
    /// Once, past this many client-to-server bytes.
    Once(u64),
    /// Every time this many more client-to-server bytes went through.
    Every(u64),
}

/// State shared by the proxy's threads.
struct Shared {
    cuts: Cuts,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    cut_count: Arc<AtomicU64>,
    /// Bytes forwarded at the last cut.
    last_cut_at: AtomicU64,
    partitioned: AtomicBool,
    /// New connections wait (accepted, nothing forwarded either way) while this is set.
    held: AtomicBool,
    /// A client that goes away leaves its server connection open and silent (no FIN) while this is set.
    silent: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn drop_all(&self) {
        for s in self.open.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Counts `n` forwarded bytes; true when the connections must be cut now (this piece not forwarded).
    fn count(&self, n: u64) -> bool {
        let total = self.forwarded.fetch_add(n, Ordering::SeqCst) + n;
        let due = match self.cuts {
            Cuts::Once(limit) => total > limit && !self.cut.swap(true, Ordering::SeqCst),
            Cuts::Every(every) => {
                let last = self.last_cut_at.load(Ordering::SeqCst);
                total - last > every
                    && self.last_cut_at.compare_exchange(last, total, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            }
        };
        if due {
            self.cut.store(true, Ordering::SeqCst);
            self.cut_count.fetch_add(1, Ordering::SeqCst);
            self.drop_all();
        }
        due
    }
}

/// A running proxy.
pub struct Proxy {
    /// Address to connect to.
    pub addr: String,
    /// Client-to-server bytes forwarded.
    pub forwarded: Arc<AtomicU64>,
    /// Whether a cut happened.
    pub cut: Arc<AtomicBool>,
    /// Cuts so far.
    pub cuts: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts a proxy to `upstream` that cuts once after `cut_after` client-to-server bytes.
    pub fn start(upstream: &str, cut_after: u64) -> std::io::Result<Self> {
        Self::run(upstream, Cuts::Once(cut_after))
    }

    /// Starts a proxy to `upstream` that cuts every open connection each time `every` more
    /// client-to-server bytes went through (a link that keeps dropping).
    pub fn flaky(upstream: &str, every: u64) -> std::io::Result<Self> {
        Self::run(upstream, Cuts::Every(every))
    }

    /// Starts a proxy that forwards faithfully until told otherwise ([`Proxy::partition`]).
    pub fn faithful(upstream: &str) -> std::io::Result<Self> {
        Self::run(upstream, Cuts::Once(u64::MAX))
    }

    /// Partitions the link (every connection dropped, new ones closed at once) or heals it.
    pub fn partition(&self, on: bool) {
        self.shared.partitioned.store(on, Ordering::SeqCst);
        if on {
            self.shared.drop_all();
        }
    }

    /// Cuts every open connection now (new ones are forwarded as before).
    pub fn cut_now(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.cut_count.fetch_add(1, Ordering::SeqCst);
        self.shared.drop_all();
    }

    /// Holds new connections (accepted, nothing forwarded: the client waits for the server's answer) or
    /// releases them, held ones included: their bytes then flow as if the link had been slow.
    pub fn hold_new(&self, on: bool) {
        self.shared.held.store(on, Ordering::SeqCst);
    }

    /// While on, a client that closes its connection (a killed process) leaves the server's side open
    /// and silent: the server hears nothing more, as from a host that died (the proxy keeps the socket).
    pub fn silent_client_close(&self, on: bool) {
        self.shared.silent.store(on, Ordering::SeqCst);
    }

    fn run(upstream: &str, cuts: Cuts) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            cuts,
            forwarded: Arc::new(AtomicU64::new(0)),
            cut: Arc::new(AtomicBool::new(false)),
            cut_count: Arc::new(AtomicU64::new(0)),
            last_cut_at: AtomicU64::new(0),
            partitioned: AtomicBool::new(false),
            held: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let (sh, up) = (shared.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if sh.partitioned.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if sh.held.load(Ordering::SeqCst) {
                    // Held on a thread of its own: later connections are held (or forwarded) too.
                    let (sh, up) = (sh.clone(), up.clone());
                    std::thread::spawn(move || {
                        while sh.held.load(Ordering::SeqCst) && !sh.partitioned.load(Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        forward(&sh, client, &up);
                    });
                    continue;
                }
                forward(&sh, client, &up);
            }
        });
        Ok(Self {
            addr,
            forwarded: shared.forwarded.clone(),
            cut: shared.cut.clone(),
            cuts: shared.cut_count.clone(),
            shared,
        })
    }
}

/// Connects `client` to `upstream` and forwards both ways (a partitioned link closes it instead).
fn forward(sh: &Arc<Shared>, client: TcpStream, upstream: &str) {
    if sh.partitioned.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else { return };
    for s in [&client, &server] {
        if let Ok(s) = s.try_clone() {
            sh.open.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
    let s1 = sh.clone();
    // client -> server, counted (and cut); server -> client as it comes
    std::thread::spawn(move || pump(client, server, Some(&s1)));
    std::thread::spawn(move || pump(s2, c2, None));
}

fn pump(mut from: TcpStream, mut to: TcpStream, counted: Option<&Shared>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(sh) = counted
            && sh.count(n as u64)
        {
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // The client went away: the server hears of it, unless the link is to look like a dead host (the
    // socket stays open through its clone in `open`).
    if counted.is_some_and(|sh| sh.silent.load(Ordering::SeqCst)) {
        return;
    }
    let _ = to.shutdown(Shutdown::Write);
}
