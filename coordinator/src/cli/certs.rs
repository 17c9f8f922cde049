//! `coord certs init`: a certificate authority and the certificates of a coordinator, its agents and an
//! operator, for trying mutual TLS and for tests. A real deployment's PKI (cert-manager, Vault, ...) issues
//! its own with the same subject fields: Common Name = the agent's name or the operator's user name,
//! Organization = `tracefleet:agent` or `tracefleet:operator` (see `server::auth`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::server::auth::{AGENT_ROLE, OPERATOR_ROLE};

/// Arguments of `coord certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make a CA, a coordinator certificate, agent certificates and an operator certificate in DIR.
    Init(InitArgs),
}

/// Arguments of `coord certs init`.
#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Folder for the files (created): ca.pem, coordinator.pem, agents/NAME.pem, operator.pem, each with
    /// its -key.pem (mode 0600).
    dir: PathBuf,
    /// A name agents and clients dial the coordinator by (DNS name or IP address); repeat for several.
    #[arg(long = "coordinator-san", required = true, value_name = "NAME")]
    coordinator_san: Vec<String>,
    /// Agent certificates to make, named agent-0 .. agent-(N-1).
    #[arg(long, default_value_t = 0)]
    agents: usize,
    /// An agent certificate for this name (its --name); repeat for several.
    #[arg(long = "agent", value_name = "NAME")]
    agent_names: Vec<String>,
    /// The operator certificate's user name.
    #[arg(long, default_value = "operator")]
    operator: String,
    /// Days the certificates are valid, from now.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace files that exist (by default they are kept and the command stops).
    #[arg(long)]
    force: bool,
}

/// Runs `coord certs`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Init(i) => init(&i),
    }
}

/// Validity from now for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5); // clocks of the hosts differ a little
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

fn subject(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// A PEM pair written to `dir/name.pem` and `dir/name-key.pem`.
struct Written {
    cert: PathBuf,
    key: PathBuf,
}

fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str, force: bool) -> anyhow::Result<Written> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    for p in [&cert, &key] {
        if p.exists() && !force {
            anyhow::bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    std::fs::write(&cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, key_pem)?;
    Ok(Written { cert, key })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A leaf certificate signed by `ca`.
fn leaf(
    ca: &Issuer<'_, KeyPair>,
    sans: Vec<String>,
    dn: DistinguishedName,
    usage: ExtendedKeyUsagePurpose,
    days: u32,
) -> anyhow::Result<(String, String)> {
    let mut p = CertificateParams::new(sans).context("a subject alternative name is not a DNS name or IP address")?;
    p.distinguished_name = dn;
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p, days);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn init(a: &InitArgs) -> anyhow::Result<()> {
    let agents_dir = a.dir.join("agents");
    std::fs::create_dir_all(&agents_dir).with_context(|| format!("creating {}", agents_dir.display()))?;
    let mut names: Vec<String> = (0..a.agents).map(|i| format!("agent-{i}")).collect();
    names.extend(a.agent_names.iter().cloned());
    for n in &names {
        if n.is_empty() || n.contains('/') || n.len() > 253 {
            anyhow::bail!("agent name {n:?} cannot be an agent's --name");
        }
    }

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = subject("tracefleet CA", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, a.days);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_written = write_pair(&a.dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem(), a.force)?;
    let ca = Issuer::new(ca_params, ca_key);

    let (c, k) = leaf(
        &ca,
        a.coordinator_san.clone(),
        subject("tracefleet coordinator", None),
        ExtendedKeyUsagePurpose::ServerAuth,
        a.days,
    )?;
    let coord = write_pair(&a.dir, "coordinator", &c, &k, a.force)?;
    for n in &names {
        let (c, k) = leaf(&ca, Vec::new(), subject(n, Some(AGENT_ROLE)), ExtendedKeyUsagePurpose::ClientAuth, a.days)?;
        write_pair(&agents_dir, n, &c, &k, a.force)?;
    }
    let (c, k) =
        leaf(&ca, Vec::new(), subject(&a.operator, Some(OPERATOR_ROLE)), ExtendedKeyUsagePurpose::ClientAuth, a.days)?;
    let op = write_pair(&a.dir, "operator", &c, &k, a.force)?;

    let d = a.dir.display();
    let san = &a.coordinator_san[0];
    println!("CA:          {} (keep {} private)", ca_written.cert.display(), ca_written.key.display());
    println!("coordinator: {} {}", coord.cert.display(), coord.key.display());
    println!("agents:      {} ({} certificates)", agents_dir.display(), names.len());
    println!("operator:    {} {}", op.cert.display(), op.key.display());
    println!();
    println!(
        "coord serve --data-dir DATA --tls-cert {d}/coordinator.pem --tls-key {d}/coordinator-key.pem --client-ca {d}/ca.pem"
    );
    if let Some(n) = names.first() {
        println!(
            "agent --coordinator https://{san}:50051 --name {n} --tls-ca {d}/ca.pem --tls-cert {d}/agents/{n}.pem --tls-key {d}/agents/{n}-key.pem ..."
        );
    }
    println!(
        "coord sweep FILE --coordinator https://{san}:50051 --tls-ca {d}/ca.pem --tls-cert {d}/operator.pem --tls-key {d}/operator-key.pem"
    );
    Ok(())
}
