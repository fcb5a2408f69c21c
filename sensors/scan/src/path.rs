//! Paths inside an image: how tar entry names become root-relative paths,
//! and how symbolic links resolve without ever leaving the image.

/// Why an entry's path was refused.
pub(crate) type Unsafe = &'static str;

/// Turns a tar entry name into a path relative to the image root, without
/// a leading or trailing `/` (`""` is the root itself). `./` and `.`
/// components go; `..` and absolute names are refused, since a layer that
/// uses them is trying to write outside the root it is unpacked into.
pub(crate) fn normalize(raw: &str) -> Result<String, Unsafe> {
    if raw.starts_with('/') {
        return Err("is an absolute path");
    }
    if raw.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut out = String::with_capacity(raw.len());
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("climbs out of its directory with '..'"),
            part => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(part);
            }
        }
    }
    Ok(out)
}

/// The directory part and the last component of a normalized path.
pub(crate) fn split_last(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    }
}

/// `dir/name`, or `name` when `dir` is the root.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `prefix` or lies below it.
pub(crate) fn is_within(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

/// Where a symbolic link at `link` pointing at `target` leads, as a
/// normalized path. Absolute targets start at the image root and `..` stops
/// at the root, exactly as the kernel resolves links inside a container; the
/// second value says whether the target tried to climb above the root.
pub(crate) fn link_target(link: &str, target: &str) -> (String, bool) {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(split_last(link).0.split('/').filter(|p| !p.is_empty()));
    }
    let mut escaped = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    escaped = true;
                }
            }
            part => parts.push(part),
        }
    }
    (parts.join("/"), escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_entry_names() {
        assert_eq!(normalize("./etc/os-release"), Ok("etc/os-release".into()));
        assert_eq!(normalize("etc//./apt/"), Ok("etc/apt".into()));
        assert_eq!(normalize("./"), Ok(String::new()));
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("usr/../../etc/passwd").is_err());
        assert!(normalize("a/..").is_err());
    }

    #[test]
    fn resolves_links_inside_the_root() {
        assert_eq!(
            link_target("etc/os-release", "../usr/lib/os-release"),
            ("usr/lib/os-release".into(), false)
        );
        assert_eq!(link_target("lib", "usr/lib"), ("usr/lib".into(), false));
        assert_eq!(
            link_target("etc/os-release", "/usr/lib/os-release"),
            ("usr/lib/os-release".into(), false)
        );
        assert_eq!(
            link_target("etc/x", "../../../../etc/shadow"),
            ("etc/shadow".into(), true)
        );
    }

    #[test]
    fn within() {
        assert!(is_within("var/lib/dpkg/status", "var/lib/dpkg"));
        assert!(is_within("var/lib/dpkg", "var/lib/dpkg"));
        assert!(!is_within("var/lib/dpkg2", "var/lib/dpkg"));
        assert!(is_within("anything", ""));
    }
}
