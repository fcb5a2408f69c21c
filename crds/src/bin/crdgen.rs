//! Prints every Sightline CRD as YAML (`--helm` prints the chart template).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let helm = std::env::args().any(|a| a == "--helm");
    let out = if helm {
        sightline_crds::crdgen::helm_template()
    } else {
        sightline_crds::crdgen::yaml()
    };
    match out {
        Ok(yaml) => {
            if std::io::stdout().write_all(yaml.as_bytes()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: could not serialize the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}
