//! Events carry the cgroup of the process, and the cgroup leads to the
//! container: a container run by a real dockerd (from Debian) and a process
//! on the host (as root).

use std::time::{Duration, Instant};

use sightline_runtime_sensor::attribution::{Attributor, Origin};
use sightline_runtime_sensor::event::Event;
use sightline_runtime_sensor::sensor::{Options, Report, Sensor};
use sightline_testenv::docker::Docker;

#[test]
fn exec_events_lead_to_the_container_that_ran_them_or_to_the_host() {
    let docker = Docker::start().expect("starting dockerd");
    let busybox = std::fs::read("/bin/busybox").expect("busybox (apt-get install busybox-static)");
    docker
        .import_tree("attribution/busybox:1", &[("bin/busybox", &busybox, 0o755)])
        .expect("importing the image");
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let mut attributor = Attributor::new(Options::default().cgroup_root);

    // The container stays up until its exec has been attributed: its
    // cgroup exists only while it runs.
    let id = docker
        .run(&[
            "run",
            "-d",
            "--network=none",
            "attribution/busybox:1",
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox sleep 30",
        ])
        .expect("docker run")
        .trim()
        .to_string();
    let host = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn")
        .id();

    let mut container_seen = None;
    let mut host_seen = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (container_seen.is_none() || host_seen.is_none()) {
        let mut execs = Vec::new();
        sensor.drain(|r| {
            if let Report::Event(Event::Exec(e)) = r {
                execs.push(e);
            }
        });
        for e in execs {
            if e.args.iter().any(|a| a == "sleep") && e.filename == "/bin/busybox" {
                container_seen = Some(attributor.origin(e.common.cgroup_id));
            }
            if e.common.pid == host {
                host_seen = Some(attributor.origin(e.common.cgroup_id));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = docker.run(&["rm", "-f", &id]);
    match container_seen.expect("the container's exec was seen") {
        Some(Origin::Container { id: got, .. }) => assert_eq!(got, id),
        other => panic!("the container's exec was attributed to {other:?}, not {id}"),
    }
    assert_eq!(
        host_seen.expect("the host's exec was seen"),
        Some(Origin::Host)
    );
}
