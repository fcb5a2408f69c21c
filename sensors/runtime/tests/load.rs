//! The eBPF object against the running kernel (run as root).

use std::time::{Duration, Instant};

use sightline_runtime_sensor::event::{Event, decode};
use sightline_runtime_sensor::loader::{Limits, load};

#[test]
fn programs_load_and_report_an_exec() {
    let mut loaded = load(Limits::default()).expect("loading the eBPF programs");
    let child = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut child = child;
    child.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        while let Some(record) = loaded.events.next() {
            if let Ok(Event::Exec(e)) = decode(&record)
                && e.common.pid == pid
            {
                assert_eq!(e.filename, "/bin/true");
                assert_eq!(e.args, vec!["/bin/true".to_string()]);
                assert_eq!(e.comm, "true");
                assert_ne!(e.ino, 0);
                seen = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen, "no exec record for pid {pid}");
}
