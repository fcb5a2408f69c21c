//! The cluster's DNS: CoreDNS on this machine, answering on the pod
//! network's gateway for `cluster.local` from the API server's Services
//! and EndpointSlices, as kube-dns does in a kubeadm cluster; the kubelet
//! points pods at it. It has no forwarder: names outside the cluster are
//! refused, since this network reaches nothing else.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::controlplane::ControlPlane;
use crate::process::Proc;
use crate::{Error, Result, io};

/// The cluster's domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The identity CoreDNS reads the API as (a token the control plane
/// issues), and what it may read: what kubeadm grants it, less pods
/// (pod records are off) and the Endpoints CoreDNS no longer reads.
const IDENTITY: &str = "system:coredns";

async fn grant(client: &kube::Client) -> Result<()> {
    let apply = PatchParams::apply(crate::helpers::MANAGER).force();
    let kube = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Kube { what, source }
    };
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": IDENTITY},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    });
    Api::<ClusterRole>::all(client.clone())
        .patch(IDENTITY, &apply, &Patch::Apply(role))
        .await
        .map_err(kube("applying CoreDNS's ClusterRole"))?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": IDENTITY},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": IDENTITY},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": IDENTITY}],
    });
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(IDENTITY, &apply, &Patch::Apply(binding))
        .await
        .map_err(kube("applying CoreDNS's ClusterRoleBinding"))?;
    Ok(())
}

/// CoreDNS's configuration: the cluster's zones on `address:53`, and
/// nothing else.
fn corefile(address: Ipv4Addr, kubeconfig: &Path) -> String {
    format!(
        "{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{\n\
         \x20   bind {address}\n\
         \x20   errors\n\
         \x20   kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n\
         \x20       kubeconfig {} sightline-local\n\
         \x20       pods disabled\n\
         \x20       fallthrough in-addr.arpa ip6.arpa\n\
         \x20       ttl 5\n\
         \x20   }}\n\
         \x20   cache 5\n\
         }}\n",
        kubeconfig.display()
    )
}

/// Starts CoreDNS for the cluster on `address` and waits until it answers
/// for the `kubernetes` Service.
pub async fn start(cp: &ControlPlane, address: Ipv4Addr, dir: &Path) -> Result<Proc> {
    grant(&cp.client()).await?;
    let config = dir.join("Corefile");
    std::fs::write(
        &config,
        corefile(address, &cp.dir().join("coredns.kubeconfig")),
    )
    .map_err(io(format!("writing {}", config.display())))?;
    let mut cmd = std::process::Command::new(crate::binaries::coredns()?);
    cmd.arg("-conf").arg(&config).current_dir(dir);
    let log = dir.join("coredns.log");
    let mut proc = Proc::spawn("coredns", cmd, &log)?;
    let server = SocketAddr::from((address, 53));
    let name = format!("kubernetes.default.svc.{CLUSTER_DOMAIN}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match query_a(server, &name) {
            Ok(ips) if !ips.is_empty() => return Ok(proc),
            _ if Instant::now() > deadline => {
                proc.stop(Duration::from_secs(5));
                return Err(Error::NotReady {
                    component: format!("CoreDNS (answering for {name} on {server})"),
                    seconds: 30,
                    log: log.display().to_string(),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Asks `server` for the IPv4 addresses of `name` (one UDP query, 2 s);
/// an answer without any (NXDOMAIN, REFUSED) is an empty list.
pub fn query_a(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).map_err(io("binding a UDP socket"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(io("setting a timeout"))?;
    let id: u16 = rand::random();
    socket
        .send_to(&query(id, name)?, server)
        .map_err(io(format!("asking {server} for {name}")))?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket
        .recv_from(&mut buf)
        .map_err(io(format!("waiting for {server}'s answer for {name}")))?;
    answers(&buf[..n], id)
        .ok_or_else(|| Error::Dns(format!("{server} answered {name} with a malformed message")))
}

/// A recursion-desired query for the A records of `name`.
fn query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))
            .ok_or_else(|| Error::Dns(format!("{name} is not a DNS name")))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// The A records of an answer to query `id`; `None` if it is not one.
fn answers(msg: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    if u16_at(0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let (questions, records) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    // A name: labels up to a zero, or a compression pointer (two bytes).
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            match len {
                0 => return Some(at + 1),
                l if l & 0xc0 == 0xc0 => return Some(at + 2),
                l => at += 1 + usize::from(l),
            }
        }
    };
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..records {
        at = skip_name(at)?;
        let (kind, len) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        let data = msg.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_from_a_real_message_shape() {
        let q = query(7, "kubernetes.default.svc.cluster.local").expect("query");
        let mut msg = q.clone();
        msg[2] |= 0x80; // a response
        msg[7] = 2; // two answers: a CNAME-like record, then an A record
        msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 5, 0, 2, 0xc0, 12]);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        assert_eq!(answers(&msg, 7), Some(vec![Ipv4Addr::new(10, 96, 0, 1)]));
        assert_eq!(answers(&msg, 8), None, "another query's answer");
        assert_eq!(answers(&q, 7), None, "a query is not an answer");
        for cut in 0..msg.len() {
            // Never a panic, whatever the length.
            let _ = answers(&msg[..cut], 7);
        }
        assert!(query(1, &"x".repeat(64)).is_err());
    }
}
