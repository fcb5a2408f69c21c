//! Ring buffer records decoded into events. Decoding is by field offset
//! (no casts), and a record of the wrong size or an unknown kind is an
//! error, never a panic.

use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use sightline_runtime_common::{
    ARGS_LEN, COMM_LEN, ConnectEvent, ExecEvent, ExitEvent, Header, OpenEvent, PATH_LEN, flags,
    kind, verdict,
};

/// What the kernel side did about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched.
    None,
    /// An `Audit` rule matched.
    Audit,
    /// A `Block` rule matched; the process was sent SIGKILL.
    Killed,
    /// A `Block` rule matched; the LSM hook refused the call.
    Denied,
}

/// Fields every event has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The cgroup the task ran in.
    pub cgroup_id: u64,
    /// Nanoseconds since boot.
    pub time_ns: u64,
    /// What the programs did.
    pub verdict: Verdict,
    /// The matched rule's id (meaningful when `verdict` is not `None`).
    pub rule: u32,
    /// The path was cut to the record's size (the rule was decided on the
    /// whole path).
    pub path_truncated: bool,
    /// The path could not be read or resolved: file rules were decided as
    /// if it were under the workload's strongest prefix (fail closed).
    pub path_unreadable: bool,
}

/// A program started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    /// Common fields.
    pub common: Common,
    /// Parent process id.
    pub ppid: u32,
    /// Device of the executable (kernel encoding).
    pub dev: u32,
    /// Inode of the executable.
    pub ino: u64,
    /// The path given to `execve`.
    pub filename: String,
    /// The head of the argument list.
    pub args: Vec<String>,
    /// The argument list was longer than the record holds.
    pub args_truncated: bool,
    /// The command name.
    pub comm: String,
}

/// A process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Common fields.
    pub common: Common,
    /// Wait status (`code << 8`, or the signal).
    pub status: u32,
}

/// A file was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// Common fields.
    pub common: Common,
    /// `open` flags.
    pub flags: u32,
    /// Directory of a relative path (-100 for the working directory).
    pub dfd: i32,
    /// The path as passed.
    pub path: String,
}

/// A connection was attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Common fields.
    pub common: Common,
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port.
    pub port: u16,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// See [`Exec`].
    Exec(Exec),
    /// See [`Exit`].
    Exit(Exit),
    /// See [`Open`].
    Open(Open),
    /// See [`Connect`].
    Connect(Connect),
}

impl Event {
    /// The common fields.
    pub fn common(&self) -> &Common {
        match self {
            Event::Exec(e) => &e.common,
            Event::Exit(e) => &e.common,
            Event::Open(e) => &e.common,
            Event::Connect(e) => &e.common,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is empty.
    #[error("empty ring buffer record")]
    Empty,
    /// The first byte names no kind of event.
    #[error("ring buffer record of unknown kind {0}")]
    UnknownKind(u8),
    /// The size does not match the kind.
    #[error("ring buffer record of kind {kind} has {got} bytes, expected {want}")]
    Size {
        /// The record's kind.
        kind: u8,
        /// Its size.
        got: usize,
        /// The size of that kind.
        want: usize,
    },
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_ne_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_ne_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_ne_bytes(b)
    }
    /// The NUL-terminated string in `len` bytes at `at`.
    fn str(&self, at: usize, len: usize) -> String {
        let raw = &self.0[at..at + len];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let k = *record.first().ok_or(DecodeError::Empty)?;
    let want = match k {
        kind::EXEC => size_of::<ExecEvent>(),
        kind::EXIT => size_of::<ExitEvent>(),
        kind::OPEN => size_of::<OpenEvent>(),
        kind::CONNECT => size_of::<ConnectEvent>(),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if record.len() != want {
        return Err(DecodeError::Size {
            kind: k,
            got: record.len(),
            want,
        });
    }
    let b = Bytes(record);
    let event_flags = b.u32(offset_of!(Header, flags));
    let common = Common {
        pid: b.u32(offset_of!(Header, pid)),
        tid: b.u32(offset_of!(Header, tid)),
        uid: b.u32(offset_of!(Header, uid)),
        gid: b.u32(offset_of!(Header, gid)),
        cgroup_id: b.u64(offset_of!(Header, cgroup_id)),
        time_ns: b.u64(offset_of!(Header, time_ns)),
        verdict: match record[offset_of!(Header, verdict)] {
            verdict::AUDIT => Verdict::Audit,
            verdict::KILLED => Verdict::Killed,
            verdict::DENIED => Verdict::Denied,
            _ => Verdict::None,
        },
        rule: b.u32(offset_of!(Header, rule)),
        path_truncated: event_flags & flags::PATH_TRUNCATED != 0,
        path_unreadable: event_flags & flags::PATH_UNREADABLE != 0,
    };
    Ok(match k {
        kind::EXEC => {
            let args_len = (b.u32(offset_of!(ExecEvent, args_len)) as usize).min(ARGS_LEN);
            let at = offset_of!(ExecEvent, args);
            let args = record[at..at + args_len]
                .split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Event::Exec(Exec {
                common,
                ppid: b.u32(offset_of!(ExecEvent, ppid)),
                dev: b.u32(offset_of!(ExecEvent, dev)),
                ino: b.u64(offset_of!(ExecEvent, ino)),
                filename: b.str(offset_of!(ExecEvent, filename), PATH_LEN),
                args,
                args_truncated: event_flags & flags::ARGS_TRUNCATED != 0,
                comm: b.str(offset_of!(ExecEvent, comm), COMM_LEN),
            })
        }
        kind::EXIT => Event::Exit(Exit {
            common,
            status: b.u32(offset_of!(ExitEvent, code)),
        }),
        kind::OPEN => Event::Open(Open {
            common,
            flags: b.u32(offset_of!(OpenEvent, open_flags)),
            dfd: b.u32(offset_of!(OpenEvent, dfd)) as i32,
            path: b.str(offset_of!(OpenEvent, path), PATH_LEN),
        }),
        _ => {
            let at = offset_of!(ConnectEvent, addr);
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&record[at..at + 16]);
            let v6 = std::net::Ipv6Addr::from(raw);
            Event::Connect(Connect {
                common,
                addr: v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                port: b.u16(offset_of!(ConnectEvent, port)),
            })
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(k: u8, size: usize) -> Vec<u8> {
        let mut r = vec![0u8; size];
        r[0] = k;
        r
    }

    #[test]
    fn an_exec_record_decodes_with_its_arguments() {
        let mut r = record(kind::EXEC, size_of::<ExecEvent>());
        r[offset_of!(Header, verdict)] = verdict::KILLED;
        r[offset_of!(Header, pid)..][..4].copy_from_slice(&42u32.to_ne_bytes());
        r[offset_of!(ExecEvent, filename)..][..8].copy_from_slice(b"/bin/sh\0");
        let args = b"sh\0-c\0exit 3\0";
        r[offset_of!(ExecEvent, args)..][..args.len()].copy_from_slice(args);
        r[offset_of!(ExecEvent, args_len)..][..4]
            .copy_from_slice(&(args.len() as u32).to_ne_bytes());
        let Event::Exec(e) = decode(&r).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.common.pid, 42);
        assert_eq!(e.common.verdict, Verdict::Killed);
        assert_eq!(e.filename, "/bin/sh");
        assert_eq!(e.args, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn a_connect_record_maps_ipv4_back() {
        let mut r = record(kind::CONNECT, size_of::<ConnectEvent>());
        let at = offset_of!(ConnectEvent, addr);
        r[at + 10] = 0xff;
        r[at + 11] = 0xff;
        r[at + 12..at + 16].copy_from_slice(&[127, 0, 0, 1]);
        r[offset_of!(ConnectEvent, port)..][..2].copy_from_slice(&8080u16.to_ne_bytes());
        let Event::Connect(c) = decode(&r).unwrap() else {
            panic!("not a connect")
        };
        assert_eq!(c.addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::UnknownKind(9)));
        assert!(matches!(
            decode(&record(kind::EXIT, 3)),
            Err(DecodeError::Size {
                kind: 2,
                got: 3,
                ..
            })
        ));
    }
}
