//! Just enough of the BTF format to find where a kernel structure keeps a
//! field: the programs read kernel memory at offsets found here, in the
//! running kernel's `/sys/kernel/btf/vmlinux`, so one object works across
//! kernel versions and configurations without CO-RE relocations.
//!
//! The input is outside data (any kernel's BTF, or a fuzzer's bytes): every
//! read is bounds-checked and every failure names what was missing.

use std::collections::HashMap;

use sightline_runtime_common::Offsets;

/// Why a field's offset could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    /// The bytes are not BTF, or are cut short.
    #[error("not valid BTF: {0}")]
    Format(String),
    /// The kernel has no structure of that name.
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    /// The structure has no such field.
    #[error("struct {0} has no field {1} in the kernel's BTF")]
    NoField(String, String),
    /// The field exists but is not what the programs read.
    #[error("{0}.{1} is {2} in the kernel's BTF; the programs read {3}")]
    Shape(String, String, String, String),
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
/// How deep anonymous members and type modifiers are followed: far more
/// than any kernel nests, and a bound on hostile input.
const MAX_DEPTH: usize = 16;

/// A parsed BTF blob: the types' positions and the string table.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type in `types`; index = type id - 1.
    index: Vec<u32>,
    /// Struct ids by name (the first complete definition of each name).
    structs: HashMap<&'a str, u32>,
}

/// One member of a struct or union.
struct Member<'a> {
    name: &'a str,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn format(what: impl Into<String>) -> BtfError {
    BtfError::Format(what.into())
}

impl<'a> Btf<'a> {
    /// Parses a little-endian BTF blob.
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| format("shorter than its header"))?;
        if magic != MAGIC {
            return Err(format(format!(
                "magic {magic:#06x}, expected {MAGIC:#06x} (little-endian BTF)"
            )));
        }
        let field = |at| u32_at(data, at).ok_or_else(|| format("shorter than its header"));
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .and_then(|(start, end)| data.get(start..end))
                .ok_or_else(|| format(format!("the {what} section lies outside the data")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut btf = Btf {
            types,
            strings,
            index: Vec::new(),
            structs: HashMap::new(),
        };
        let mut at = 0usize;
        while at < types.len() {
            let id = btf.index.len() as u32 + 1;
            let info = u32_at(types, at + 4).ok_or_else(|| format("a type is cut short"))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | 12 | 16 | KIND_TYPE_TAG => 0,
                other => return Err(format(format!("type {id} has unknown kind {other}"))),
            };
            btf.index.push(at as u32);
            if kind == KIND_STRUCT
                && let Some(name) = btf.name(u32_at(types, at).unwrap_or(0))
                && !name.is_empty()
            {
                btf.structs.entry(name).or_insert(id);
            }
            at = at
                .checked_add(12 + extra)
                .filter(|end| *end <= types.len())
                .ok_or_else(|| format(format!("type {id} runs past the type section")))?;
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> Option<&'a str> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// (kind, size_or_type, vlen, kind_flag, byte offset) of a type id.
    fn header(&self, id: u32) -> Option<(u32, u32, usize, bool, usize)> {
        let at = *self.index.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(self.types, at + 4)?;
        Some((
            (info >> 24) & 0x1f,
            u32_at(self.types, at + 8)?,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            at,
        ))
    }

    fn members(&self, id: u32) -> Vec<Member<'a>> {
        let Some((kind, _, vlen, kind_flag, at)) = self.header(id) else {
            return Vec::new();
        };
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return Vec::new();
        }
        (0..vlen)
            .filter_map(|i| {
                let m = at + 12 + 12 * i;
                let raw = u32_at(self.types, m + 8)?;
                Some(Member {
                    name: self.name(u32_at(self.types, m)?)?,
                    type_id: u32_at(self.types, m + 4)?,
                    bit_offset: if kind_flag { raw & 0xff_ffff } else { raw },
                    bitfield: kind_flag && raw >> 24 != 0,
                })
            })
            .collect()
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.header(id) {
                Some((
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG,
                    next,
                    ..,
                )) => id = next,
                _ => break,
            }
        }
        id
    }

    /// The size in bytes of a (resolved) type, and a word for what it is.
    fn shape(&self, id: u32) -> (Option<u32>, &'static str) {
        match self.header(self.resolve(id)) {
            Some((KIND_INT | KIND_ENUM | KIND_ENUM64, size, ..)) => (Some(size), "an integer"),
            Some((KIND_PTR, ..)) => (Some(8), "a pointer"),
            Some((KIND_STRUCT | KIND_UNION, size, ..)) => (Some(size), "a struct"),
            Some((KIND_ARRAY, ..)) => (None, "an array"),
            _ => (None, "another kind of type"),
        }
    }

    /// Finds `field` in the struct or union `id`, looking inside anonymous
    /// members; returns its bit offset and type.
    fn find(&self, id: u32, field: &str, depth: usize) -> Option<(u32, u32, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        for m in self.members(id) {
            if m.name == field {
                return Some((m.bit_offset, m.type_id, m.bitfield));
            }
            if m.name.is_empty()
                && let Some((off, t, bf)) = self.find(self.resolve(m.type_id), field, depth + 1)
            {
                return Some((m.bit_offset.checked_add(off)?, t, bf));
            }
        }
        None
    }

    /// Byte offset of `field` in `struct name`, which must be a whole
    /// `size`-byte value (an integer, or a pointer when `size` is 8).
    pub fn offset(&self, name: &str, field: &str, size: u32) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let (bits, type_id, bitfield) = self
            .find(id, field, 0)
            .ok_or_else(|| BtfError::NoField(name.into(), field.into()))?;
        let shape_err = |is: String| {
            BtfError::Shape(
                name.into(),
                field.into(),
                is,
                format!("a whole {size}-byte value"),
            )
        };
        if bitfield || bits % 8 != 0 {
            return Err(shape_err("a bit field".into()));
        }
        match self.shape(type_id) {
            (Some(s), _) if s == size => Ok(bits / 8),
            (Some(s), what) => Err(shape_err(format!("{what} of {s} bytes"))),
            (None, what) => Err(shape_err(what.into())),
        }
    }

    /// Byte offset of `field` in `struct name` whatever its type (for
    /// embedded structs whose address the programs take).
    pub fn offset_of_any(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let (bits, _, _) = self
            .find(id, field, 0)
            .ok_or_else(|| BtfError::NoField(name.into(), field.into()))?;
        if bits % 8 != 0 {
            return Err(BtfError::Shape(
                name.into(),
                field.into(),
                "a bit field".into(),
                "a byte-aligned member".into(),
            ));
        }
        Ok(bits / 8)
    }

    /// Every offset the programs need.
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        let cgroup_self = self.offset_of_any("cgroup", "self")?;
        if cgroup_self != 0 {
            // The mkdir program treats the parent css as the parent cgroup.
            return Err(BtfError::Shape(
                "cgroup".into(),
                "self".into(),
                format!("at byte {cgroup_self}"),
                "the first member".into(),
            ));
        }
        // `kernfs_node.__parent` replaced `parent` in 6.15; only `id` is read.
        Ok(Offsets {
            task_real_parent: self.offset("task_struct", "real_parent", 8)?,
            task_tgid: self.offset("task_struct", "tgid", 4)?,
            task_mm: self.offset("task_struct", "mm", 8)?,
            task_exit_code: self.offset("task_struct", "exit_code", 4)?,
            mm_arg_start: self.offset("mm_struct", "arg_start", 8)?,
            mm_arg_end: self.offset("mm_struct", "arg_end", 8)?,
            bprm_file: self.offset("linux_binprm", "file", 8)?,
            bprm_filename: self.offset("linux_binprm", "filename", 8)?,
            file_inode: self.offset("file", "f_inode", 8)?,
            inode_ino: self.offset("inode", "i_ino", 8)?,
            inode_sb: self.offset("inode", "i_sb", 8)?,
            sb_dev: self.offset("super_block", "s_dev", 4)?,
            cgroup_kn: self.offset("cgroup", "kn", 8)?,
            cgroup_parent: cgroup_self + self.offset("cgroup_subsys_state", "parent", 8)?,
            kernfs_id: self.offset("kernfs_node", "id", 8)?,
            file_path: self.offset_of_any("file", "f_path")?,
            file_flags: self.offset("file", "f_flags", 4)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A tiny BTF blob builder for the parser's own tests.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                next: 1,
                ..Default::default()
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            flag: bool,
            size: u32,
            extra: &[u32],
        ) -> u32 {
            let n = if name.is_empty() { 0 } else { self.s(name) };
            let info = (kind << 24) | vlen | if flag { 1 << 31 } else { 0 };
            for w in [n, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next += 1;
            self.next - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.push(name, KIND_INT, 0, false, size, &[size * 8])
        }
        fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let mut extra = Vec::new();
            for (m, t, bits) in members {
                let off = if m.is_empty() { 0 } else { self.s(m) };
                extra.extend([off, *t, *bits]);
            }
            self.push(name, KIND_STRUCT, members.len() as u32, false, size, &extra)
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for w in [
                u32::from(MAGIC) | (1 << 16),
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    #[test]
    fn finds_fields_directly_and_inside_anonymous_members() {
        let mut b = Builder::new();
        let long = b.int("long unsigned int", 8);
        let int = b.int("int", 4);
        let typedef = b.push("pid_t", KIND_TYPEDEF, 0, false, int, &[]);
        let inner = b.structure("", 16, &[("arg_start", long, 0), ("arg_end", long, 64)]);
        b.structure("mm_struct", 64, &[("pad", long, 0), ("", inner, 256)]);
        b.structure(
            "task_struct",
            16,
            &[("flags", int, 0), ("tgid", typedef, 32)],
        );
        let data = b.build();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.offset("mm_struct", "arg_start", 8), Ok(32));
        assert_eq!(btf.offset("mm_struct", "arg_end", 8), Ok(40));
        assert_eq!(btf.offset("task_struct", "tgid", 4), Ok(4));
        assert_eq!(
            btf.offset("task_struct", "tgid", 8),
            Err(BtfError::Shape(
                "task_struct".into(),
                "tgid".into(),
                "an integer of 4 bytes".into(),
                "a whole 8-byte value".into()
            ))
        );
        assert_eq!(
            btf.offset("task_struct", "mm", 8),
            Err(BtfError::NoField("task_struct".into(), "mm".into()))
        );
        assert_eq!(
            btf.offset("cred", "uid", 4),
            Err(BtfError::NoStruct("cred".into()))
        );
    }

    #[test]
    fn bit_fields_are_refused() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let n = b.s("x");
        b.push("s", KIND_STRUCT, 1, true, 4, &[n, int, (3 << 24) | 8]);
        let data = b.build();
        let btf = Btf::parse(&data).unwrap();
        assert!(matches!(btf.offset("s", "x", 4), Err(BtfError::Shape(..))));
    }

    #[test]
    fn truncated_and_foreign_input_is_an_error_not_a_panic() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.structure("s", 4, &[("x", int, 0)]);
        let data = b.build();
        for cut in 0..data.len() {
            let _ = Btf::parse(&data[..cut]);
        }
        assert!(matches!(
            Btf::parse(b"\x7fELF...."),
            Err(BtfError::Format(_))
        ));
        let mut bad = data.clone();
        bad[24 + 7] = 0x1f; // an unknown kind
        assert!(matches!(Btf::parse(&bad), Err(BtfError::Format(_))));
    }

    #[test]
    fn the_running_kernels_btf_has_every_field_the_programs_read() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: nothing to check");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let o = btf.offsets().unwrap();
        assert!(o.task_tgid > 0 && o.task_mm > 0 && o.mm_arg_end == o.mm_arg_start + 8);
    }
}
