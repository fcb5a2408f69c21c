//! Rust binaries built with `cargo auditable`: the crates compiled into
//! them, from the zlib-compressed JSON the tool links into a section
//! named `.dep-v0` (ELF; the format of the `auditable-serde` crate).
//!
//! The section is not loaded at run time (no `SHF_ALLOC`), so the linker
//! puts it after every loaded segment, and the section header table that
//! says where it is sits at the very end of the file. A layer streams
//! past once, so [`Capture`] keeps, as the binary goes by, the ELF and
//! program headers (to learn where the loaded part ends), a bounded window
//! after that point, and the section header table; at the end the
//! sections inside the window that could be `.dep-v0` are tried, each
//! accepted only if it inflates to the JSON `cargo auditable` writes.
//! Memory stays bounded at [`MAX_WINDOW`] plus the headers.

use std::io::{self, Read};

use serde::Deserialize;

use super::{Package, PackageKind};

/// How much of the file start is kept for the ELF and program headers.
const HEAD: usize = 64 << 10;
/// How much is kept after the end of the loaded segments, where
/// non-loaded sections such as `.comment` and `.dep-v0` come first.
pub const MAX_WINDOW: usize = 4 << 20;
/// Largest section header table kept (16,384 64-bit entries).
const MAX_SECTION_TABLE: usize = 1 << 20;
/// Largest dependency list inflated (a real one is a few KiB).
const MAX_JSON: u64 = 8 << 20;

/// `PT_LOAD`, `SHT_PROGBITS`, `SHF_ALLOC`.
const PT_LOAD: u32 = 1;
const SHT_PROGBITS: u32 = 1;
const SHF_ALLOC: u64 = 2;

/// Reads through to `inner`, keeping what the audit data needs.
pub struct Capture<R> {
    inner: R,
    pos: u64,
    head: Vec<u8>,
    layout: Option<Layout>,
    /// Whether the headers were read (a failure means: not a usable ELF).
    parsed: bool,
    window: Vec<u8>,
    table: Vec<u8>,
}

/// Where the interesting parts of an ELF file are.
#[derive(Clone, Copy, Debug)]
struct Layout {
    big_endian: bool,
    wide: bool,
    /// End of the loaded segments' file content.
    loaded_end: u64,
    /// Section header table offset, entry size and count.
    sh_off: u64,
    sh_entsize: usize,
    sh_num: usize,
}

impl<R: Read> Capture<R> {
    /// Wraps the reader of an ELF file.
    pub fn new(inner: R) -> Self {
        Capture {
            inner,
            pos: 0,
            head: Vec::new(),
            layout: None,
            parsed: false,
            window: Vec::new(),
            table: Vec::new(),
        }
    }

    /// After the whole file went through: the crates its audit data lists,
    /// `None` when it has none (not built with `cargo auditable`, or the
    /// section lies beyond the window), or why the data is malformed.
    pub fn finish(mut self) -> Option<Result<Vec<(String, String)>, String>> {
        if !self.parsed {
            // A file shorter than the head: everything is in it.
            self.start_windows();
        }
        let layout = self.layout?;
        let rd = Rd {
            big: layout.big_endian,
        };
        for i in 0..layout.sh_num {
            let e = self
                .table
                .get(i * layout.sh_entsize..(i + 1) * layout.sh_entsize)?;
            let (kind, flags, offset, size) = if layout.wide {
                (rd.u32(e, 4), rd.u64(e, 8), rd.u64(e, 24), rd.u64(e, 32))
            } else {
                (
                    rd.u32(e, 4),
                    u64::from(rd.u32(e, 8)),
                    u64::from(rd.u32(e, 16)),
                    u64::from(rd.u32(e, 20)),
                )
            };
            if kind != SHT_PROGBITS || flags & SHF_ALLOC != 0 || size < 2 {
                continue;
            }
            let Some(start) = offset.checked_sub(layout.loaded_end) else {
                continue;
            };
            let (Ok(start), Ok(size)) = (usize::try_from(start), usize::try_from(size)) else {
                continue;
            };
            let Some(data) = self.window.get(start..start.saturating_add(size)) else {
                continue;
            };
            // A zlib stream (deflate, 32 KiB window, valid check bits).
            if data[0] != 0x78 || (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 != 0 {
                continue;
            }
            if let Some(found) = parse_audit(data) {
                return Some(found);
            }
        }
        None
    }

    /// Parses the headers from the head and starts each window with the
    /// part of it the head already holds.
    fn start_windows(&mut self) {
        self.parsed = true;
        self.layout = parse_layout(&self.head);
        let Some(l) = self.layout else { return };
        let head = &self.head;
        let from_head = |from: u64, len: usize| -> Vec<u8> {
            match usize::try_from(from) {
                Ok(s) if s < head.len() => head[s..head.len().min(s.saturating_add(len))].to_vec(),
                _ => Vec::new(),
            }
        };
        self.window = from_head(l.loaded_end, MAX_WINDOW);
        self.table = from_head(l.sh_off, l.sh_entsize * l.sh_num);
    }

    fn keep(&mut self, start: u64, data: &[u8]) {
        let mut rest = data;
        let mut at = start;
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
            if self.head.len() == HEAD {
                self.start_windows();
            }
        }
        let Some(l) = self.layout else { return };
        let end = at + rest.len() as u64;
        // The part of [from, from + len) in this chunk, appended.
        let copy = |from: u64, len: usize, out: &mut Vec<u8>| {
            let (s, e) = (at.max(from), end.min(from.saturating_add(len as u64)));
            if s < e {
                out.extend_from_slice(&rest[(s - at) as usize..(e - at) as usize]);
            }
        };
        copy(l.loaded_end, MAX_WINDOW, &mut self.window);
        copy(l.sh_off, l.sh_entsize * l.sh_num, &mut self.table);
    }
}

impl<R: Read> Read for Capture<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let start = self.pos;
        self.pos += n as u64;
        self.keep(start, &buf[..n]);
        Ok(n)
    }
}

/// Reads integers in the file's byte order; out-of-range reads give 0.
struct Rd {
    big: bool,
}

impl Rd {
    fn bytes<const N: usize>(&self, d: &[u8], at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        if let Some(s) = d.get(at..at + N) {
            b.copy_from_slice(s);
        }
        if self.big {
            b.reverse();
        }
        b
    }
    fn u16(&self, d: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(d, at))
    }
    fn u32(&self, d: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(d, at))
    }
    fn u64(&self, d: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(d, at))
    }
}

/// The layout of an ELF file from its first bytes (header and program
/// headers), or `None` if they are not there or make no sense.
fn parse_layout(head: &[u8]) -> Option<Layout> {
    if head.len() < 52 || !head.starts_with(b"\x7fELF") {
        return None;
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let rd = Rd {
        big: match head[5] {
            1 => false,
            2 => true,
            _ => return None,
        },
    };
    let (ph_off, sh_off, ph_entsize, ph_num, sh_entsize, sh_num) = if wide {
        (
            rd.u64(head, 0x20),
            rd.u64(head, 0x28),
            rd.u16(head, 0x36),
            rd.u16(head, 0x38),
            rd.u16(head, 0x3a),
            rd.u16(head, 0x3c),
        )
    } else {
        (
            u64::from(rd.u32(head, 0x1c)),
            u64::from(rd.u32(head, 0x20)),
            rd.u16(head, 0x2a),
            rd.u16(head, 0x2c),
            rd.u16(head, 0x2e),
            rd.u16(head, 0x30),
        )
    };
    let (ph_entsize, ph_num) = (usize::from(ph_entsize), usize::from(ph_num));
    let (sh_entsize, sh_num) = (usize::from(sh_entsize), usize::from(sh_num));
    let min_ph = if wide { 56 } else { 32 };
    let min_sh = if wide { 64 } else { 40 };
    if ph_entsize < min_ph || sh_entsize < min_sh || sh_num == 0 {
        return None;
    }
    if sh_entsize * sh_num > MAX_SECTION_TABLE {
        return None;
    }
    let ph_off = usize::try_from(ph_off).ok()?;
    let mut loaded_end = 0u64;
    for i in 0..ph_num {
        // Offsets come from the file: checked, never trusted.
        let start = ph_off.checked_add(i.checked_mul(ph_entsize)?)?;
        let e = head.get(start..start.checked_add(ph_entsize)?)?;
        let (kind, offset, filesz) = if wide {
            (rd.u32(e, 0), rd.u64(e, 8), rd.u64(e, 32))
        } else {
            (
                rd.u32(e, 0),
                u64::from(rd.u32(e, 4)),
                u64::from(rd.u32(e, 16)),
            )
        };
        if kind == PT_LOAD {
            loaded_end = loaded_end.max(offset.saturating_add(filesz));
        }
    }
    Some(Layout {
        big_endian: rd.big,
        wide,
        loaded_end,
        sh_off,
        sh_entsize,
        sh_num,
    })
}

#[derive(Deserialize)]
struct VersionInfo {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    source: String,
    /// `runtime` (the default, then omitted) or `build`.
    #[serde(default)]
    kind: Option<String>,
}

/// Inflates and parses a candidate section: `None` if it is not
/// `cargo auditable` data at all, an error if it is but is malformed.
fn parse_audit(data: &[u8]) -> Option<Result<Vec<(String, String)>, String>> {
    let mut json = Vec::new();
    let inflated = flate2::read::ZlibDecoder::new(data)
        .take(MAX_JSON + 1)
        .read_to_end(&mut json);
    if inflated.is_err() || !json.starts_with(b"{\"packages\"") {
        return None;
    }
    if json.len() as u64 > MAX_JSON {
        return Some(Err("its dependency list inflates past 8 MiB".into()));
    }
    let info: VersionInfo = match serde_json::from_slice(&json) {
        Ok(i) => i,
        Err(e) => return Some(Err(format!("malformed dependency list: {e}"))),
    };
    Some(Ok(info
        .packages
        .into_iter()
        // Registry crates linked in; build scripts and proc macros
        // (`build`) run at build time and are not in the binary, and local
        // and git crates are the project itself.
        .filter(|p| matches!(p.source.as_str(), "crates.io" | "registry"))
        .filter(|p| p.kind.as_deref() != Some("build"))
        .map(|p| (p.name, p.version))
        .collect()))
}

/// The packages of an audited binary at `path`.
pub fn packages(crates: Vec<(String, String)>, path: &str) -> Vec<Package> {
    crates
        .into_iter()
        .map(|(name, version)| Package {
            kind: PackageKind::Cargo,
            name,
            version,
            source: None,
            arch: None,
            purl: String::new(),
            layer: 0,
            path: path.to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(text: &str) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(text.as_bytes()).expect("zlib");
        z.finish().expect("zlib")
    }

    /// A little-endian ELF64 of `size` bytes with one loaded segment of
    /// `loaded` bytes, then `audit` (as a non-alloc PROGBITS section),
    /// then the section header table.
    fn elf(loaded: usize, audit: &[u8], pad: usize) -> Vec<u8> {
        let mut f = vec![0u8; loaded];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        let put = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
        put(&mut f, 0x20, &64u64.to_le_bytes()); // e_phoff
        put(&mut f, 0x36, &56u16.to_le_bytes());
        put(&mut f, 0x38, &1u16.to_le_bytes());
        put(&mut f, 0x3a, &64u16.to_le_bytes());
        put(&mut f, 0x3c, &3u16.to_le_bytes());
        // PT_LOAD covering [0, loaded).
        put(&mut f, 64, &PT_LOAD.to_le_bytes());
        put(&mut f, 64 + 8, &0u64.to_le_bytes());
        put(&mut f, 64 + 32, &(loaded as u64).to_le_bytes());
        let comment_at = f.len();
        f.extend(b"GCC: test\0");
        let audit_at = f.len();
        f.extend(audit);
        f.extend(vec![0u8; pad]);
        let sh_off = f.len();
        put(&mut f, 0x28, &(sh_off as u64).to_le_bytes());
        let mut table = vec![0u8; 64 * 3];
        for (i, (at, size, flags)) in [
            (comment_at, 10u64, 0x30u64),
            (audit_at, audit.len() as u64, 0),
        ]
        .iter()
        .enumerate()
        {
            let e = &mut table[(i + 1) * 64..(i + 2) * 64];
            e[4..8].copy_from_slice(&SHT_PROGBITS.to_le_bytes());
            e[8..16].copy_from_slice(&flags.to_le_bytes());
            e[24..32].copy_from_slice(&(*at as u64).to_le_bytes());
            e[32..40].copy_from_slice(&size.to_le_bytes());
        }
        f.extend(table);
        f
    }

    fn read_through(file: &[u8], chunk: usize) -> Option<Result<Vec<(String, String)>, String>> {
        let mut c = Capture::new(file);
        let mut buf = vec![0u8; chunk];
        while c.read(&mut buf).expect("read") > 0 {}
        c.finish()
    }

    const JSON: &str = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},{"name":"itoa","version":"1.0.19","source":"crates.io"},{"name":"autocfg","version":"1.5.1","source":"crates.io","kind":"build"},{"name":"mine","version":"0.2.0","source":"git"}]}"#;

    #[test]
    fn finds_the_audit_data_after_the_loaded_segments() {
        let want = vec![("itoa".to_owned(), "1.0.19".to_owned())];
        // Small (everything inside the head) and large, in odd chunk sizes.
        for (loaded, pad) in [(4096, 100), (300 << 10, 2 << 20)] {
            let file = elf(loaded, &zlib(JSON), pad);
            for chunk in [7, 4096, 65536] {
                assert_eq!(
                    read_through(&file, chunk),
                    Some(Ok(want.clone())),
                    "loaded {loaded}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn not_audited_malformed_and_out_of_reach() {
        // An ELF without audit data, and a zlib section of something else.
        assert_eq!(read_through(&elf(4096, &zlib("hello"), 0), 4096), None);
        assert_eq!(read_through(b"\x7fELF too short", 4096), None);
        // Audit data that is not valid JSON past its start.
        let bad = elf(4096, &zlib(r#"{"packages":[{"name":1}]}"#), 0);
        assert!(matches!(read_through(&bad, 4096), Some(Err(_))));
        // Beyond the window: not found, and memory stays bounded.
        let mut far = zlib("x".repeat(100).as_str());
        far.resize(MAX_WINDOW + 10, 0);
        far.extend(zlib(JSON));
        assert_eq!(read_through(&elf(4096, &far, 0), 65536), None);
    }
}
