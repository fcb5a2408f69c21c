//! End-to-end tests on the real local cluster (a node with containerd,
//! the kubelet and kube-proxy): the chart installed with images built
//! here, Service names resolved by the cluster's DNS, claims given
//! volumes by its storage provisioner, a container sensor
//! reporting its node, least-privilege RBAC,
//! restarts of the node's kubelet and containerd, a runtime sensor
//! blocking an exec in a pod, and the chart upgraded and uninstalled.
//!
//! One cluster serves every test (a node's iptables rules are global, so
//! only one can run on a machine), so this binary runs its own harness:
//! the tests run in order, each in its own namespace, a failure prints the
//! cluster's state (events, objects, pod logs) and the rest still run, and
//! the summary line has the shape `cargo test` prints.

mod admission;
mod chart;
mod dns;
mod rbac;
mod registry;
mod runtime;
mod sensor;
mod storage;
mod support;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use sightline_testenv::binaries::workspace_binary;
use sightline_testenv::cluster::Cluster;
use sightline_testenv::images::binary_image;
use sightline_testenv::node::Kubectl;

use support::{Env, OPERATOR, RELEASE_NS};

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (passed, failed) = rt.block_on(run(filter.as_deref()));
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn setup() -> Result<Env> {
    let cluster = Cluster::start(None).await?;
    eprintln!(
        "cluster up, node Ready in {:.1}s",
        cluster.startup.as_secs_f64()
    );
    let work = cluster.cp.dir().join("e2e");
    std::fs::create_dir_all(&work)?;
    let images = work.join("images");
    for (name, user) in [
        ("sightline-operator", "65532:65532"),
        ("sightline-sensor", "0:0"),
    ] {
        let archive = binary_image(&images, name, &workspace_binary(name)?, user)?;
        cluster.node.containerd()?.import(&archive)?;
    }
    let kubectl = Kubectl::of(&cluster.cp)?;
    Ok(Env {
        cluster,
        kubectl,
        work,
    })
}

/// Runs the tests in order; returns (passed, failed).
async fn run(filter: Option<&str>) -> (usize, usize) {
    let mut env = match setup().await {
        Ok(env) => env,
        Err(e) => {
            println!("test e2e_setup ... FAILED\n{e:#}");
            return (0, 1);
        }
    };
    let mut results = (0, 0);
    macro_rules! test {
        ($name:literal, $namespaces:expr, $body:expr) => {
            if filter.is_none_or(|f| $name.contains(f)) {
                let start = Instant::now();
                let outcome: Result<()> = $body;
                match outcome {
                    Ok(()) => {
                        println!(
                            "test {} ... ok ({:.1}s)",
                            $name,
                            start.elapsed().as_secs_f64()
                        );
                        results.0 += 1;
                    }
                    Err(e) => {
                        println!("test {} ... FAILED\n{e:#}", $name);
                        env.dump($namespaces);
                        results.1 += 1;
                    }
                }
            }
        };
    }
    test!(
        "chart_installs_the_operator",
        &[],
        chart::install(&env).await
    );
    test!(
        "pods_resolve_services_through_the_cluster_dns",
        &[dns::NS],
        dns::pods_resolve_services(&env).await
    );
    test!(
        "claims_get_volumes_from_the_local_provisioner",
        &[storage::NS],
        storage::claims_get_volumes_until_deleted(&env).await
    );
    test!(
        "container_sensor_reports_its_node",
        &[sensor::NS],
        sensor::reports_the_node(&env).await
    );
    test!(
        "image_policies_refuse_and_flag_pods",
        &[admission::NS],
        admission::refuses_and_flags_unscanned_images(&env).await
    );
    test!(
        "operator_rbac_is_exactly_what_it_needs",
        &[],
        rbac::assert_exactly(&env, RELEASE_NS, OPERATOR, &rbac::operator())
    );
    test!(
        "sensor_rbac_is_exactly_what_it_needs",
        &[sensor::NS],
        rbac::assert_exactly(
            &env,
            sensor::NS,
            &format!("sightline-sensor-{}", sensor::SENSOR),
            &rbac::container_sensor(sensor::SENSOR)
        )
    );
    test!(
        "sensor_survives_kubelet_and_containerd_restarts",
        &[sensor::NS],
        sensor::survives_runtime_restarts(&mut env).await
    );
    test!(
        "deleting_the_sensor_keeps_the_inventory",
        &[sensor::NS],
        sensor::deleting_the_sensor_keeps_the_inventory(&env).await
    );
    test!(
        "registry_sensor_cronjob_scans_a_registry",
        &[registry::NS, crate::support::RELEASE_NS],
        registry::cronjob_scans_a_registry(&env).await
    );
    test!(
        "registry_sensor_rbac_is_exactly_what_it_needs",
        &[registry::NS],
        rbac::assert_exactly(
            &env,
            registry::NS,
            "sightline-sensor-registry",
            &rbac::registry_sensor("registry")
        )
    );
    test!(
        "runtime_sensor_blocks_an_exec_in_a_pod",
        &[runtime::NS],
        runtime::blocks_an_exec_in_a_pod(&env).await
    );
    test!(
        "runtime_sensor_rbac_is_exactly_what_it_needs",
        &[runtime::NS],
        rbac::assert_exactly(
            &env,
            runtime::NS,
            "sightline-sensor-runtime",
            &rbac::runtime_sensor("runtime")
        )
    );
    test!(
        "runtime_sensor_removed",
        &[runtime::NS],
        runtime::remove(&env).await
    );
    test!(
        "chart_upgrades_crds_and_values",
        &[],
        chart::upgrade(&env).await
    );
    test!(
        "chart_uninstall_keeps_crds_and_assets",
        &[],
        chart::uninstall(&env).await
    );
    results
}
