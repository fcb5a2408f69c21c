//! What a Sensor may ask of the nodes it runs on (pure).
//!
//! Whoever may create a Sensor chooses what the operator runs as root on
//! nodes, so every field that reaches a node is checked against limits the
//! Sensor cannot move: runtime sockets from an allowlist the operator is
//! started with, images from repositories the operator is started with, and
//! host privileges and control-plane tolerations only where the Sensor's
//! ActivationKey grants them (keys are cluster-scoped and created by cluster
//! administrators).

use k8s_openapi::api::core::v1::Toleration;
use sightline_crds::{ActivationKey, Sensor};

use super::status::Rejection;

/// Runtime sockets a container sensor may mount without further
/// configuration: the usual paths of Docker, containerd and k3s' containerd.
pub const DEFAULT_RUNTIME_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/docker.sock",
    "/run/docker.sock",
];

/// Taints that mark control-plane nodes.
const CONTROL_PLANE_TAINTS: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// The operator's limits on Sensor specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorPolicy {
    /// Socket paths (without `unix://`) a container sensor may mount.
    runtime_sockets: Vec<String>,
    /// Image repositories a Sensor may name: an entry ending in `/` allows
    /// every repository below it, any other entry exactly that repository.
    images: Vec<String>,
}

impl SensorPolicy {
    /// The defaults plus `extra_sockets`, and `images` (or, when empty, the
    /// repository of `default_image`). Fails naming the flag value that is
    /// no absolute plain path or no image repository.
    pub fn new(
        extra_sockets: &[String],
        images: &[String],
        default_image: &str,
    ) -> Result<Self, String> {
        let mut runtime_sockets: Vec<String> = DEFAULT_RUNTIME_SOCKETS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for s in extra_sockets {
            let path = s.strip_prefix("unix://").unwrap_or(s);
            if !is_plain_absolute_path(path) {
                return Err(format!(
                    "allowed runtime socket {s:?} must be an absolute path without '.', '..' or empty segments"
                ));
            }
            runtime_sockets.push(path.to_owned());
        }
        let images = if images.is_empty() {
            let repo = repository(default_image)
                .map_err(|e| format!("default sensor image {default_image:?}: {e}"))?;
            vec![repo.to_owned()]
        } else {
            for i in images {
                let entry = i.strip_suffix('/').unwrap_or(i);
                if let Err(e) = check_repository(entry) {
                    return Err(format!("allowed sensor image {i:?}: {e}"));
                }
            }
            images.to_vec()
        };
        Ok(Self {
            runtime_sockets,
            images,
        })
    }

    /// Checks every field of `sensor` that reaches a node; `key` is the
    /// Sensor's key, already found valid for it.
    pub fn check(&self, sensor: &Sensor, key: &ActivationKey) -> Result<(), Rejection> {
        let spec = &sensor.spec;
        let key_name = &spec.activation_key_ref.name;
        if spec.type_.is_privileged() && !key.spec.allow.privileged_sensors {
            return Err(Rejection {
                condition: "KeyRejected",
                reason: "PrivilegedSensorNotAllowed",
                message: format!(
                    "spec.type: a {} sensor runs with host privileges on every node it selects; \
                     ActivationKey {key_name} must set spec.allow.privilegedSensors: true",
                    spec.type_.as_str()
                ),
            });
        }
        if let Some(i) = spec.tolerations.iter().position(tolerates_control_plane)
            && !key.spec.allow.control_plane_nodes
        {
            return Err(Rejection {
                condition: "KeyRejected",
                reason: "ControlPlaneNotAllowed",
                message: format!(
                    "spec.tolerations[{i}] lets the sensor onto control-plane nodes; \
                     ActivationKey {key_name} must set spec.allow.controlPlaneNodes: true"
                ),
            });
        }
        if let Some(c) = &spec.container {
            for (i, rt) in c.runtimes.iter().enumerate() {
                let path = rt.endpoint().trim_start_matches("unix://");
                if !self.runtime_sockets.iter().any(|s| s == path) {
                    return Err(Rejection {
                        condition: "Degraded",
                        reason: "EndpointNotAllowed",
                        message: format!(
                            "spec.container.runtimes[{i}].endpoint: {path} is not an allowed runtime socket \
                             (allowed: {}; the operator's --allowed-runtime-socket adds more)",
                            self.runtime_sockets.join(", ")
                        ),
                    });
                }
            }
        }
        if let Some(image) = &spec.image {
            self.check_image(image).map_err(|e| Rejection {
                condition: "Degraded",
                reason: "ImageNotAllowed",
                message: format!("spec.image: {e}"),
            })?;
        }
        Ok(())
    }

    /// Whether sensors may run `image`: a valid reference from an allowed
    /// repository; the error names the image and what is allowed.
    pub fn check_image(&self, image: &str) -> Result<(), String> {
        let repo = repository(image)?;
        if self.allows_repository(repo) {
            Ok(())
        } else {
            Err(format!(
                "{image} is not from an allowed repository (allowed: {}; \
                 the operator's --allowed-sensor-image sets them)",
                self.images.join(", ")
            ))
        }
    }

    fn allows_repository(&self, repo: &str) -> bool {
        self.images
            .iter()
            .any(|allowed| match allowed.strip_suffix('/') {
                Some(prefix) => repo
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/')),
                None => repo == allowed,
            })
    }
}

/// True when `t` tolerates a control-plane taint (or every taint).
fn tolerates_control_plane(t: &Toleration) -> bool {
    match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => CONTROL_PLANE_TAINTS.contains(&k),
    }
}

fn is_plain_absolute_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && p[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The repository of an image reference (`registry:5000/a/b:tag@sha256:…`
/// → `registry:5000/a/b`), checked against the reference grammar of the
/// OCI distribution spec, so no spelling can make one repository look
/// like another.
pub fn repository(image: &str) -> Result<&str, String> {
    let without_digest = match image.split_once('@') {
        Some((name, digest)) => {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| format!("digest {digest:?} is not sha256:…"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!("digest {digest:?} is not 64 lowercase hex digits"));
            }
            name
        }
        None => image,
    };
    // A tag follows the last ':' after the last '/'; a ':' before it is a port.
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match without_digest[last_slash..].find(':') {
        Some(i) => {
            let (repo, tag) = without_digest.split_at(last_slash + i);
            let tag = &tag[1..];
            let tag_ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !tag.starts_with(['.', '-']);
            if !tag_ok {
                return Err(format!("tag {tag:?} is not a valid image tag"));
            }
            repo
        }
        None => without_digest,
    };
    check_repository(repo)?;
    Ok(repo)
}

/// Checks a repository name: an optional registry host (with a port), then
/// lowercase path components joined by `.`, `_`, `__` or dashes.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > 255 {
        return Err("the repository must have 1 to 255 characters".into());
    }
    let mut parts = repo.split('/').peekable();
    let first = parts.next().unwrap_or_default();
    let is_host = parts.peek().is_some()
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if is_host {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        let port_ok = first.find(':').is_none()
            || (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(format!("{first:?} is not a registry host"));
        }
    } else if !is_component(first) {
        return Err(format!("{first:?} is not a repository path component"));
    }
    for c in parts {
        if !is_component(c) {
            return Err(format!("{c:?} is not a repository path component"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::activation_key::KeyAllow;
    use sightline_crds::sensor::{
        ContainerSensor, KeyRef, PassiveSensor, RuntimeEndpoint, RuntimeKind, RuntimeSensor,
    };
    use sightline_crds::{ActivationKeySpec, Module, SensorSpec, SensorType};

    fn policy() -> SensorPolicy {
        SensorPolicy::new(
            &["unix:///tmp/node/containerd.sock".into()],
            &[],
            "registry.example.com:5000/sightline/sensor:0.1.0",
        )
        .unwrap()
    }

    fn key(allow: KeyAllow) -> ActivationKey {
        ActivationKey::new(
            "lab",
            ActivationKeySpec {
                modules: vec![
                    Module::ContainerSecurity,
                    Module::RuntimeSecurity,
                    Module::Passive,
                ],
                allow,
                ..Default::default()
            },
        )
    }

    fn sensor(type_: SensorType) -> Sensor {
        Sensor::new(
            "s",
            SensorSpec {
                type_,
                activation_key_ref: KeyRef { name: "lab".into() },
                container: (type_ == SensorType::Container).then(ContainerSensor::default),
                registry: None,
                runtime: (type_ == SensorType::Runtime).then(RuntimeSensor::default),
                passive: (type_ == SensorType::Passive).then(|| PassiveSensor {
                    interface: "eth0".into(),
                    networks: None,
                }),
                node_selector: Default::default(),
                tolerations: vec![],
                resources: None,
                image: None,
            },
        )
    }

    fn reason(r: Result<(), Rejection>) -> &'static str {
        r.err().map_or("allowed", |r| r.reason)
    }

    #[test]
    fn default_sockets_and_configured_ones_are_allowed_and_nothing_else() {
        let p = policy();
        let k = key(KeyAllow::default());
        let mut s = sensor(SensorType::Container);
        assert_eq!(reason(p.check(&s, &k)), "allowed");
        for (endpoint, expect) in [
            ("unix:///tmp/node/containerd.sock", "allowed"),
            ("unix:///run/k3s/containerd/containerd.sock", "allowed"),
            ("unix:///etc/kubernetes/pki/x", "EndpointNotAllowed"),
            (
                "unix:///run/containerd/../../etc/kubernetes/x",
                "EndpointNotAllowed",
            ),
            (
                "unix:///var/lib/kubelet/pki/kubelet.sock",
                "EndpointNotAllowed",
            ),
            (
                "unix:///run/containerd/containerd.sock/",
                "EndpointNotAllowed",
            ),
        ] {
            s.spec.container = Some(ContainerSensor {
                runtimes: vec![RuntimeEndpoint {
                    type_: RuntimeKind::Containerd,
                    endpoint: Some(endpoint.into()),
                }],
                ..ContainerSensor::default()
            });
            let got = p.check(&s, &k);
            assert_eq!(reason(got.clone()), expect, "{endpoint}");
            if let Err(r) = got {
                assert!(
                    r.message.starts_with("spec.container.runtimes[0].endpoint"),
                    "{}",
                    r.message
                );
            }
        }
    }

    #[test]
    fn images_only_from_the_allowed_repositories() {
        let p = policy();
        let k = key(KeyAllow::default());
        let mut s = sensor(SensorType::Container);
        for (image, expect) in [
            (
                "registry.example.com:5000/sightline/sensor:0.2.0",
                "allowed",
            ),
            (
                "registry.example.com:5000/sightline/sensor@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "allowed",
            ),
            ("registry.example.com:5000/sightline/sensor", "allowed"),
            (
                "registry.example.com:5000/sightline/sensor-evil:1",
                "ImageNotAllowed",
            ),
            (
                "registry.example.com:5000/sightline/sensor/x:1",
                "ImageNotAllowed",
            ),
            ("registry.example.com/sightline/sensor:1", "ImageNotAllowed"),
            ("evil.example/sightline/sensor:1", "ImageNotAllowed"),
            (
                "registry.example.com:5000/sightline/Sensor:1",
                "ImageNotAllowed",
            ),
            (
                "registry.example.com:5000/sightline/sensor:1 ",
                "ImageNotAllowed",
            ),
            (
                "registry.example.com:5000/sightline/sensor@sha256:zz",
                "ImageNotAllowed",
            ),
        ] {
            s.spec.image = Some(image.into());
            let got = p.check(&s, &k);
            assert_eq!(reason(got.clone()), expect, "{image}");
            if let Err(r) = got {
                assert!(r.message.starts_with("spec.image"), "{}", r.message);
            }
        }
        // A prefix entry allows every repository below it, and only those.
        let prefix =
            SensorPolicy::new(&[], &["mirror.example/sightline/".into()], "x/y:1").unwrap();
        s.spec.image = Some("mirror.example/sightline/sensor:1".into());
        assert_eq!(reason(prefix.check(&s, &k)), "allowed");
        s.spec.image = Some("mirror.example/sightline-evil/sensor:1".into());
        assert_eq!(reason(prefix.check(&s, &k)), "ImageNotAllowed");
        s.spec.image = Some("x/y:1".into());
        assert_eq!(reason(prefix.check(&s, &k)), "ImageNotAllowed");
    }

    #[test]
    fn privileged_types_need_a_key_that_allows_them() {
        let p = policy();
        for t in [SensorType::Runtime, SensorType::Passive] {
            let s = sensor(t);
            let got = p.check(&s, &key(KeyAllow::default()));
            assert_eq!(reason(got.clone()), "PrivilegedSensorNotAllowed");
            assert!(
                got.unwrap_err()
                    .message
                    .contains("spec.allow.privilegedSensors")
            );
            let allowing = key(KeyAllow {
                privileged_sensors: true,
                ..KeyAllow::default()
            });
            assert_eq!(reason(p.check(&s, &allowing)), "allowed");
        }
    }

    #[test]
    fn control_plane_tolerations_need_a_key_that_allows_them() {
        let p = policy();
        let t = |key: Option<&str>, op: &str| Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        };
        let mut s = sensor(SensorType::Container);
        s.spec.tolerations = vec![t(Some("dedicated"), "Exists")];
        assert_eq!(reason(p.check(&s, &key(KeyAllow::default()))), "allowed");
        for tol in [
            t(Some("node-role.kubernetes.io/control-plane"), "Exists"),
            t(Some("node-role.kubernetes.io/master"), "Equal"),
            t(None, "Exists"),
            t(Some(""), "Exists"),
        ] {
            s.spec.tolerations = vec![t(Some("dedicated"), "Exists"), tol];
            let got = p.check(&s, &key(KeyAllow::default()));
            assert_eq!(reason(got.clone()), "ControlPlaneNotAllowed");
            assert!(got.unwrap_err().message.starts_with("spec.tolerations[1]"));
            let allowing = key(KeyAllow {
                control_plane_nodes: true,
                ..KeyAllow::default()
            });
            assert_eq!(reason(p.check(&s, &allowing)), "allowed");
        }
    }

    #[test]
    fn bad_flag_values_are_refused_by_name() {
        for bad in ["relative.sock", "/run/../etc/x", "/run//x", "/"] {
            let e = SensorPolicy::new(&[bad.into()], &[], "a/b:1").unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = SensorPolicy::new(&[], &["Evil Repo".into()], "a/b:1").unwrap_err();
        assert!(e.contains("Evil Repo"), "{e}");
        assert!(SensorPolicy::new(&[], &[], "NOT/valid:1").is_err());
    }

    #[test]
    fn repositories_follow_the_reference_grammar() {
        assert_eq!(repository("busybox"), Ok("busybox"));
        assert_eq!(
            repository("localhost:5000/a/b:1.0"),
            Ok("localhost:5000/a/b")
        );
        assert_eq!(repository("a/b_c__d---e.f:tag_1.x-2"), Ok("a/b_c__d---e.f"));
        for bad in [
            "",
            "a//b",
            "a/-b",
            "a/b-",
            "a/b:",
            "a/b:-x",
            "a/.b",
            "a/b..c",
            "host:99999999/a",
            "a/b@sha256:ABC",
        ] {
            assert!(repository(bad).is_err(), "{bad}");
        }
    }
}
