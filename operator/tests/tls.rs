//! The API over TLS against a real API server and the real operator
//! binary: the operator makes its CA and certificate in a Secret, two
//! replicas serve the same pair, clients that do not trust the CA (or speak
//! plain HTTP) get nowhere, the plain port keeps only the health probes,
//! metrics go only to callers allowed `get /metrics`, and a renewed
//! certificate is served without a restart.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, PostParams};
use serde_json::json;
use sightline_testenv::helpers;
use sightline_testenv::process::free_port;
use support::{Env, OPERATOR_NS};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const SECRET: &str = "sightline-operator-tls";
const CA_MAP: &str = "sightline-operator-ca";

fn field(secret: &Secret, key: &str) -> Result<Vec<u8>> {
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("the Secret has no {key}"))?
        .0
        .clone())
}

fn der(pem: &[u8]) -> Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem)?.to_vec())
}

/// A client trusting `ca` only (or the public CAs when `None`), reporting
/// the certificate it was shown.
fn client(ca: Option<&[u8]>) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .tls_info(true)
        // A new connection per request.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    Ok(sightline_report::client::trusting(builder, ca)
        .map_err(anyhow::Error::msg)?
        .build()?)
}

/// The certificate `url` serves (DER), and the status of a GET.
async fn served(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, u16)> {
    let r = http.get(url).bearer_auth("not-a-token").send().await?;
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .context("no peer certificate")?
        .to_vec();
    Ok((cert, r.status().as_u16()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_served_over_tls_with_a_certificate_the_operator_keeps() -> Result<()> {
    let env = Env::start().await?;
    let services: Api<Service> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "sightline-operator"},
        "spec": {"ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 443}]},
    }))?;
    let cluster_ip = services
        .create(&PostParams::default(), &svc)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no cluster IP")?;

    let ports = [free_port()?, free_port()?];
    let start = |identity: &str, port: u16| {
        env.operator_with(
            identity,
            &[
                "--api-service",
                "sightline-operator",
                "--tls-secret",
                SECRET,
                "--ca-config-map",
                CA_MAP,
                "--tls-name",
                "localhost,127.0.0.1",
                "--api-addr",
                &format!("127.0.0.1:{port}"),
                // Short-lived, so the test sees a renewal: due when 20 s
                // are left, looked for every 6 s (the steps before
                // it finish long before).
                "--tls-validity-seconds",
                "60",
            ],
        )
    };
    let a = start("tls-a", ports[0])?;
    let b = start("tls-b", ports[1])?;
    let result = async {
        a.wait_serving().await?;
        b.wait_serving().await?;
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), OPERATOR_NS);
        let secret = secrets.get(SECRET).await?;
        ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
        let ca = field(&secret, "ca.crt")?;
        let first = der(&field(&secret, "tls.crt")?)?;

        // The CA is published for users, the same one.
        let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), OPERATOR_NS);
        let published = maps.get(CA_MAP).await?.data.unwrap_or_default();
        ensure!(published.get("ca.crt").map(String::as_bytes) == Some(&ca[..]));

        // The certificate names the Service, its cluster IP and loopback.
        let (_, cert) = X509Certificate::from_der(&first)?;
        let mut names = Vec::new();
        for n in &cert
            .subject_alternative_name()?
            .context("no SANs")?
            .value
            .general_names
        {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string());
                }
                _ => {}
            }
        }
        for want in [
            "sightline-operator.sightline-system.svc",
            "sightline-operator.sightline-system.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            cluster_ip.as_str(),
        ] {
            ensure!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }

        // Both replicas serve that certificate, and the API answers there
        // (401: the token is bad, but TLS and the route are there; every
        // replica serves search).
        let trusting = client(Some(&ca))?;
        let url = |port: u16| format!("https://127.0.0.1:{port}/api/v1/summary");
        for port in ports {
            let (served_cert, status) = served(&trusting, &url(port)).await?;
            ensure!(
                served_cert == first,
                "replica on {port} serves another certificate"
            );
            ensure!(status == 401, "{status}");
        }

        // Clients that do not trust the CA, or speak plain HTTP, get nowhere.
        let e = client(None)?
            .get(url(ports[0]))
            .send()
            .await
            .expect_err("a certificate of a private CA trusted by public roots");
        ensure!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/observations", ports[0]))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        ensure!(plain.is_err(), "plain HTTP was answered: {plain:?}");

        // The plain port keeps the kubelet's probes, nothing else.
        ensure!(a.get("/healthz")?.contains("200 OK"));
        for path in ["/api/v1/observations", "/metrics"] {
            let r = a.get(path)?;
            ensure!(r.contains(" 404 Not Found"), "{path}: {r}");
        }

        // Metrics are served over TLS to callers allowed `get /metrics`.
        let metrics = format!("https://127.0.0.1:{}/metrics", ports[0]);
        let status = |token: Option<String>| {
            let (trusting, metrics) = (trusting.clone(), metrics.clone());
            async move {
                let mut req = trusting.get(&metrics);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await?;
                Ok::<_, anyhow::Error>((r.status().as_u16(), r.text().await?))
            }
        };
        ensure!(status(None).await?.0 == 401);
        let nobody = support::service_account_token(&env, "nobody", false).await?;
        let (code, body) = status(Some(nobody)).await?;
        ensure!(
            code == 403 && body.contains("get /metrics"),
            "{code} {body}"
        );
        env.apply(&format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: metrics-reader-{ns}}}
rules:
- nonResourceURLs: [/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: metrics-reader-{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: metrics-reader-{ns}}}
subjects:
- {{kind: ServiceAccount, name: prometheus, namespace: {ns}}}
"#,
            ns = env.ns
        ))
        .await?;
        let prometheus = support::service_account_token(&env, "prometheus", false).await?;
        let (code, body) = status(Some(prometheus)).await?;
        ensure!(
            code == 200 && body.contains("sightline_operator_leader"),
            "{code} {body}"
        );

        // A renewal (by whichever replica gets there first) reaches both,
        // under the same CA, without a restart.
        let renewed =
            helpers::wait_for("a renewed certificate", Duration::from_secs(90), || async {
                let s = secrets.get(SECRET).await.ok()?;
                let cert = der(&field(&s, "tls.crt").ok()?).ok()?;
                (cert != first).then_some(s)
            })
            .await?;
        ensure!(
            field(&renewed, "ca.crt")? == ca,
            "the CA changed on renewal"
        );
        for port in ports {
            helpers::wait_for(
                "the renewed certificate served",
                Duration::from_secs(30),
                || async {
                    // A new client: one that resumed its TLS session
                    // would be shown no certificate and report the old one.
                    let fresh = client(Some(&ca)).ok()?;
                    match served(&fresh, &url(port)).await {
                        Ok((c, _)) => (c != first).then_some(()),
                        Err(e) => {
                            eprintln!("asking {port}: {e:#}");
                            None
                        }
                    }
                },
            )
            .await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    result
}
