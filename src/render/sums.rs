//! `SHA256SUMS` in GNU coreutils format, with coreutils' escaping.

use crate::model::Sha256;

/// One line as `sha256sum` writes it: a name holding `\`, LF or CR is
/// escaped (`\\`, `\n`, `\r`) and its line starts with `\`.
pub fn line(name: &str, digest: &Sha256) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{digest}  {escaped}\n")
    } else {
        format!("{digest}  {name}\n")
    }
}

/// The whole manifest, sorted by name so the output never depends on order.
pub fn manifest<'a>(entries: impl IntoIterator<Item = (&'a str, Sha256)>) -> String {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.iter().map(|(name, d)| line(name, d)).collect()
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
}
