//! One vocabulary across the CLI: every command that prints a document
//! takes `-o/--output FORMAT` (and, where a file makes sense,
//! `--output-file FILE`), the old spellings are hidden, and shells get
//! completion scripts.

use std::process::{Command, Output};

use anyhow::{Result, ensure};

fn sightline(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_printing_command_says_output_the_same_way() -> Result<()> {
    for (command, file) in [
        (&["search"][..], false),
        (&["inventory"][..], false),
        (&["vulns"][..], true),
        (&["sbom"][..], true),
        (&["scan", "image"][..], true),
        (&["db", "import"][..], true),
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let o = sightline(&args)?;
        let help = text(&o.stdout);
        ensure!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        // `db import` writes a file and has no format to choose.
        let has_format = command != ["db", "import"];
        ensure!(
            help.contains("-o, --output <OUTPUT>") == has_format,
            "{args:?}:\n{help}"
        );
        ensure!(
            !help.contains("--format") && !help.contains("--json"),
            "old spellings are hidden: {args:?}:\n{help}"
        );
        ensure!(
            help.contains("--output-file <FILE>") == file,
            "{args:?}:\n{help}"
        );
    }
    // Format names are the same everywhere.
    let o = sightline(&["scan", "image", "--help"])?;
    let help = text(&o.stdout);
    for name in [
        "table",
        "json",
        "sarif",
        "cyclonedx-json",
        "spdx-json",
        "junit",
    ] {
        ensure!(help.contains(name), "{name} missing:\n{help}");
    }
    // The old `--output FILE` of scan image is now a format: a file name is
    // refused with the formats listed, not written somewhere unexpected.
    let o = sightline(&["scan", "image", "docker:x", "--output", "report.sarif"])?;
    ensure!(o.status.code() == Some(2), "{o:?}");
    let err = text(&o.stderr);
    ensure!(
        err.contains("report.sarif") && err.contains("cyclonedx-json"),
        "{err}"
    );
    Ok(())
}

#[test]
fn completion_scripts_for_each_shell() -> Result<()> {
    for (shell, marker) in [
        ("bash", "complete -F _sightline"),
        ("zsh", "#compdef sightline"),
        ("fish", "complete -c sightline"),
    ] {
        let o = sightline(&["completion", shell])?;
        ensure!(o.status.success(), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        ensure!(script.contains(marker), "{shell}:\n{script}");
        ensure!(
            script.contains("search") && script.contains("cyclonedx-json"),
            "{shell} completes subcommands and format names"
        );
    }
    let o = sightline(&["completion", "tcsh"])?;
    ensure!(o.status.code() == Some(2) && text(&o.stderr).contains("bash"));
    Ok(())
}
