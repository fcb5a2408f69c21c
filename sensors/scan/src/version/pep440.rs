//! Python versions, as PEP 440 orders them (the rules of `packaging`):
//! `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the spellings PEP
//! 440 normalizes (`alpha`, `beta`, `c`, `pre`, `preview`, `rev`, `r`,
//! `1.0-1`, separators, implicit zeros, a leading `v`).

use std::cmp::Ordering;

use super::VersionError;

/// A parsed Python version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pep440 {
    /// Epoch.
    pub epoch: u64,
    /// Release numbers, trailing zeros removed (1.0 == 1.0.0).
    pub release: Vec<u64>,
    /// Pre-release: 0 a, 1 b, 2 rc; and its number.
    pub pre: Option<(u8, u64)>,
    /// Post-release number.
    pub post: Option<u64>,
    /// Development release number.
    pub dev: Option<u64>,
    /// Local version segments.
    pub local: Option<Vec<String>>,
}

struct Cursor<'a> {
    s: &'a str,
}

impl Cursor<'_> {
    fn eat(&mut self, p: &str) -> bool {
        if self.s.starts_with(p) {
            self.s = &self.s[p.len()..];
            true
        } else {
            false
        }
    }
    fn sep(&mut self) -> bool {
        self.eat(".") || self.eat("-") || self.eat("_")
    }
    fn number(&mut self) -> Option<u64> {
        let end = self
            .s
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let (n, rest) = self.s.split_at(end);
        self.s = rest;
        // Absurdly long numbers saturate rather than fail.
        Some(n.parse().unwrap_or(u64::MAX))
    }
    /// `[sep]word[sep]N?` for one of `words`; restores on no match.
    fn tagged(&mut self, words: &[&str]) -> Option<(usize, u64)> {
        let save = self.s;
        self.sep();
        for (i, w) in words.iter().enumerate() {
            if self.eat(w) {
                let before_sep = self.s;
                self.sep();
                return match self.number() {
                    Some(n) => Some((i, n)),
                    None => {
                        self.s = before_sep;
                        Some((i, 0))
                    }
                };
            }
        }
        self.s = save;
        None
    }
}

/// Parses (and normalizes) `s`.
pub fn parse(s: &str) -> Result<Pep440, VersionError> {
    let lower = s.trim().to_ascii_lowercase();
    let bad = |why: &str| VersionError::new("pep440", s, why);
    let mut c = Cursor {
        s: lower.strip_prefix('v').unwrap_or(&lower),
    };
    let mut v = Pep440::default();
    let first = c.number().ok_or_else(|| bad("expected a release number"))?;
    if c.eat("!") {
        v.epoch = first;
        v.release.push(
            c.number()
                .ok_or_else(|| bad("expected a release number after the epoch"))?,
        );
    } else {
        v.release.push(first);
    }
    loop {
        let save = c.s;
        if c.eat(".")
            && let Some(n) = c.number()
        {
            v.release.push(n);
            continue;
        }
        c.s = save;
        break;
    }
    // Longer spellings first, so `preview` is not read as `pre` + `view`.
    const PRE: [&str; 7] = ["alpha", "beta", "preview", "pre", "rc", "a", "b"];
    const PRE_RANK: [u8; 7] = [0, 1, 2, 2, 2, 0, 1];
    if let Some((i, n)) = c
        .tagged(&PRE)
        .or_else(|| c.tagged(&["c"]).map(|(_, n)| (4, n)))
    {
        v.pre = Some((PRE_RANK[i], n));
    }
    if let Some((_, n)) = c.tagged(&["post", "rev", "r"]) {
        v.post = Some(n);
    } else {
        let save = c.s;
        if c.eat("-")
            && let Some(n) = c.number()
        {
            v.post = Some(n);
        } else {
            c.s = save;
        }
    }
    if let Some((_, n)) = c.tagged(&["dev"]) {
        v.dev = Some(n);
    }
    if c.eat("+") {
        let segs: Vec<String> = c.s.split(['.', '-', '_']).map(str::to_owned).collect();
        if segs
            .iter()
            .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(bad("bad local version label"));
        }
        v.local = Some(segs);
        c.s = "";
    }
    if !c.s.is_empty() {
        return Err(bad(&format!("unexpected '{}'", c.s)));
    }
    while v.release.len() > 1 && v.release.last() == Some(&0) {
        v.release.pop();
    }
    Ok(v)
}

fn cmp_local(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> Ordering {
    let seg = |s: &String| match s.parse::<u64>() {
        // Numeric segments sort after alphanumeric ones.
        Ok(n) => (1, n, String::new()),
        Err(_) => (0, 0, s.clone()),
    };
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.iter().map(seg).cmp(y.iter().map(seg)),
    }
}

/// A phase of the sort key: a class (-1 before, 0 present, 1 after) and values.
type Phase = (i8, u8, u64);

/// The sort key `packaging` uses, without the local part: epoch, release,
/// then the pre-release, post-release and dev phases.
fn key(v: &Pep440) -> (u64, &[u64], Phase, Phase, Phase) {
    let pre = match (v.pre, v.post, v.dev) {
        // A dev release of a final release sorts before its pre-releases.
        (None, None, Some(_)) => (-1, 0, 0),
        (Some((l, n)), ..) => (0, l, n),
        (None, ..) => (1, 0, 0),
    };
    let post = v.post.map_or((-1, 0, 0), |n| (0, 0, n));
    let dev = v.dev.map_or((1, 0, 0), |n| (0, 0, n));
    (v.epoch, &v.release, pre, post, dev)
}

/// Compares two Python versions.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (a, b) = (parse(a)?, parse(b)?);
    Ok(key(&a)
        .cmp(&key(&b))
        .then_with(|| cmp_local(&a.local, &b.local)))
}
