//! Talking to a coordinator from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::transport::Channel;
use tracefleet_common::wire::MAX_MESSAGE_BYTES;
use tracefleet_proto::v1::SweepRef;
use tracefleet_proto::v1::sweeps_client::SweepsClient;

/// The coordinator flags shared by client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// Coordinator address (host:port, http://host:port or https://host:port).
    // The same flag, env name and default in every client command (`coord sweep` adds that --local
    // excludes it); the agent declares its own, required, with the same env name.
    #[arg(long, env = "TRACEFLEET_COORDINATOR", default_value = "127.0.0.1:50051")]
    pub coordinator: String,
    /// CA certificate (PEM) to trust for https:// coordinators.
    #[arg(long, env = "TRACEFLEET_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Your client certificate (PEM) for a coordinator that requires one (mutual TLS): an operator's
    /// (Organization `tracefleet:operator`) to submit, cancel, fetch and delete sweeps.
    #[arg(long, env = "TRACEFLEET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "TRACEFLEET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A file holding an operator token (for a coordinator started with --operator-tokens), sent as
    /// `authorization: Bearer TOKEN` instead of an operator certificate.
    #[arg(long, env = "TRACEFLEET_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Adds the operator token, when there is one, to every call.
#[derive(Debug, Clone, Default)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Token {
    /// The token in `path` (surrounding whitespace ignored).
    ///
    /// # Errors
    /// The file cannot be read, is empty, or holds characters a header cannot carry.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let token = text.trim();
        anyhow::ensure!(!token.is_empty(), "{} holds no token", path.display());
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("{}: the token holds characters a header cannot carry", path.display()))?;
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A sweeps client as the CLI uses it: its channel, and its token (if any) on every call.
pub type Client = SweepsClient<tonic::service::interceptor::InterceptedService<Channel, Token>>;

impl CoordinatorArg {
    /// A sweeps client connected to the coordinator these flags name (see [`connect`]).
    ///
    /// # Errors
    /// As [`connect`], or a TLS file that cannot be read.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        connect(&self.coordinator, &self.tls()?, self.token()?).await
    }

    /// The operator token these flags name, if any; only for an https:// coordinator (a token sent in
    /// plain text is a token given away).
    ///
    /// # Errors
    /// As [`Token::from_file`], or a token with a plain-text address.
    pub fn token(&self) -> anyhow::Result<Token> {
        let Some(path) = self.token_file.as_deref() else { return Ok(Token::default()) };
        anyhow::ensure!(
            tracefleet_proto::url(&self.coordinator).starts_with("https://"),
            "--token-file needs an https:// coordinator: the token would cross the network in plain text"
        );
        Token::from_file(path)
    }

    /// The TLS files these flags name, read.
    ///
    /// # Errors
    /// A file that cannot be read, named.
    pub fn tls(&self) -> anyhow::Result<tracefleet_proto::ClientTls> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(tracefleet_proto::ClientTls {
            ca: self.tls_ca.as_deref().map(read).transpose()?,
            identity: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
        })
    }
}

/// A runtime for one client command (a few requests: one thread).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A connected sweeps client; over TLS when `tls` says so, with `token` on every call.
pub async fn connect(addr: &str, tls: &tracefleet_proto::ClientTls, token: Token) -> anyhow::Result<Client> {
    let endpoint = tracefleet_proto::endpoint(addr, tls)?;
    let ch = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {addr}: {}", why_unreachable(&e)))?;
    Ok(SweepsClient::with_interceptor(ch, token).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Why a connection failed, and what to do about it: the transport's error chain, read for the causes
/// people meet (nothing listening, a name that does not resolve, TLS, a timeout).
fn why_unreachable(e: &tonic::transport::Error) -> String {
    let mut chain = e.to_string();
    let mut last = chain.clone();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // Layers often repeat their cause's text ("X: X"): once is enough.
        let text = s.to_string();
        if !last.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        last = text;
        source = s.source();
    }
    let lower = chain.to_lowercase();
    let hint = if lower.contains("connecting to https without tls enabled") {
        "an https:// address needs --tls-ca with the CA that signed the coordinator's certificate (and \
         --tls-cert/--tls-key for its client CA); a coordinator started with --insecure is dialled as http:// or \
         HOST:PORT"
    } else if lower.contains("connection refused") {
        "nothing listens there; start one with `coord serve`, or run the sweep in this process with `--local`"
    } else if lower.contains("dns error") || lower.contains("failed to lookup") || lower.contains("name or service") {
        "the host name does not resolve; check the address (--coordinator or TRACEFLEET_COORDINATOR)"
    } else if let Some(h) = tracefleet_proto::connection_hint(None, &chain) {
        h
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        "the TLS handshake failed; an https:// coordinator needs --tls-ca with the CA that signed its \
         certificate, and --tls-cert/--tls-key with a certificate its client CA signed"
    } else if lower.contains("timed out") || lower.contains("deadline") {
        "no answer within 5 s; is the address right and the port open?"
    } else {
        "check the address, and that `coord serve` runs there"
    };
    format!("{hint} ({chain})")
}

/// A one-line status.
pub fn describe(s: &tracefleet_proto::v1::SweepStatus) -> String {
    format!(
        "{}  {:<10} {:<20} points {}/{} done, {} failed, {} missing; traces {} uploaded, {} read, {} refused; {:.1} MB",
        s.sweep_id,
        s.state().name().unwrap_or("?"),
        s.name,
        s.points_done,
        s.points_total,
        s.points_failed,
        s.points_missing,
        s.traces_uploaded,
        // `traces_parsed` counts the refused ones too (each was parsed, and refused).
        s.traces_parsed.saturating_sub(s.traces_refused),
        s.traces_refused,
        s.raw_bytes as f64 / 1e6
    ) + &if s.traces_set_aside > 0 {
        format!("; {} set aside (their point ran again elsewhere)", s.traces_set_aside)
    } else {
        String::new()
    } + &if s.jobs_failed > 0 {
        // A job that failed after its points gave all their traces fails none of them: said here.
        format!("; {} of {} jobs failed", s.jobs_failed, s.jobs_total)
    } else {
        String::new()
    }
}

/// The sweep an argument names: a sweep id, or a sweep name (the newest sweep of that name).
///
/// # Errors
/// No sweep has that id or name (the message says how to list them), or the coordinator fails.
pub async fn resolve(c: &mut Client, arg: &str) -> anyhow::Result<String> {
    let sweeps = c.list_sweeps(tracefleet_proto::v1::ListSweepsRequest {}).await?.into_inner().sweeps;
    if let Some(s) = sweeps.iter().find(|s| s.sweep_id == arg).or_else(|| sweeps.iter().find(|s| s.name == arg)) {
        return Ok(s.sweep_id.clone());
    }
    anyhow::bail!("no sweep with id or name {arg:?} on this coordinator (`coord sweeps` lists them)")
}

/// A file name the coordinator sent, as a path under `out`; refused when it would leave `out`.
fn safe_join(out: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(name);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        anyhow::bail!("the coordinator sent an unsafe file name {name:?}");
    }
    Ok(out.join(rel))
}

/// Creates `p` (and its folder), naming it in the error.
fn create(p: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))
}

/// The file, in a results folder, that lists what the last download wrote there (one path per line,
/// relative to the folder): the next download removes those files first, and nothing else.
pub const RESULTS_LISTING: &str = ".tracefleet-results";

/// Downloads a finished sweep's result files into `out`; returns the files written (under `out`).
///
/// The files are fetched into a staging folder inside `out` first, so a download cut short leaves the
/// earlier results as they were. Then the files the previous download wrote ([`RESULTS_LISTING`]) are
/// removed, and the new ones moved in: an earlier run's report or Vidur profiles never stay beside this
/// run's tables, and files of the user's own in `out` are left alone. (Results written by a version
/// without the listing are overwritten file by file.)
///
/// # Errors
/// `out` is a file; the coordinator fails or sends an unsafe name; a file cannot be written, removed or
/// moved (named).
pub async fn download(c: &mut Client, id: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    check_out(out)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let staging = out.join(format!(".tracefleet-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let fetched = fetch_into(c, id, &staging).await;
    let installed = fetched.and_then(|files| {
        let rel: Vec<PathBuf> =
            files.iter().filter_map(|f| f.strip_prefix(&staging).ok()).map(Path::to_path_buf).collect();
        install(out, &staging, &rel).map(|()| rel)
    });
    let _ = std::fs::remove_dir_all(&staging);
    Ok(installed?.iter().map(|rel| out.join(rel)).collect())
}

/// Refuses an `out` that exists and is not a folder.
///
/// # Errors
/// As said, naming it.
pub fn check_out(out: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => {
            anyhow::bail!("{} is a file, not a folder for results: give another --out", out.display())
        }
        _ => Ok(()),
    }
}

/// Removes the files of the previous download into `out` (its listing), moves the staged files `rel` in,
/// and writes the new listing.
fn install(out: &Path, staging: &Path, rel: &[PathBuf]) -> anyhow::Result<()> {
    let listing = out.join(RESULTS_LISTING);
    if let Ok(text) = std::fs::read_to_string(&listing) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            let old = safe_join(out, line)?;
            match std::fs::remove_file(&old) {
                Ok(()) => remove_empty_parents(out, &old),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing the earlier result {}", old.display())),
            }
        }
    }
    for r in rel {
        let dest = out.join(r);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::rename(staging.join(r), &dest)
            .with_context(|| format!("moving the result into {}", dest.display()))?;
    }
    add_to_listing(out, rel, false)
}

/// Writes (or, with `append`, extends) the listing of the files a download wrote into `out`.
fn add_to_listing(out: &Path, rel: &[PathBuf], append: bool) -> anyhow::Result<()> {
    let listing = out.join(RESULTS_LISTING);
    let mut text = if append { std::fs::read_to_string(&listing).unwrap_or_default() } else { String::new() };
    for r in rel {
        text.push_str(&r.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(&listing, text).with_context(|| format!("writing {}", listing.display()))
}

/// Removes the folders above `file` inside `out` that are left empty (an earlier run's `vidur/`).
fn remove_empty_parents(out: &Path, file: &Path) {
    let mut d = file.parent();
    while let Some(dir) = d.filter(|d| *d != out && d.starts_with(out)) {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        d = dir.parent();
    }
}

/// Writes the result files as they come, under `dir`.
async fn fetch_into(c: &mut Client, id: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut s = c.fetch_results(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
    let mut files = Vec::new();
    let mut open: Option<(PathBuf, std::fs::File)> = None;
    while let Some(chunk) = s.message().await? {
        let p = safe_join(dir, &chunk.file)?;
        if open.as_ref().is_none_or(|(q, _)| *q != p) {
            open = Some((p.clone(), create(&p)?));
        }
        if let Some((_, f)) = open.as_mut() {
            f.write_all(&chunk.data).with_context(|| format!("writing {}", p.display()))?;
        }
        if chunk.last {
            files.push(p);
            open = None;
        }
    }
    Ok(files)
}

/// Downloads a finished sweep's raw traces into `out/traces/POINT/HOST/NAME.json.gz`, gzip-compressed
/// JSON whatever the agent's file was (plain, gzip or zstd), which Perfetto, HTA and `coord analyze` open.
/// Returns the files written.
pub async fn download_traces(c: &mut Client, id: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut s = c.fetch_traces(SweepRef { sweep_id: id.to_string() }).await?.into_inner();
    let mut files = Vec::new();
    // The stored bytes are zstd frames of the agent's file: decoded into a temporary file as they come.
    let mut open: Option<(String, PathBuf, zstd::stream::write::Decoder<'static, std::fs::File>)> = None;
    while let Some(chunk) = s.message().await? {
        if open.as_ref().is_none_or(|(name, ..)| *name != chunk.file) {
            let tmp = safe_join(&out.join("traces"), &format!("{}.part", chunk.file))?;
            let dec =
                zstd::stream::write::Decoder::new(create(&tmp)?).with_context(|| format!("decoding {}", chunk.file))?;
            open = Some((chunk.file.clone(), tmp, dec));
        }
        if let Some((name, _, dec)) = open.as_mut() {
            dec.write_all(&chunk.data).with_context(|| format!("decoding {name}"))?;
        }
        if chunk.last
            && let Some((name, tmp, mut dec)) = open.take()
        {
            dec.flush().with_context(|| format!("decoding {name}"))?;
            drop(dec);
            let base = name.trim_end_matches(".zst").trim_end_matches(".gz").trim_end_matches(".json");
            let dest = safe_join(&out.join("traces"), &format!("{base}.json.gz"))?;
            to_gzip(&tmp, &dest)?;
            std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
            files.push(dest);
        }
    }
    // Listed with the results, so that the next download into `out` removes them too.
    let rel: Vec<PathBuf> = files.iter().filter_map(|f| f.strip_prefix(out).ok()).map(Path::to_path_buf).collect();
    add_to_listing(out, &rel, true)?;
    Ok(files)
}

/// Writes `src` (plain JSON, gzip or zstd, told by its first bytes) to `dest` as gzip.
fn to_gzip(src: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let at = |what: &str, p: &Path| format!("{what} {}", p.display());
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(src).and_then(|mut f| f.read(&mut magic)).with_context(|| at("reading", src))?;
    let file = std::fs::File::open(src).with_context(|| at("reading", src))?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        std::fs::copy(src, dest).with_context(|| at("writing", dest))?;
        return Ok(());
    }
    let mut input: Box<dyn Read> = if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(file).with_context(|| at("decoding", src))?)
    } else {
        Box::new(file)
    };
    let mut gz = flate2::write::GzEncoder::new(create(dest)?, flate2::Compression::default());
    std::io::copy(&mut input, &mut gz).with_context(|| at("writing", dest))?;
    gz.finish().with_context(|| at("writing", dest))?;
    Ok(())
}
