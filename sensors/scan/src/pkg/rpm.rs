//! RPM's package database in its SQLite form (`rpmdb.sqlite`, rpm 4.16+,
//! the default of Fedora 33+, RHEL/Rocky/AlmaLinux 9): each row of the
//! `Packages` table is a package's RPM header, a binary index of tagged
//! values. The file is opened from memory (never written anywhere).
//! BerkeleyDB (`Packages`) and NDB (`Packages.db`) databases are not read:
//! analysis says so instead of reporting no packages.

use rusqlite::{Connection, MAIN_DB};

use super::{Package, PackageKind, SourcePackage, warn};

const TAG_NAME: i32 = 1000;
const TAG_VERSION: i32 = 1001;
const TAG_RELEASE: i32 = 1002;
const TAG_EPOCH: i32 = 1003;
const TAG_ARCH: i32 = 1022;
const TAG_SOURCERPM: i32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// The fields of one header analysis uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// `NAME`.
    pub name: String,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `EPOCH`, when set.
    pub epoch: Option<u32>,
    /// `ARCH`.
    pub arch: Option<String>,
    /// `SOURCERPM` (`openssl-3.0.7-24.el9.src.rpm`).
    pub source_rpm: Option<String>,
}

/// Most index entries a header may have (real ones have a few hundred).
const MAX_ENTRIES: usize = 1 << 16;

/// Parses a header blob as stored in the database: entry count and data
/// length (big-endian), the index entries, then the data.
pub fn parse_header(blob: &[u8]) -> Result<Header, &'static str> {
    let be = |at: usize| -> Option<u32> {
        blob.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let il = be(0).ok_or("shorter than a header")? as usize;
    let dl = be(4).ok_or("shorter than a header")? as usize;
    if il == 0 || il > MAX_ENTRIES {
        return Err("implausible index entry count");
    }
    let data_start = 8usize
        .checked_add(il.checked_mul(16).ok_or("index too large")?)
        .ok_or("index too large")?;
    let data = blob
        .get(data_start..data_start.checked_add(dl).ok_or("data too large")?)
        .ok_or("index or data runs past the end")?;
    let string_at = |offset: usize| -> Option<String> {
        let bytes = data.get(offset..)?;
        let end = bytes.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    };
    let mut h = Header::default();
    for i in 0..il {
        let at = 8 + i * 16;
        let (Some(tag), Some(ty), Some(offset), Some(count)) =
            (be(at), be(at + 4), be(at + 8), be(at + 12))
        else {
            return Err("truncated index entry");
        };
        let offset = offset as usize;
        let text = || match ty {
            TYPE_STRING | TYPE_I18NSTRING => string_at(offset),
            _ => None,
        };
        match tag as i32 {
            TAG_NAME => h.name = text().ok_or("NAME is not a string")?,
            TAG_VERSION => h.version = text().ok_or("VERSION is not a string")?,
            TAG_RELEASE => h.release = text().ok_or("RELEASE is not a string")?,
            TAG_ARCH => h.arch = text(),
            TAG_SOURCERPM => h.source_rpm = text(),
            TAG_EPOCH if ty == TYPE_INT32 && count >= 1 => {
                let b = data
                    .get(offset..offset + 4)
                    .ok_or("EPOCH runs past the end")?;
                h.epoch = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            _ => {}
        }
    }
    if h.name.is_empty() || h.version.is_empty() {
        return Err("no NAME or VERSION");
    }
    Ok(h)
}

/// `name` of `name-version-release.src.rpm`.
fn source_name(src: &str) -> Option<(String, String)> {
    let base = src
        .strip_suffix(".src.rpm")
        .or_else(|| src.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some((name.to_owned(), format!("{version}-{release}")))
}

/// The installed packages in an `rpmdb.sqlite`, and a warning for each
/// header that could not be read (the others are kept).
pub fn parse_sqlite(data: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let mut warnings = Vec::new();
    if data.len() < 100 || !data.starts_with(b"SQLite format 3\0") {
        return (
            Vec::new(),
            vec![format!(
                "{path}: not an SQLite database; no rpm packages read"
            )],
        );
    }
    // rpm keeps the database in WAL mode, which SQLite refuses to open from
    // memory; the header bytes saying so are switched to rollback mode in
    // this private copy (the pages are the same).
    let mut copy = data.to_vec();
    for i in [18, 19] {
        if copy[i] == 2 {
            copy[i] = 1;
        }
    }
    let fail = |e: rusqlite::Error| {
        (
            Vec::new(),
            vec![format!("{path}: unreadable rpm database: {e}")],
        )
    };
    let mut conn = match Connection::open_in_memory() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = conn.deserialize_read_exact(MAIN_DB, &copy[..], copy.len(), true) {
        return fail(e);
    }
    drop(copy);
    let mut stmt = match conn.prepare("SELECT hnum, blob FROM Packages ORDER BY hnum") {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let rows = match stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut out = Vec::new();
    for row in rows {
        let (hnum, blob) = match row {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("{path}: unreadable row: {e}"));
                continue;
            }
        };
        // gpg-pubkey "packages" are imported signing keys, not software.
        match parse_header(&blob) {
            Ok(h) if h.name == "gpg-pubkey" => {}
            Ok(h) => {
                let evr = match h.epoch.filter(|e| *e > 0) {
                    Some(e) => format!("{e}:{}-{}", h.version, h.release),
                    None => format!("{}-{}", h.version, h.release),
                };
                let source = h
                    .source_rpm
                    .as_deref()
                    .and_then(source_name)
                    .map(|(name, version)| SourcePackage { name, version });
                out.push(Package {
                    kind: PackageKind::Rpm,
                    name: h.name,
                    version: evr,
                    source,
                    arch: h.arch,
                    purl: String::new(),
                    layer: 0,
                    path: path.to_owned(),
                });
            }
            Err(why) => warnings.push(warn(path, hnum as usize, format!("header {hnum}: {why}"))),
        }
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entries: &[(i32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (tag, ty, value) in entries {
            index.extend((*tag as u32).to_be_bytes());
            index.extend(ty.to_be_bytes());
            index.extend((data.len() as u32).to_be_bytes());
            index.extend(1u32.to_be_bytes());
            data.extend(value);
        }
        let mut blob = (entries.len() as u32).to_be_bytes().to_vec();
        blob.extend((data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn reads_a_header() {
        let blob = header(&[
            (TAG_NAME, TYPE_STRING, s("openssl-libs")),
            (TAG_VERSION, TYPE_STRING, s("3.0.7")),
            (TAG_RELEASE, TYPE_STRING, s("24.el9")),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            (TAG_ARCH, TYPE_STRING, s("x86_64")),
            (
                TAG_SOURCERPM,
                TYPE_STRING,
                s("openssl-3.0.7-24.el9.src.rpm"),
            ),
        ]);
        let h = parse_header(&blob).expect("header");
        assert_eq!(
            (
                h.name.as_str(),
                h.version.as_str(),
                h.release.as_str(),
                h.epoch
            ),
            ("openssl-libs", "3.0.7", "24.el9", Some(1))
        );
        assert_eq!(
            source_name(h.source_rpm.as_deref().expect("src")),
            Some(("openssl".into(), "3.0.7-24.el9".into()))
        );
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert!(parse_header(b"").is_err());
        assert!(parse_header(&[0xff; 8]).is_err());
        let mut blob = header(&[
            (TAG_NAME, TYPE_STRING, s("x")),
            (TAG_VERSION, TYPE_STRING, s("1")),
        ]);
        blob.truncate(blob.len() - 2);
        assert_eq!(parse_header(&blob), Err("index or data runs past the end"));
        // An offset past the data.
        let mut blob = header(&[(TAG_NAME, TYPE_STRING, s("x"))]);
        blob[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert!(parse_header(&blob).is_err());
        let (pkgs, warnings) =
            parse_sqlite(b"SQLite format 3\0garbage", "var/lib/rpm/rpmdb.sqlite");
        assert!(pkgs.is_empty());
        assert!(
            warnings[0].contains("not an SQLite database"),
            "{warnings:?}"
        );
    }
}
