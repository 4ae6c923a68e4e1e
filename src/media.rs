//! The site's own file names, and the one table of media types: what every
//! published file is served as, by `serve`, `publish` and the feed's
//! enclosures alike. The ground floor: every stage that writes, reads or
//! serves a site takes its names from here.

/// The site's feed of every appliance.
pub const FEED: &str = "feed.xml";
/// The manifest of every published file, and its signature.
pub const MANIFEST: &str = "SHA256SUMS";
pub const MANIFEST_SIG: &str = "SHA256SUMS.minisig";
/// The detached OpenPGP signature of the `SHA256SUMS` in each directory of
/// images (`[catalogs] systemd`), which systemd-pull and systemd-sysupdate
/// check with `import-pubring.gpg`.
pub const DIR_MANIFEST_SIG: &str = "SHA256SUMS.gpg";
/// The OpenPGP public key as a binary keyring, the form systemd installs as
/// `/etc/systemd/import-pubring.gpg`.
pub const IMPORT_PUBRING: &str = "import-pubring.gpg";
/// The directory of systemd-sysupdate transfer files, one per appliance.
pub const SYSUPDATE_DIR: &str = "sysupdate";

/// The site's minisign public key, and the key a rotation moves to.
pub const PUBLIC_KEY: &str = "vmcast.pub";
pub const NEXT_PUBLIC_KEY: &str = "vmcast.next.pub";
/// The JSON Feed beside the RSS feed (`[catalogs] json_feed`).
pub const JSON_FEED_FILE: &str = "feed.json";
/// virt-builder's index (`[catalogs] virt_builder`).
pub const VIRT_BUILDER_INDEX: &str = "virt-builder/index";

/// Whether a published file never changes under its name once written:
/// images and what is made of them or beside them (SBOMs, provenance,
/// zsync control files, boxes), and the archives with their signatures. They are signed with
/// no build's stamp, cached forever (`Cache-Control: immutable`) and never
/// uploaded twice; everything else (feeds, the manifest, pages, keys,
/// catalogs) changes with each build and is cached briefly.
pub fn is_immutable(path: &str) -> bool {
    (path.starts_with("images/") && !is_dir_manifest(path))
        || path.starts_with("archive/")
        || (path.starts_with("vagrant/") && path.ends_with(".box"))
}

/// The feed of one appliance: `feeds/<appliance>.xml`.
pub fn appliance_feed(appliance: &str) -> String {
    format!("feeds/{appliance}.xml")
}

/// Whether a path is an appliance's feed. Its signature may name an
/// earlier build than the site's, whose feed it has been since: a build
/// leaves an appliance's feed as it was when nothing in it changed, so
/// that its subscribers are not sent it again (`BuildStamp::may_stand_in`
/// in the `trust` module says when).
pub fn is_appliance_feed(path: &str) -> bool {
    path.strip_prefix("feeds/")
        .and_then(|name| name.strip_suffix(".xml"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Whether a path is the `SHA256SUMS` of a directory of images, or its
/// signature: a flat directory's lists every version and changes with each.
pub fn is_dir_manifest(path: &str) -> bool {
    path.rsplit_once('/').is_some_and(|(dir, name)| {
        dir.starts_with("images/") && [MANIFEST, DIR_MANIFEST_SIG].contains(&name)
    })
}

/// `Cache-Control` for the files [`is_immutable`] names, and for the rest.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const CACHE_SHORT: &str = "public, max-age=300";

/// The `Cache-Control` a published file is served with.
pub fn cache_control(path: &str) -> &'static str {
    if is_immutable(path) {
        CACHE_IMMUTABLE
    } else {
        CACHE_SHORT
    }
}

/// What a zsync control file is named: its image's name and this. It lies
/// beside its image (`images/...`), so it never changes either.
pub const ZSYNC_SUFFIX: &str = ".zsync";

/// What `vmcast-gen hash` writes beside an image: `<image>.vmcast-hash`.
/// The scan never takes one for an image.
pub const SIDECAR_SUFFIX: &str = ".vmcast-hash";

/// Media types by lower-case file extension. A file whose extension is not
/// here is `application/octet-stream`.
const BY_EXTENSION: &[(&str, &str)] = &[
    ("xml", "application/rss+xml; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("json", "application/json"),
    ("minisig", "text/plain; charset=utf-8"),
    ("pub", "text/plain; charset=utf-8"),
    ("transfer", "text/plain; charset=utf-8"),
    ("xz", "application/x-xz"),
    ("gz", "application/gzip"),
    ("zst", "application/zstd"),
    ("ova", "application/ovf"),
    ("iso", "application/x-iso9660-image"),
    ("zsync", "application/x-zsync"),
];

/// Files of the site known by their whole name.
const BY_NAME: &[(&str, &str)] = &[
    ("SHA256SUMS", "text/plain; charset=utf-8"),
    (DIR_MANIFEST_SIG, "application/pgp-signature"),
    (IMPORT_PUBRING, "application/pgp-keys"),
];

/// The type of anything without a more specific one.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The media type of a file extension (without the dot, any case).
pub fn for_extension(ext: &str) -> &'static str {
    let ext = ext.to_ascii_lowercase();
    BY_EXTENSION
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or(OCTET_STREAM, |(_, t)| t)
}

/// JSON Feed's own type (the spec asks for it), for `feed.json` and its
/// archive pages.
pub const JSON_FEED: &str = "application/feed+json";

/// The Content-Type a published file is served with, from its path.
pub fn content_type(path: &str) -> &'static str {
    if path == JSON_FEED_FILE || (path.starts_with("archive/") && path.ends_with(".json")) {
        return JSON_FEED;
    }
    if path == VIRT_BUILDER_INDEX {
        return "text/plain; charset=utf-8";
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if let Some((_, t)) = BY_NAME.iter().find(|(n, _)| *n == name) {
        return t;
    }
    match name.rsplit_once('.') {
        Some((_, ext)) => for_extension(ext),
        None => OCTET_STREAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appliance_feed_is_one_file_under_feeds() {
        assert!(is_appliance_feed(&appliance_feed("webapp")));
        assert!(!is_appliance_feed("feeds/a/b.xml"));
        assert!(!is_appliance_feed("feeds/.xml"));
        assert!(!is_appliance_feed("feeds/a.xml.minisig"));
        assert!(!is_appliance_feed(FEED));
    }

    #[test]
    fn a_directory_manifest_is_not_immutable_as_its_images_are() {
        assert!(is_immutable("images/webapp/1.0.0/webapp-1.0.0.raw"));
        assert!(is_immutable("images/webapp/webapp-1.0.0.raw"));
        assert!(is_immutable("images/webapp/1.0.0/webapp-1.0.0.raw.zsync"));
        assert!(is_immutable("images/webapp/webapp-1.0.0.raw.zsync"));
        assert!(is_immutable("archive/1.xml"));
        assert!(!is_immutable("images/webapp/SHA256SUMS"));
        assert!(!is_immutable("images/webapp/1.0.0/SHA256SUMS.gpg"));
        assert!(!is_immutable("SHA256SUMS"));
        assert!(!is_immutable("sysupdate/webapp.transfer"));
        assert_eq!(cache_control("images/webapp/SHA256SUMS"), CACHE_SHORT);
    }

    #[test]
    fn types_come_from_one_table() {
        assert_eq!(
            content_type("feed.xml"),
            "application/rss+xml; charset=utf-8"
        );
        assert_eq!(content_type("SHA256SUMS"), "text/plain; charset=utf-8");
        assert_eq!(content_type("feed.json"), JSON_FEED);
        assert_eq!(content_type("archive/3.json"), JSON_FEED);
        assert_eq!(
            content_type("virt-builder/index"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("vagrant/webapp.json"), "application/json");
        assert_eq!(content_type("images/a/1/x.VHDX.XZ"), "application/x-xz");
        assert_eq!(content_type("images/a/1/x.qcow2"), OCTET_STREAM);
        assert_eq!(content_type("README"), OCTET_STREAM);
        assert_eq!(
            content_type("images/a/SHA256SUMS.gpg"),
            "application/pgp-signature"
        );
        assert_eq!(content_type("import-pubring.gpg"), "application/pgp-keys");
        assert_eq!(
            content_type("sysupdate/a.transfer"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(for_extension("OVA"), "application/ovf");
    }
}
