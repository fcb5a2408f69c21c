//! RPM's package database in its SQLite form (`rpmdb.sqlite`, rpm 4.16+,
//! the default of Fedora 33+, RHEL/Rocky/AlmaLinux 9): each row of the
//! `Packages` table is a package's RPM header, a binary index of tagged
//! values. The file is opened from memory (never written anywhere).
//! BerkeleyDB (`Packages`) and NDB (`Packages.db`) databases are not read:
//! analysis says so instead of reporting no packages.
//!
//! The database comes from an image, so from whoever built it: a view or a
//! generated column named like rpm's table could make one SELECT loop
//! forever or build a gigabyte value. The connection is hardened before the
//! file is loaded (defensive mode, no trusted schema, a length limit, an
//! instruction budget), and `Packages` must be a plain table whose columns
//! are stored, not computed, before anything is read from it.

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
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

/// Largest string or blob SQLite may hold while reading: real headers are
/// a few kB to a few hundred kB.
const MAX_VALUE_BYTES: i32 = 16 << 20;
/// Longest SQL statement (ours are one line; the schema's are parsed, not run).
const MAX_SQL_BYTES: i32 = 64 << 10;
/// Virtual-machine instructions between two checks of the budget.
const BUDGET_STEP: i32 = 10_000;
/// Checks before a read is interrupted: 50 million instructions, well under
/// a second of CPU; reading a real database of 2,000 packages takes well
/// under a hundredth of that.
const BUDGET_CHECKS: u32 = 5_000;

/// An in-memory, read-only connection to the database bytes `db`, with
/// SQLite's defences on before a byte of the image's schema is parsed.
fn guarded_connection(db: &[u8]) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_in_memory()?;
    // Defensive: no writable schema, no corrupting pragmas. Untrusted
    // schema: functions with side effects may not run from views,
    // triggers or generated columns.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)?;
    let mut checks = 0u32;
    conn.progress_handler(
        BUDGET_STEP,
        Some(move || {
            checks += 1;
            checks > BUDGET_CHECKS
        }),
    );
    conn.deserialize_read_exact(MAIN_DB, db, db.len(), true)?;
    Ok(conn)
}

/// Refuses a `Packages` that is not a plain table of stored columns: a
/// view, a virtual table, or a generated column would run the image's SQL
/// when read.
fn check_packages_table(conn: &Connection) -> Result<(), String> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = 'Packages'",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e.to_string()),
        })?;
    match kind.as_deref() {
        Some("table") => {}
        Some(other) => return Err(format!("Packages is a {other}, not a table")),
        None => return Err("no Packages table".into()),
    }
    let mut stmt = conn
        .prepare("SELECT name, hidden FROM pragma_table_xinfo('Packages')")
        .map_err(|e| e.to_string())?;
    let columns = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    for want in ["hnum", "blob"] {
        match columns
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(want))
        {
            Some((_, 0)) => {}
            Some(_) => return Err(format!("Packages.{want} is computed, not stored")),
            None => return Err(format!("Packages has no {want} column")),
        }
    }
    Ok(())
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
    let fail = |e: &dyn std::fmt::Display| {
        (
            Vec::new(),
            vec![format!("{path}: unreadable rpm database: {e}")],
        )
    };
    let conn = match guarded_connection(&copy) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    drop(copy);
    if let Err(why) = check_packages_table(&conn) {
        return fail(&why);
    }
    let mut stmt = match conn.prepare("SELECT hnum, blob FROM Packages ORDER BY hnum") {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let rows = match stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))) {
        Ok(r) => r,
        Err(e) => return fail(&e),
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

    /// An SQLite database made by running `sql`, as bytes.
    fn database(sql: &str) -> Vec<u8> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(sql).unwrap();
        conn.serialize(MAIN_DB).unwrap().to_vec()
    }

    fn rpm_table(blobs: &[Vec<u8>]) -> Vec<u8> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)",
        )
        .unwrap();
        for b in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b])
                .unwrap();
        }
        conn.serialize(MAIN_DB).unwrap().to_vec()
    }

    #[test]
    fn reads_packages_from_rpms_table() {
        let blob = header(&[
            (TAG_NAME, TYPE_STRING, s("bash")),
            (TAG_VERSION, TYPE_STRING, s("5.1.8")),
            (TAG_RELEASE, TYPE_STRING, s("9.el9")),
        ]);
        let (pkgs, warnings) = parse_sqlite(&rpm_table(&[blob]), "var/lib/rpm/rpmdb.sqlite");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(pkgs.len(), 1);
        assert_eq!(
            (pkgs[0].name.as_str(), pkgs[0].version.as_str()),
            ("bash", "5.1.8-9.el9")
        );
    }

    #[test]
    fn a_packages_table_that_runs_the_images_sql_is_refused() {
        let endless = "CREATE TABLE t (x); CREATE VIEW Packages AS \
            WITH RECURSIVE c(hnum) AS (SELECT 1 UNION ALL SELECT hnum + 1 FROM c) \
            SELECT hnum, zeroblob(16) AS blob FROM c;";
        let huge = "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, \
            blob BLOB GENERATED ALWAYS AS (zeroblob(1000000000)) VIRTUAL);";
        let missing = "CREATE TABLE Other (hnum INTEGER PRIMARY KEY, blob BLOB);";
        for (sql, says) in [
            (endless, "Packages is a view, not a table"),
            (huge, "Packages.blob is computed, not stored"),
            (missing, "no Packages table"),
        ] {
            let (pkgs, warnings) = parse_sqlite(&database(sql), "var/lib/rpm/rpmdb.sqlite");
            assert!(pkgs.is_empty());
            assert!(
                warnings.len() == 1 && warnings[0].contains(says),
                "{sql}: {warnings:?}"
            );
        }
    }

    #[test]
    fn the_guarded_connection_interrupts_endless_work_and_refuses_huge_values() {
        let db = rpm_table(&[]);
        let conn = guarded_connection(&db).unwrap();
        let endless = conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            [],
            |r| r.get::<_, i64>(0),
        );
        let e = endless.expect_err("the budget must interrupt an endless query");
        assert!(e.to_string().contains("interrupt"), "{e}");
        let conn = guarded_connection(&db).unwrap();
        let huge = conn.query_row("SELECT length(zeroblob(1000000000))", [], |r| {
            r.get::<_, i64>(0)
        });
        let e = huge.expect_err("a gigabyte value is over the length limit");
        assert!(e.to_string().contains("too big"), "{e}");
        // Read-only and defensive: the image's database cannot be changed.
        assert!(conn.execute("DELETE FROM Packages", []).is_err());
        assert!(
            conn.execute_batch("PRAGMA writable_schema = ON; DELETE FROM sqlite_master")
                .is_err()
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
