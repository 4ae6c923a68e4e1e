//! `SHA256SUMS` in GNU coreutils format, with coreutils' escaping: the
//! writer and its parser in one place.

use std::collections::BTreeMap;

use crate::model::Sha256;

/// One line as `sha256sum` writes it: a name holding `\`, LF or CR is
/// escaped (`\\`, `\n`, `\r`) and its line starts with `\`.
pub fn line(name: &str, digest: &Sha256) -> String {
    let mut out = String::new();
    push_line(&mut out, name, digest);
    out
}

/// [`line`], appended to `out`.
fn push_line(out: &mut String, name: &str, digest: &Sha256) {
    if name.contains(['\\', '\n', '\r']) {
        out.push('\\');
        digest.push_hex(out);
        out.push_str("  ");
        for c in name.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    } else {
        digest.push_hex(out);
        out.push_str("  ");
        out.push_str(name);
    }
    out.push('\n');
}

/// The whole manifest, sorted by name so the output never depends on order.
/// Written into one string of the right size: at 10,000 releases it has
/// some 22,000 lines, on the warm rebuild's one-thread tail.
pub fn manifest<'a>(entries: impl IntoIterator<Item = (&'a str, Sha256)>) -> String {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    // 64 hex digits, two spaces and a newline; escapes are rare.
    let size = entries.iter().map(|(name, _)| name.len() + 67).sum();
    let mut out = String::with_capacity(size);
    for (name, digest) in &entries {
        push_line(&mut out, name, digest);
    }
    out
}

/// Parses a GNU `sha256sum` manifest, undoing its escapes.
pub fn parse(data: &[u8]) -> std::result::Result<BTreeMap<String, Sha256>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = || format!("line {} is not `<sha256>  <name>`", n + 1);
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hex, name) = line.split_once("  ").ok_or_else(bad)?;
        let digest = Sha256::from_hex(hex).ok_or_else(bad)?;
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_owned()
        };
        if out.insert(name.clone(), digest).is_some() {
            return Err(format!("lists {name:?} twice"));
        }
    }
    Ok(out)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_names_are_escaped_like_coreutils() {
        let d = Sha256([0; 32]);
        let zeros = "0".repeat(64);
        assert_eq!(line("a b", &d), format!("{zeros}  a b\n"));
        assert_eq!(line("*x", &d), format!("{zeros}  *x\n"));
        assert_eq!(
            line("a\\b\nc\rd", &d),
            format!("\\{zeros}  a\\\\b\\nc\\rd\n")
        );
    }

    #[test]
    fn manifests_parse_with_escapes() {
        let zeros = "0".repeat(64);
        let text = format!("{zeros}  a b\n\\{zeros}  c\\\\d\\ne\n");
        let m = parse(text.as_bytes()).unwrap();
        assert!(m.contains_key("a b"));
        assert!(m.contains_key("c\\d\ne"));
        assert!(parse(b"xyz  a\n").is_err());
        assert!(parse(format!("{zeros}  a\n{zeros}  a\n").as_bytes()).is_err());
    }

    /// Found by `cargo fuzz run sums`: a sign among the hex digits was read
    /// as one (`+0` as 0x00), so a line that `sha256sum -c` refuses passed.
    #[test]
    fn a_digest_is_hex_digits_only() {
        let line = format!("{}+0{}  a\n", "0".repeat(18), "0".repeat(44));
        assert_eq!(line.find("  "), Some(64));
        assert!(parse(line.as_bytes()).is_err());
        assert!(parse(format!("\\{line}").as_bytes()).is_err());
    }
}
