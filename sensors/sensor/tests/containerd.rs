//! The container sensor on a containerd node, against a real
//! kube-apiserver and a real containerd with its CRI plugin: images
//! imported before and while it runs (the second through containerd's
//! event stream), their layers read from the content store, and a
//! container run through CRI in a pod sandbox, as a kubelet would run it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use kube::api::Api;
use serde_json::json;
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::archive::{Layer, RunConfig, apk_layer, docker_archive};
use sightline_testenv::containerd::Containerd;
use sightline_testenv::images::debian_rootfs;
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

use support::{
    alpine, assert_debian_image, asset_status, container_identity, ingest, openssl_advisories,
    start_sensor, top_fixes, vuln_db,
};

/// Writes an Alpine-format image archive into `dir` and imports it;
/// returns the image ID.
fn import_alpine(
    ctrd: &Containerd,
    dir: &std::path::Path,
    tag: &str,
    release: &str,
    openssl: &str,
) -> Result<String> {
    let (os, db) = alpine(release, openssl);
    let file = tag.replace([':', '/'], "_");
    let layer = apk_layer(dir, &file, &os, &db)?;
    let archive = dir.join(format!("{file}.tar"));
    let id = docker_archive(&[tag], &[layer], &RunConfig::default(), &archive)?;
    ctrd.import(&archive)?;
    Ok(id)
}

/// Runs `sleep 600` from `image` in a pod sandbox on the host network
/// (no CNI needed), labelled as the kubelet labels pod containers.
async fn run_pod(
    cri: &mut RuntimeServiceClient<Channel>,
    image: &str,
    logs: &std::path::Path,
) -> Result<(String, String)> {
    let labels = |extra: &[(&str, &str)]| -> HashMap<String, String> {
        [
            ("io.kubernetes.pod.name", "web-1"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", "6a0c7b4e-0001"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-1".into(),
            uid: "6a0c7b4e-0001".into(),
            namespace: "shop".into(),
            attempt: 0,
        }),
        // Host-network pods share the node's UTS namespace: no hostname.
        hostname: String::new(),
        log_directory: logs.display().to_string(),
        labels: labels(&[]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    };
    let pod = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let container = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..ImageSpec::default()
                }),
                command: vec!["sleep".into(), "600".into()],
                labels: labels(&[("io.kubernetes.container.name", "app")]),
                log_path: "app.log".into(),
                ..ContainerConfig::default()
            }),
            sandbox_config: Some(sandbox),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .context("StartContainer")?;
    Ok((pod, container))
}

/// The Node `node-a` as a kubelet on AWS would register it; returns its UID.
async fn create_node(client: &kube::Client) -> Result<String> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams, PostParams};
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"},
        "spec": {"providerID": "aws:///eu-west-1a/i-0123456789abcdef0"},
    }))?;
    let node = nodes.create(&PostParams::default(), &node).await?;
    let status = json!({"status": {"nodeInfo": {
        "kubeletVersion": "v1.34.4", "kubeProxyVersion": "", "osImage": "Debian GNU/Linux 12 (bookworm)",
        "architecture": "amd64", "operatingSystem": "linux", "kernelVersion": "", "containerRuntimeVersion": "",
        "machineID": "", "systemUUID": "", "bootID": "",
    }}});
    nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    node.metadata.uid.context("the Node's UID")
}

/// The Node Asset holds this machine's facts, read independently here.
fn assert_node_facts(status: &serde_json::Value, uid: &str) -> Result<()> {
    let o = &status["observed"];
    assert_eq!(status["kind"], "Node");
    assert_eq!(status["identity"], uid);
    assert_eq!(o["nodeName"], "node-a");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    assert_eq!(o["kernelVersion"], kernel.trim());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(o["cpu"]["count"], processors);
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemTotal")?;
    assert_eq!(o["memoryBytes"], kib * 1024);
    let os = std::fs::read_to_string("/etc/os-release")?;
    let id = os
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .context("ID")?
        .trim_matches('"');
    assert_eq!(o["osRelease"]["ID"], id);
    assert_eq!(o["architecture"], "amd64");
    // The kernel's word on a hypervisor (the CPUID bit Linux reports).
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"));
    assert_eq!(o["virtualized"], hypervisor);
    assert_eq!(o["hypervisor"].is_string(), hypervisor, "{o}");
    assert_eq!(o["cloudProvider"], "aws");
    assert_eq!(o["kubeletVersion"], "v1.34.4");
    let software = o["software"].as_array().context("software")?;
    assert!(
        software.contains(&json!({"name": "kubelet", "version": "v1.34.4"})),
        "{software:?}"
    );
    assert!(
        software.iter().any(|s| s["name"] == "containerd"
            && s["version"].as_str().is_some_and(|v| v.starts_with("1.6."))),
        "{software:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_images_and_containers_from_containerd() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let assets: Api<Asset> = Api::all(client.clone());
    let ctrd = Containerd::start()?;
    let dir = tempfile::tempdir()?;
    let db_path = vuln_db(dir.path())?;

    let old = import_alpine(
        &ctrd,
        dir.path(),
        "sensor-test/alpine:old",
        "3.19.0",
        "3.1.4-r2",
    )?;
    let node_uid = create_node(&client).await?;

    let config = json!({"runtimes": [{"type": "containerd", "endpoint": ctrd.endpoint()}]});
    let log = dir.path().join("sensor.log");
    let (api, store) = ingest(&cp).await?;
    let token = container_identity(&cp, &config, dir.path()).await?;
    let mut sensor = start_sensor(&cp, &api, &token, &config, &db_path, &log)?;
    let tail = || {
        format!(
            "sensor log:\n{}\n{}",
            sightline_testenv::process::tail(&log, 40),
            ctrd.logs()
        )
    };

    // An image present at start: read from the content store, matched, reported.
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &old),
        "the old image's Asset",
        // The operator writes the facts, then (under their own field
        // manager) which nodes hold the image: wait for both.
        |s| s.get("findings").is_some() && s["sources"][0]["nodes"].is_object(),
    )
    .await
    .with_context(tail)?;
    assert_eq!(status["identity"], old.as_str());
    let observed = &status["observed"];
    assert_eq!(observed["osRelease"]["ID"], "alpine");
    assert_eq!(
        observed["repoTags"],
        json!(["docker.io/sensor-test/alpine:old"])
    );
    assert_eq!(observed["packages"], json!({"total": 2, "apk": 2}));
    assert_eq!(
        status["sources"][0]["nodes"],
        json!({"count": 1, "recent": [{"node": "node-a", "runtime": "containerd"}]})
    );
    assert_eq!(observed["layerCount"], 1);
    assert_eq!(top_fixes(&status), openssl_advisories());

    // An image imported while the sensor runs: containerd's event brings it in.
    let new = import_alpine(
        &ctrd,
        dir.path(),
        "sensor-test/alpine:new",
        "3.19.1",
        "3.1.4-r5",
    )?;
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &new),
        "the new image's Asset",
        |s| s.get("findings").is_some(),
    )
    .await
    .with_context(tail)?;
    assert_eq!(status["findings"]["vulnerabilities"]["unknown"], 0);

    // A container of a real Debian image, run through CRI in a pod sandbox.
    let archive = dir.path().join("debian.tar");
    let debian = docker_archive(
        &["sensor-test/debian:12"],
        &[Layer::from_tar(&debian_rootfs()?)?],
        &RunConfig::default(),
        &archive,
    )?;
    ctrd.import(&archive)?;
    let channel = containerd_client::connect(ctrd.socket()).await?;
    let mut cri = RuntimeServiceClient::new(channel);
    let (pod, container) = run_pod(&mut cri, "docker.io/sensor-test/debian:12", dir.path())
        .await
        .with_context(tail)?;
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::Container, &container),
        "the container's Asset",
        |_| true,
    )
    .await
    .with_context(tail)?;
    let observed = &status["observed"];
    assert_eq!(observed["name"], "app");
    assert_eq!(observed["pod"], "web-1");
    assert_eq!(observed["namespace"], "shop");
    assert_eq!(observed["container"], "app");
    assert_eq!(observed["runtime"], "containerd");
    assert_eq!(observed["imageId"], debian.as_str());
    assert_eq!(
        observed["imageAsset"],
        asset_name(AssetKind::ContainerImage, &debian)
    );
    assert!(
        observed["started"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{observed}"
    );
    // Starting the container analysed its image: the whole dpkg database.
    assert_debian_image(&assets, &debian)
        .await
        .with_context(tail)?;
    // Its whole analysis is in the detail store: the SBOM served from it
    // has exactly the packages of an SBOM of the same archive made here.
    let name = asset_name(AssetKind::ContainerImage, &debian);
    let kept = helpers::wait_for(
        "the Debian image's details",
        Duration::from_secs(60),
        || {
            let (store, name) = (&store, &name);
            async move { store.latest(name, None).await.ok().flatten() }
        },
    )
    .await
    .with_context(tail)?;
    let local = sightline_scan::source::docker_archive::analyze(
        &archive,
        None,
        &sightline_scan::Limits::default(),
    )?;
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: "test".into(),
    };
    let components = |image: &sightline_scan::source::Image| {
        sightline_scan::sbom::cyclonedx(image, &tool, "2026-01-01T00:00:00Z")["components"].clone()
    };
    assert!(local.analysis.packages.len() > 50);
    assert_eq!(components(&kept.image), components(&local));
    assert!(
        kept.vulnerabilities.is_some(),
        "matched against the database"
    );

    // The node itself, as a cloud agent reports it.
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::Node, &node_uid),
        "the node's Asset",
        |_| true,
    )
    .await
    .with_context(tail)?;
    assert_node_facts(&status, &node_uid)?;

    let exit = sensor
        .terminate(Duration::from_secs(10))
        .context("the sensor did not stop on SIGTERM")?;
    assert!(exit.success(), "{exit}: {}", tail());
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}
