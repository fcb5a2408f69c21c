//! Go binaries: the build information the Go toolchain (1.18 and later)
//! embeds in every binary it links — the Go version, the main module and
//! every dependency module with its version — found by streaming the binary
//! past a search for the build-info header, never holding it whole.

use std::io::Read;

use super::{Package, PackageKind};

/// The build-info header's magic, at the start of a 16-byte aligned block.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The header is 32 bytes; the inline strings follow it.
const HEADER: usize = 32;
/// Flag: version and module info are stored inline (Go 1.18+).
const FLAG_INLINE: u8 = 0x2;
/// How much is read after the header for the two strings.
const MAX_INFO: usize = 1 << 20;
/// The 16-byte markers around the module info string.
const MARKER: usize = 16;

/// What a Go binary says about how it was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// `go1.22.3`.
    pub go_version: String,
    /// The main package path (`k8s.io/kubernetes/cmd/kubelet`).
    pub path: Option<String>,
    /// The main module and its version (`(devel)` for local builds).
    pub main: Option<(String, String)>,
    /// Dependency modules with their versions, replacements applied.
    pub deps: Vec<(String, String)>,
}

/// Why a binary's build info could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum GoError {
    /// A Go binary from before Go 1.18 (build info by pointers, not inline).
    Old,
    /// The header is there but what follows is malformed.
    Malformed(&'static str),
}

/// Streams `r` (an ELF file) looking for Go build info. `Ok(None)`: not a
/// Go binary. Reads at most the file, in 64 KiB chunks, plus up to 1 MiB
/// after the header.
pub fn scan(mut r: impl Read) -> std::io::Result<Option<Result<BuildInfo, GoError>>> {
    let mut buf = vec![0u8; 64 << 10];
    // `window` holds the unsearched tail of the previous chunk, so a magic
    // spanning two chunks is still found.
    let mut window: Vec<u8> = Vec::with_capacity(buf.len() + MAGIC.len());
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        window.extend_from_slice(&buf[..n]);
        if let Some(at) = find(&window, MAGIC) {
            // Keep what follows the magic and read the rest of the info.
            let mut info = window.split_off(at);
            let mut more = (&mut r).take((HEADER + MAX_INFO).saturating_sub(info.len()) as u64);
            more.read_to_end(&mut info)?;
            return Ok(Some(parse(&info)));
        }
        let keep = MAGIC.len() - 1;
        if window.len() > keep {
            window.drain(..window.len() - keep);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Parses build info starting at its header.
pub fn parse(data: &[u8]) -> Result<BuildInfo, GoError> {
    if data.len() < HEADER || !data.starts_with(MAGIC) {
        return Err(GoError::Malformed("truncated header"));
    }
    let flags = data[MAGIC.len() + 1];
    if flags & FLAG_INLINE == 0 {
        return Err(GoError::Old);
    }
    let mut rest = &data[HEADER..];
    let version = read_string(&mut rest).ok_or(GoError::Malformed("Go version string"))?;
    let modinfo = read_string(&mut rest).ok_or(GoError::Malformed("module info string"))?;
    let version = String::from_utf8_lossy(version).into_owned();
    if !version.starts_with("go") {
        return Err(GoError::Malformed("Go version does not start with 'go'"));
    }
    // The module info is wrapped in 16-byte markers.
    let modinfo = if modinfo.len() > 2 * MARKER && modinfo[modinfo.len() - MARKER - 1] == b'\n' {
        &modinfo[MARKER..modinfo.len() - MARKER]
    } else {
        modinfo
    };
    let text = String::from_utf8_lossy(modinfo);
    let mut info = BuildInfo {
        go_version: version,
        path: None,
        main: None,
        deps: Vec::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", p, ..] => info.path = Some((*p).to_owned()),
            ["mod", m, v, ..] => info.main = Some(((*m).to_owned(), (*v).to_owned())),
            ["dep", m, v, ..] => info.deps.push(((*m).to_owned(), (*v).to_owned())),
            // A replacement applies to the dependency listed just before it.
            ["=>", m, v, ..] => {
                if let Some(last) = info.deps.last_mut() {
                    *last = ((*m).to_owned(), (*v).to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// An unsigned varint-prefixed string.
fn read_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    if data.len() < len {
        return None;
    }
    let (s, rest) = data.split_at(len);
    *data = rest;
    Some(s)
}

/// The packages of a Go binary: the standard library at the toolchain's
/// version (`stdlib`, as Go's vulnerability database names it), the main
/// module unless it is a local `(devel)` build, and every dependency.
pub fn packages(info: &BuildInfo, path: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut push = |name: &str, version: &str| {
        if name.is_empty() || version.is_empty() || version == "(devel)" {
            return;
        }
        out.push(Package {
            kind: PackageKind::Go,
            name: name.to_owned(),
            version: version.to_owned(),
            source: None,
            arch: None,
            purl: String::new(),
            layer: 0,
            path: path.to_owned(),
        });
    };
    // go1.22.3 (and go1.22.3 X:nocoverageredesign): the stdlib version.
    let go = info
        .go_version
        .split_whitespace()
        .next()
        .unwrap_or_default();
    push("stdlib", &format!("v{}", go.trim_start_matches("go")));
    if let Some((m, v)) = &info.main {
        push(m, v);
    }
    for (m, v) in &info.deps {
        push(m, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = n as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.push(8);
        v.push(FLAG_INLINE);
        v.resize(HEADER, 0);
        v.extend(varint(version.len()));
        v.extend(version.as_bytes());
        let wrapped = format!("{}{modinfo}{}", "A".repeat(16), "B".repeat(16));
        v.extend(varint(wrapped.len()));
        v.extend(wrapped.as_bytes());
        v
    }

    #[test]
    fn found_across_chunk_boundaries_and_parsed() {
        let modinfo = "path\texample.com/cmd/app\nmod\texample.com\tv1.2.0\th1:x=\ndep\tgolang.org/x/net\tv0.17.0\th1:y=\n=>\tgolang.org/x/net\tv0.23.0\th1:z=\ndep\tgithub.com/a/b\tv1.0.0\th1:w=\nbuild\t-compiler=gc\n";
        let mut file = b"\x7fELF".to_vec();
        // Put the magic across a 64 KiB boundary.
        file.resize((64 << 10) - 5, 0);
        file.extend(blob("go1.22.3", modinfo));
        file.extend(vec![0u8; 1000]);
        let info = scan(&file[..])
            .expect("io")
            .expect("a Go binary")
            .expect("parsed");
        assert_eq!(info.go_version, "go1.22.3");
        assert_eq!(info.path.as_deref(), Some("example.com/cmd/app"));
        let pkgs: Vec<(String, String)> = packages(&info, "app")
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        assert_eq!(
            pkgs,
            [
                ("stdlib".to_owned(), "v1.22.3".to_owned()),
                ("example.com".to_owned(), "v1.2.0".to_owned()),
                ("golang.org/x/net".to_owned(), "v0.23.0".to_owned()),
                ("github.com/a/b".to_owned(), "v1.0.0".to_owned()),
            ]
        );
    }

    #[test]
    fn not_go_old_go_and_garbage() {
        assert_eq!(scan(&b"\x7fELF plain C binary"[..]).expect("io"), None);
        let mut old = MAGIC.to_vec();
        old.extend([8, 0]);
        old.resize(64, 0);
        assert_eq!(parse(&old), Err(GoError::Old));
        let mut bad = MAGIC.to_vec();
        bad.extend([8, FLAG_INLINE]);
        bad.resize(HEADER, 0);
        bad.extend([0xff, 0xff, 0xff]);
        assert!(matches!(parse(&bad), Err(GoError::Malformed(_))));
    }
}
