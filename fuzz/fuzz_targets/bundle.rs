//! The bundle reader on arbitrary bytes, before and after the signature:
//! the first byte chooses whether the rest is read as a whole bundle (the
//! signature never verifies, so this covers the archive and the bounds on
//! the first two members), or as a manifest (its length in the next two
//! bytes) that a pinned key signs, followed by arbitrary archive bytes (the
//! manifest's checks and the member checks). It never panics, and what it
//! accepts holds exactly the members the manifest lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::bundle::{self, SigningKey};

fn tar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    if header.set_path(name).is_err() {
        return;
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fuzz_target!(|data: &[u8]| {
    let Ok(key) = SigningKey::from_seed(&[7; 32]) else {
        return;
    };
    let keys = [key.public()];
    let input = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) if rest.len() >= 2 => {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            let (manifest, tail) = rest[2..].split_at(len);
            let mut out = Vec::new();
            tar_member(&mut out, bundle::MANIFEST, manifest);
            tar_member(&mut out, bundle::SIGNATURE, key.sign_manifest(manifest).as_bytes());
            out.extend_from_slice(tail);
            out
        }
        _ => return,
    };
    let mut taken = Vec::new();
    let result = bundle::verify(&input[..], &keys, |member, body| {
        let mut n = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            let read = body.read(&mut buf)?;
            if read == 0 {
                break;
            }
            n += read as u64;
        }
        taken.push((member.name.clone(), n));
        Ok(())
    });
    if let Ok(manifest) = result {
        let listed: Vec<(String, u64)> =
            manifest.members.iter().map(|m| (m.name.clone(), m.size)).collect();
        assert_eq!(taken, listed, "accepted members differ from the manifest");
        assert!(manifest.members.iter().any(|m| m.name == bundle::DATABASE));
    }
});

use std::io::Read as _;
