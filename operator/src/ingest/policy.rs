//! What each caller may report: the kinds its sensor type sees, and for
//! node sensors only what is on their own node. Pure, so every rule is
//! unit-tested here; the writer applies what passes.

use sightline_crds::SensorType;
use sightline_report::Observation;

use super::auth::Caller;

/// An observation refused: a reason and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable.
    pub reason: &'static str,
    /// In words.
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// Whether `caller` may report `o`.
pub fn decide(caller: &Caller, o: &Observation) -> Result<(), Refusal> {
    let kind = match o {
        Observation::ContainerImage(_) => "ContainerImage",
        Observation::Container(_) => "Container",
        Observation::Node(_) => "Node",
        Observation::RuntimeViolations(_) => "RuntimeViolations",
    };
    let not_yours = |who: &str| {
        refuse(
            "KindNotAllowed",
            format!("{who} may not report {kind} observations"),
        )
    };
    match caller {
        Caller::Key { key } => match o {
            Observation::ContainerImage(i) if i.runtime.is_none() => Ok(()),
            Observation::ContainerImage(_) => Err(refuse(
                "NotANode",
                "a CI report names no runtime: it was not seen on a node",
            )),
            _ => Err(not_yours(&format!("ActivationKey {key}'s token"))),
        },
        Caller::Sensor {
            sensor,
            sensor_type,
            node,
            ..
        } => {
            let who = format!("{} sensor {sensor}", sensor_type.as_str());
            let node_name = node.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
            match (sensor_type, o) {
                (SensorType::Container, Observation::ContainerImage(_)) => Ok(()),
                (SensorType::Container, Observation::Container(c)) => {
                    if c.facts.node.is_empty() || c.facts.node == node_name {
                        Ok(())
                    } else {
                        Err(refuse(
                            "NotYourNode",
                            format!(
                                "{who} runs on node {node_name} and may not report containers of node {}",
                                c.facts.node
                            ),
                        ))
                    }
                }
                (SensorType::Container, Observation::Node(n)) => {
                    let uid = node.as_ref().map(|n| n.uid.as_str()).unwrap_or_default();
                    if n.identity != uid {
                        Err(refuse(
                            "NotYourNode",
                            format!(
                                "{who} runs on node {node_name} (UID {uid}) and may report only that node, not the node with UID {}",
                                n.identity
                            ),
                        ))
                    } else if !n.facts.node_name.is_empty() && n.facts.node_name != node_name {
                        Err(refuse(
                            "NotYourNode",
                            format!(
                                "{who} runs on node {node_name}, but the report names node {}",
                                n.facts.node_name
                            ),
                        ))
                    } else {
                        Ok(())
                    }
                }
                (SensorType::Registry, Observation::ContainerImage(i)) if i.runtime.is_none() => {
                    Ok(())
                }
                (SensorType::Registry, Observation::ContainerImage(_)) => Err(refuse(
                    "NotANode",
                    format!("{who} runs on no node and names no runtime"),
                )),
                (SensorType::Runtime, Observation::RuntimeViolations(_)) => Ok(()),
                _ => Err(not_yours(&who)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::auth::BoundNode;
    use sightline_report::facts::{ContainerFacts, ImageFacts, NodeFacts, Violation};
    use sightline_report::{
        ContainerObservation, ImageObservation, NodeObservation, ViolationObservation,
    };

    fn sensor(t: SensorType) -> Caller {
        Caller::Sensor {
            sensor: "ns/s".into(),
            sensor_type: t,
            key: "k".into(),
            node: Some(BoundNode {
                name: "node-a".into(),
                uid: "aaaa-1".into(),
            }),
        }
    }

    fn image(runtime: Option<&str>) -> Observation {
        Observation::ContainerImage(ImageObservation {
            identity: "sha256:x".into(),
            facts: ImageFacts::default(),
            vulnerabilities: None,
            runtime: runtime.map(str::to_owned),
            reference: None,
        })
    }

    fn container(node: &str) -> Observation {
        Observation::Container(ContainerObservation {
            identity: "c1".into(),
            facts: ContainerFacts {
                node: node.into(),
                ..ContainerFacts::default()
            },
        })
    }

    fn node(uid: &str, name: &str) -> Observation {
        Observation::Node(NodeObservation {
            identity: uid.into(),
            facts: NodeFacts {
                node_name: name.into(),
                ..NodeFacts::default()
            },
        })
    }

    fn violations() -> Observation {
        Observation::RuntimeViolations(ViolationObservation {
            identity: "c1".into(),
            count: 1,
            last: Violation::default(),
            pod: None,
            namespace: None,
            container: None,
        })
    }

    fn reason(c: &Caller, o: &Observation) -> &'static str {
        decide(c, o).err().map_or("ok", |r| r.reason)
    }

    #[test]
    fn node_sensors_report_only_their_own_node() {
        let c = sensor(SensorType::Container);
        assert_eq!(reason(&c, &image(Some("containerd"))), "ok");
        assert_eq!(reason(&c, &container("node-a")), "ok");
        assert_eq!(reason(&c, &container("")), "ok");
        assert_eq!(reason(&c, &container("node-b")), "NotYourNode");
        assert_eq!(reason(&c, &node("aaaa-1", "node-a")), "ok");
        assert_eq!(reason(&c, &node("bbbb-2", "node-b")), "NotYourNode");
        assert_eq!(reason(&c, &node("aaaa-1", "node-b")), "NotYourNode");
        assert_eq!(reason(&c, &violations()), "KindNotAllowed");
    }

    #[test]
    fn each_type_reports_its_own_kinds() {
        let r = sensor(SensorType::Registry);
        assert_eq!(reason(&r, &image(None)), "ok");
        assert_eq!(reason(&r, &image(Some("docker"))), "NotANode");
        assert_eq!(reason(&r, &container("node-a")), "KindNotAllowed");
        let rt = sensor(SensorType::Runtime);
        assert_eq!(reason(&rt, &violations()), "ok");
        assert_eq!(reason(&rt, &image(Some("containerd"))), "KindNotAllowed");
        assert_eq!(
            reason(&sensor(SensorType::Passive), &image(None)),
            "KindNotAllowed"
        );
    }

    #[test]
    fn keys_report_images_only_and_never_as_a_node() {
        let k = Caller::Key { key: "ci".into() };
        assert_eq!(reason(&k, &image(None)), "ok");
        assert_eq!(reason(&k, &image(Some("containerd"))), "NotANode");
        assert_eq!(reason(&k, &node("aaaa-1", "node-a")), "KindNotAllowed");
        assert_eq!(reason(&k, &container("")), "KindNotAllowed");
    }
}
