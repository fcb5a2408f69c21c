//! The operator API's TLS: a private CA and a serving certificate kept in
//! a Secret of the operator's namespace, renewed before they expire, served
//! without a restart, and the CA published for sensors and users.
//!
//! Every replica runs [`ensure`] at start and every few minutes. The first
//! to find the Secret missing creates it; the first to find the serving
//! certificate due (a third of its life left, a name missing, not signed by
//! the CA) replaces it, on the version it read, so two replicas never
//! overwrite each other's work and all end up serving the same pair. A
//! Secret without `ca.key` (one cert-manager or an administrator keeps) is
//! served as it is and never written.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use axum::Router;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Keys of the Secret.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key; absent when someone else keeps the Secret.
pub const CA_KEY: &str = "ca.key";
/// The serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// Its private key.
pub const TLS_KEY: &str = "tls.key";

/// How long a CA this operator makes is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A CA with less than this left is replaced (which restarts the sensors).
const CA_MARGIN: Duration = Duration::from_secs(365 * 86_400);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the pair is kept and what it must name.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Secret, in the operator's namespace.
    pub secret: String,
    /// The ConfigMap, in the same namespace, that publishes `ca.crt`.
    pub ca_config_map: Option<String>,
    /// DNS names the serving certificate must hold.
    pub dns: Vec<String>,
    /// IP addresses it must hold.
    pub ips: Vec<IpAddr>,
    /// How long a serving certificate this operator issues is valid.
    pub validity: Duration,
}

impl Settings {
    /// How often replicas look at the Secret again: often enough that a
    /// renewal (due at a third of the life left) reaches every replica
    /// long before the old certificate expires.
    pub fn recheck(&self) -> Duration {
        (self.validity / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }
}

/// What is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The CA clients trust (PEM).
    pub ca: String,
    /// The serving certificate (PEM).
    pub cert: String,
    /// Its key (PEM).
    pub key: String,
}

/// What [`plan`] decided for a Secret's contents.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Serve it as it is.
    Keep(Material),
    /// Issue a new serving certificate from the CA there, because of `why`.
    Renew {
        /// The CA certificate (PEM).
        ca: String,
        /// The CA's key (PEM).
        ca_key: String,
        /// Why, for the log.
        why: String,
    },
    /// Make a new CA and certificate, because of `why`.
    Create {
        /// Why, for the log.
        why: String,
    },
}

fn text<'a>(data: &'a BTreeMap<String, ByteString>, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .filter(|s| !s.trim().is_empty())
}

fn der_of(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))
}

/// Seconds from the Unix epoch at which `cert` stops being valid.
fn not_after(cert: &X509Certificate<'_>) -> i64 {
    cert.validity().not_after.timestamp()
}

/// Whether `key_pem` is the private key of `cert`.
fn key_matches(cert: &X509Certificate<'_>, key_pem: &str) -> bool {
    KeyPair::from_pem(key_pem)
        .is_ok_and(|k| k.public_key_raw() == &*cert.public_key().subject_public_key.data)
}

/// What the serving certificate lacks of `settings`' names, if anything.
fn missing_names(cert: &X509Certificate<'_>, settings: &Settings) -> Option<String> {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    ips.extend(ip);
                }
                _ => {}
            }
        }
    }
    let lacking: Vec<String> = settings
        .dns
        .iter()
        .filter(|d| !dns.contains(&d.to_ascii_lowercase()))
        .cloned()
        .chain(
            settings
                .ips
                .iter()
                .filter(|ip| !ips.contains(ip))
                .map(IpAddr::to_string),
        )
        .collect();
    (!lacking.is_empty()).then(|| lacking.join(", "))
}

/// Decides what to do with a Secret's `data` at `now` (Unix seconds):
/// pure, so every case is a unit test.
pub fn plan(data: Option<&BTreeMap<String, ByteString>>, settings: &Settings, now: i64) -> Plan {
    let Some(data) = data else {
        return Plan::Create {
            why: "the Secret does not exist".into(),
        };
    };
    let create = |why: String| Plan::Create { why };
    let Some(ca_pem) = text(data, CA_CERT) else {
        return create(format!("the Secret has no {CA_CERT}"));
    };
    let Ok(ca_der) = der_of(ca_pem) else {
        return create(format!("{CA_CERT} is not a PEM certificate"));
    };
    let Ok((_, ca)) = X509Certificate::from_der(&ca_der) else {
        return create(format!("{CA_CERT} is not an X.509 certificate"));
    };
    let ca_key = text(data, CA_KEY);
    let leaf = text(data, TLS_CERT).zip(text(data, TLS_KEY));
    let Some(ca_key) = ca_key else {
        // Someone else keeps this Secret: serve what is there.
        return match leaf {
            Some((cert, key)) => Plan::Keep(Material {
                ca: ca_pem.to_owned(),
                cert: cert.to_owned(),
                key: key.to_owned(),
            }),
            None => create(format!(
                "the Secret has neither {CA_KEY} nor {TLS_CERT} and {TLS_KEY}"
            )),
        };
    };
    if !key_matches(&ca, ca_key) {
        return create(format!("{CA_KEY} is not the key of {CA_CERT}"));
    }
    if not_after(&ca) - now < CA_MARGIN.as_secs() as i64 {
        return create("the CA expires within a year".into());
    }
    let renew = |why: String| Plan::Renew {
        ca: ca_pem.to_owned(),
        ca_key: ca_key.to_owned(),
        why,
    };
    let Some((cert_pem, key_pem)) = leaf else {
        return renew(format!("the Secret has no {TLS_CERT} or {TLS_KEY}"));
    };
    let Ok(der) = der_of(cert_pem) else {
        return renew(format!("{TLS_CERT} is not a PEM certificate"));
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return renew(format!("{TLS_CERT} is not an X.509 certificate"));
    };
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return renew(format!("{TLS_CERT} is not signed by {CA_CERT}"));
    }
    if !key_matches(&cert, key_pem) {
        return renew(format!("{TLS_KEY} is not the key of {TLS_CERT}"));
    }
    let left = not_after(&cert) - now;
    if left < (settings.validity.as_secs() / 3) as i64 {
        return renew(format!("the certificate expires in {left} s"));
    }
    if let Some(lacking) = missing_names(&cert, settings) {
        return renew(format!("the certificate does not name {lacking}"));
    }
    Plan::Keep(Material {
        ca: ca_pem.to_owned(),
        cert: cert_pem.to_owned(),
        key: key_pem.to_owned(),
    })
}

fn at(secs: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(secs).context("a time out of range")
}

/// A new CA: `(certificate, key)` in PEM.
pub fn new_ca(now: i64) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "Sightline operator CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = at(now - 3600)?;
    p.not_after = at(now + CA_VALIDITY.as_secs() as i64)?;
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `settings`' names from the CA: `(certificate,
/// key)` in PEM.
pub fn new_leaf(ca: &str, ca_key: &str, settings: &Settings, now: i64) -> Result<(String, String)> {
    let issuer =
        Issuer::from_ca_cert_pem(ca, KeyPair::from_pem(ca_key)?).context("reading the CA")?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(settings.dns.clone())?;
    p.subject_alt_names
        .extend(settings.ips.iter().copied().map(SanType::IpAddress));
    p.distinguished_name.push(
        DnType::CommonName,
        settings
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| "sightline-operator".into()),
    );
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    // A minute back, for clocks a little behind ours.
    p.not_before = at(now - 60)?;
    p.not_after = at(now + settings.validity.as_secs() as i64)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn secret_data(ca: &str, ca_key: &str, cert: &str, key: &str) -> BTreeMap<String, ByteString> {
    [
        (CA_CERT, ca),
        (CA_KEY, ca_key),
        (TLS_CERT, cert),
        (TLS_KEY, key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect()
}

/// Reads the Secret, creates or renews what is due, and returns what to
/// serve. Writes are conditional on what was read; losing a race means
/// reading what the winner wrote.
pub async fn ensure(secrets: &Api<Secret>, settings: &Settings) -> Result<Material> {
    for _ in 0..5 {
        let current = secrets
            .get_opt(&settings.secret)
            .await
            .with_context(|| format!("reading Secret {}", settings.secret))?;
        let now = jiff::Timestamp::now().as_second();
        let data = current.as_ref().map(|s| s.data.clone().unwrap_or_default());
        let (ca, ca_key, why) = match plan(data.as_ref(), settings, now) {
            Plan::Keep(m) => return Ok(m),
            Plan::Renew { ca, ca_key, why } => (ca, ca_key, why),
            Plan::Create { why } => {
                let (ca, key) = new_ca(now)?;
                (ca, key, why)
            }
        };
        let (cert, key) = new_leaf(&ca, &ca_key, settings, now)?;
        tracing::info!(
            secret = settings.secret,
            "issuing the API's certificate: {why}"
        );
        let data = secret_data(&ca, &ca_key, &cert, &key);
        let written = match current {
            None => {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(settings.secret.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/part-of".to_owned(),
                            "sightline".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await
            }
            Some(mut secret) => {
                // Replacing on the version read: a concurrent writer wins
                // and this replica reads its pair.
                secret.data = Some(data);
                secret.string_data = None;
                secrets
                    .replace(&settings.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                return Ok(Material { ca, cert, key });
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("writing Secret {}", settings.secret));
            }
        }
    }
    bail!(
        "Secret {} kept changing while it was being written",
        settings.secret
    )
}

/// Publishes the CA in the ConfigMap sensors' pods and users read it from.
pub async fn publish_ca(config_maps: &Api<ConfigMap>, name: &str, ca: &str) -> Result<()> {
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "sightline"},
        },
        "data": {CA_CERT: ca},
    });
    config_maps
        .patch(
            name,
            &PatchParams::apply("sightline-operator/tls").force(),
            &Patch::Apply(&cm),
        )
        .await
        .with_context(|| format!("publishing the CA in ConfigMap {name}"))?;
    Ok(())
}

/// The certificate being served, swapped when it is renewed.
#[derive(Debug)]
pub struct Served(RwLock<Arc<CertifiedKey>>);

impl Served {
    /// Serves `m`.
    pub fn new(m: &Material) -> Result<Arc<Served>> {
        Ok(Arc::new(Served(RwLock::new(certified(m)?))))
    }

    /// Serves `m` from the next handshake on.
    pub fn replace(&self, m: &Material) -> Result<()> {
        let key = certified(m)?;
        if let Ok(mut current) = self.0.write() {
            *current = key;
        }
        Ok(())
    }
}

impl ResolvesServerCert for Served {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| Arc::clone(&k))
    }
}

fn certified(m: &Material) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(m.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{TLS_CERT}: {e}"))?;
    if chain.is_empty() {
        bail!("{TLS_CERT} holds no certificate");
    }
    let key =
        PrivateKeyDer::from_pem_slice(m.key.as_bytes()).map_err(|e| anyhow!("{TLS_KEY}: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("{TLS_KEY}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// A TLS 1.2/1.3 server configuration serving what `served` holds.
pub fn server_config(served: Arc<Served>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(served);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener`, at most [`MAX_CONNECTIONS`] at
/// once, dropping clients slow to shake hands or to send headers.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Looks at the Secret every [`Settings::recheck`] and serves what a
/// renewal (here or by another replica) put there. Returns only when the
/// CA itself changed: sensors trust the CA they were started with, so the
/// operator must restart to roll the new one out to them.
pub async fn keep_fresh(
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    settings: Settings,
    served: Arc<Served>,
    mut current: Material,
) -> anyhow::Error {
    loop {
        tokio::time::sleep(settings.recheck()).await;
        let m = match ensure(&secrets, &settings).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "checking the API's certificate");
                continue;
            }
        };
        if m == current {
            continue;
        }
        if m.ca != current.ca {
            if let Some(name) = &settings.ca_config_map
                && let Err(e) = publish_ca(&config_maps, name, &m.ca).await
            {
                tracing::warn!(error = %format!("{e:#}"), "publishing the new CA");
            }
            return anyhow!(
                "the CA in Secret {} changed; restarting so sensors are given the new one",
                settings.secret
            );
        }
        match served.replace(&m) {
            Ok(()) => {
                tracing::info!(secret = settings.secret, "serving the renewed certificate");
                current = m;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the renewed certificate cannot be served")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn settings() -> Settings {
        Settings {
            secret: "tls".into(),
            ca_config_map: None,
            dns: vec!["sightline-operator.sightline-system.svc".into()],
            ips: vec!["10.96.0.12".parse().expect("ip")],
            validity: Duration::from_secs(90 * DAY as u64),
        }
    }

    fn issued(s: &Settings, now: i64) -> BTreeMap<String, ByteString> {
        let (ca, ca_key) = new_ca(now).expect("ca");
        let (cert, key) = new_leaf(&ca, &ca_key, s, now).expect("leaf");
        secret_data(&ca, &ca_key, &cert, &key)
    }

    fn why(p: Plan) -> String {
        match p {
            Plan::Keep(_) => "keep".into(),
            Plan::Renew { why, .. } => format!("renew: {why}"),
            Plan::Create { why } => format!("create: {why}"),
        }
    }

    #[test]
    fn a_fresh_pair_is_kept_until_a_third_of_its_life_is_left() {
        let s = settings();
        let now = 1_800_000_000;
        let data = issued(&s, now);
        assert_eq!(why(plan(Some(&data), &s, now)), "keep");
        assert_eq!(why(plan(Some(&data), &s, now + 59 * DAY)), "keep");
        assert!(
            why(plan(Some(&data), &s, now + 61 * DAY))
                .starts_with("renew: the certificate expires")
        );
        assert!(why(plan(Some(&data), &s, now + 3650 * DAY)).starts_with("create: the CA expires"));
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let s = settings();
        let now = 1_800_000_000;
        let data = issued(&s, now);
        assert_eq!(
            why(plan(None, &s, now)),
            "create: the Secret does not exist"
        );

        let mut d = data.clone();
        d.insert(CA_CERT.into(), ByteString(b"garbage".to_vec()));
        assert_eq!(
            why(plan(Some(&d), &s, now)),
            "create: ca.crt is not a PEM certificate"
        );

        // A certificate signed by another CA, with its own key.
        let other = issued(&s, now);
        let mut d = data.clone();
        d.insert(TLS_CERT.into(), other[TLS_CERT].clone());
        d.insert(TLS_KEY.into(), other[TLS_KEY].clone());
        assert_eq!(
            why(plan(Some(&d), &s, now)),
            "renew: tls.crt is not signed by ca.crt"
        );

        let mut d = data.clone();
        d.insert(TLS_KEY.into(), other[TLS_KEY].clone());
        assert_eq!(
            why(plan(Some(&d), &s, now)),
            "renew: tls.key is not the key of tls.crt"
        );

        let mut d = data.clone();
        d.insert(CA_KEY.into(), other[CA_KEY].clone());
        assert_eq!(
            why(plan(Some(&d), &s, now)),
            "create: ca.key is not the key of ca.crt"
        );

        let mut moved = s.clone();
        moved.ips.push("10.96.0.99".parse().expect("ip"));
        moved.dns.push("sightline.example.com".into());
        assert_eq!(
            why(plan(Some(&data), &moved, now)),
            "renew: the certificate does not name sightline.example.com, 10.96.0.99"
        );
    }

    #[test]
    fn a_secret_without_the_ca_key_is_served_as_it_is() {
        let s = settings();
        let now = 1_800_000_000;
        let mut data = issued(&s, now);
        data.remove(CA_KEY);
        // Even when it is old: whoever keeps it renews it.
        assert_eq!(why(plan(Some(&data), &s, now + 80 * DAY)), "keep");
        data.remove(TLS_KEY);
        assert!(why(plan(Some(&data), &s, now)).starts_with("create: the Secret has neither"));
    }

    #[test]
    fn the_issued_pair_is_served() {
        let s = settings();
        let data = issued(&s, 1_800_000_000);
        let m = Material {
            ca: text(&data, CA_CERT).expect("ca").into(),
            cert: text(&data, TLS_CERT).expect("cert").into(),
            key: text(&data, TLS_KEY).expect("key").into(),
        };
        let served = Served::new(&m).expect("served");
        server_config(served).expect("config");
        let bad = Material {
            key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            ..m
        };
        assert!(Served::new(&bad).is_err());
    }
}
