//! Which URLs a feed may point at: those under the signed base_url or the
//! feed's download base. A URL is parsed (which resolves `.` and `..`
//! segments, `%2e%2e` included) before it is compared by scheme, host,
//! port and whole path segments, so `http://h/site/../evil/x` is not under
//! `http://h/site/`; one whose path hides a separator in a segment (`%2F`,
//! `%5C`), which a decoding server resolves elsewhere, is under none. Only
//! an [`Accepted`] URL is ever requested.

use url::Url;

/// The places a verified feed may point into.
pub(super) struct SiteUrls {
    roots: Vec<Url>,
}

/// A URL that passed [`SiteUrls::accept`], in its normalized form: the
/// only kind the fetcher requests on a feed's word.
#[derive(Debug, Clone)]
pub(super) struct Accepted(Url);

impl Accepted {
    pub(super) fn url(&self) -> &Url {
        &self.0
    }
}

impl SiteUrls {
    /// The signed base_url and, when it is a URL, the feed's download base.
    pub(super) fn new(base: &Url, download_base: Option<&str>, mirrors: &[String]) -> SiteUrls {
        let mut roots = vec![directory(base.clone())];
        roots.extend(
            download_base
                .and_then(|d| Url::parse(d).ok())
                .map(directory),
        );
        roots.extend(
            mirrors
                .iter()
                .filter_map(|m| Url::parse(m).ok())
                .filter(|m| matches!(m.scheme(), "http" | "https"))
                .map(directory),
        );
        SiteUrls { roots }
    }

    pub(super) fn accept(&self, raw: &str) -> Option<Accepted> {
        let url = Url::parse(raw).ok()?;
        if crate::model::hides_a_separator(url.path()) {
            return None;
        }
        self.roots
            .iter()
            .any(|root| under(&url, root))
            .then_some(Accepted(url))
    }

    pub(super) fn describe(&self, separator: &str) -> String {
        self.roots
            .iter()
            .map(Url::as_str)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// The root as a directory: its path ends with `/`, so that a prefix match
/// is a match on whole segments.
fn directory(mut root: Url) -> Url {
    root.set_query(None);
    root.set_fragment(None);
    if !root.path().ends_with('/') {
        let path = format!("{}/", root.path());
        root.set_path(&path);
    }
    root
}

fn under(url: &Url, root: &Url) -> bool {
    url.scheme() == root.scheme()
        && url.username() == root.username()
        && url.password() == root.password()
        && url.host() == root.host()
        && url.port_or_known_default() == root.port_or_known_default()
        && url.path().starts_with(root.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteUrls {
        SiteUrls::new(
            &Url::parse("http://h/site/").unwrap(),
            Some("https://cdn.example/img"),
            &[],
        )
    }

    #[test]
    fn urls_under_a_root_are_accepted_in_normal_form() {
        let s = site();
        for (raw, normal) in [
            ("http://h/site/feed.xml", "http://h/site/feed.xml"),
            ("http://H:80/site/a/./b", "http://h/site/a/b"),
            ("http://h/site/a/../b", "http://h/site/b"),
            (
                "https://cdn.example/img/x.raw",
                "https://cdn.example/img/x.raw",
            ),
        ] {
            assert_eq!(
                s.accept(raw).map(|a| a.url().to_string()).as_deref(),
                Some(normal)
            );
        }
    }

    #[test]
    fn urls_that_leave_the_roots_are_refused() {
        let s = site();
        for raw in [
            "http://h/site/../evil/x",
            "http://h/site/%2e%2e/evil/x",
            "http://h/site/..\\evil/x",
            "http://h/site/..%2F..%2Fevil/x",
            "http://h/site/a%2fb",
            "http://h/site/..%5Cevil/x",
            "http://h/site-evil/x",
            "http://h/sitex",
            "http://h/site",
            "https://h/site/x",
            "http://h:8080/site/x",
            "http://user@h/site/x",
            "http://h.evil/site/x",
            "https://cdn.example/imgs/x.raw",
            "not a url",
        ] {
            assert!(s.accept(raw).is_none(), "{raw} was accepted");
        }
    }
}
