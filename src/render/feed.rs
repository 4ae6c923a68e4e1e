//! The RSS 2.0 feed, written through quick-xml's writer. The `vmcast:`
//! namespace is documented in docs/feed-format.md and checked by
//! docs/schema/vmcast-feed.rng.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::Site;
use crate::model::{CloudImage, Image, Name, Release};
use crate::supply::SupplyFile;

pub const VMCAST_NS: &str = "urn:vmcast:ns:1.0";
pub const PODCAST_NS: &str = "https://podcastindex.org/namespace/1.0";
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// RFC 5005's namespace, for `fh:archive`.
pub const HISTORY_NS: &str = "http://purl.org/syndication/history/1.0";

type W = Writer<Vec<u8>>;

/// Renders the current feed at `path` (relative to the site) holding
/// `items`: the releases of `appliance`, or of every appliance, that are not
/// archived. `newest_archive` is the archive its history continues in.
pub fn render(
    site: &Site,
    path: &str,
    appliance: Option<&Name>,
    items: &[&Release],
    newest_archive: Option<usize>,
) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_feed(&mut w, site, path, appliance, items, newest_archive)
        .expect("writing to a Vec cannot fail");
    let mut out = w.into_inner();
    out.push(b'\n');
    out
}

/// Renders archive `n` (RFC 5005): a complete RSS 2.0 feed of `items` that
/// depends on nothing but them and the site's settings, not on the build,
/// so the same releases give the same bytes.
pub fn render_archive(site: &Site, n: usize, items: &[&Release]) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_archive(&mut w, site, n, items).expect("writing to a Vec cannot fail");
    let mut out = w.into_inner();
    out.push(b'\n');
    out
}

fn write_archive(w: &mut W, site: &Site, n: usize, items: &[&Release]) -> io::Result<()> {
    let config = site.config;
    let path = super::archive::path(n);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("rss")
        .with_attributes([
            ("version", "2.0"),
            ("xmlns:atom", ATOM_NS),
            ("xmlns:fh", HISTORY_NS),
            ("xmlns:podcast", PODCAST_NS),
            ("xmlns:vmcast", VMCAST_NS),
        ])
        .write_inner_content(|w| {
            w.create_element("channel").write_inner_content(|w| {
                text(w, "title", &format!("{} — archive {n}", config.title))?;
                text(w, "link", config.base_url.as_str())?;
                text(w, "description", &config.description)?;
                if let Some(lang) = &config.language {
                    text(w, "language", lang)?;
                }
                w.create_element("fh:archive").write_empty()?;
                let link = |w: &mut W, rel: &str, target: &str| {
                    w.create_element("atom:link")
                        .with_attributes([
                            ("rel", rel),
                            ("type", "application/rss+xml"),
                            ("href", config.site_url(target).as_str()),
                        ])
                        .write_empty()
                        .map(|_| ())
                };
                link(w, "self", &path)?;
                link(w, "current", crate::media::FEED)?;
                if n > 1 {
                    let older = super::archive::path(n - 1);
                    link(w, "prev-archive", &older)?;
                    // Paged clients (RFC 5005 section 3) follow "next" to
                    // older entries.
                    link(w, "next", &older)?;
                }
                w.create_element("vmcast:signature")
                    .with_attribute(("href", config.site_url(&format!("{path}.minisig")).as_str()))
                    .write_empty()?;
                w.create_element("vmcast:downloadBase")
                    .with_attribute(("href", config.download_base_url.as_str()))
                    .write_empty()?;
                write_mirrors(w, site, items)?;
                for release in items {
                    write_item(w, site, release, true)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// The mirrors that serve the images of `items`, declared (and so signed)
/// in the channel: verify accepts image URLs under them.
fn write_mirrors(w: &mut W, site: &Site, items: &[&Release]) -> io::Result<()> {
    let mut mirrors: Vec<&url::Url> = items
        .iter()
        .flat_map(|r| site.config.mirrors_of(r.info.appliance.as_str()))
        .collect();
    mirrors.sort();
    mirrors.dedup();
    for mirror in mirrors {
        w.create_element("vmcast:mirror")
            .with_attribute(("href", mirror.as_str()))
            .write_empty()?;
    }
    Ok(())
}

/// The image's URL on each mirror of its appliance: the mirror's base and
/// the image's path under the download base.
pub fn mirror_urls(site: &Site, appliance: &Name, image: &Image) -> Vec<url::Url> {
    let Some(rel) = image
        .source
        .url
        .as_str()
        .strip_prefix(site.config.download_base_url.as_str())
    else {
        return Vec::new();
    };
    site.config
        .mirrors_of(appliance.as_str())
        .iter()
        .filter_map(|m| url::Url::parse(&format!("{m}{rel}")).ok())
        .collect()
}

/// How long `text` is once escaped as text content of the feed (`<`, `>`,
/// `&`, quotes and CR: quick-xml's `escape`, which [`text`] uses), counted
/// without escaping it.
pub fn escaped_len(text: &str) -> usize {
    let extra: usize = text
        .bytes()
        .map(|b| match b {
            b'<' | b'>' => 3,
            b'&' | b'\r' => 4,
            b'\'' | b'"' => 5,
            _ => 0,
        })
        .sum();
    text.len() + extra
}

fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))
        .map(|_| ())
}

fn write_feed(
    w: &mut W,
    site: &Site,
    path: &str,
    appliance: Option<&Name>,
    items: &[&Release],
    newest_archive: Option<usize>,
) -> io::Result<()> {
    let config = site.config;
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("rss")
        .with_attributes([
            ("version", "2.0"),
            ("xmlns:atom", ATOM_NS),
            ("xmlns:podcast", PODCAST_NS),
            ("xmlns:vmcast", VMCAST_NS),
        ])
        .write_inner_content(|w| {
            w.create_element("channel").write_inner_content(|w| {
                let (title, description) = match appliance {
                    Some(name) => {
                        let a = config.appliance(name);
                        (
                            format!("{} — {}", config.title, a.title),
                            a.description.unwrap_or_else(|| config.description.clone()),
                        )
                    }
                    None => (config.title.clone(), config.description.clone()),
                };
                text(w, "title", &title)?;
                text(w, "link", config.base_url.as_str())?;
                text(w, "description", &description)?;
                if let Some(lang) = &config.language {
                    text(w, "language", lang)?;
                }
                text(w, "generator", &super::generator())?;
                text(w, "lastBuildDate", &site.build_time.to_rfc2822())?;
                w.create_element("atom:link")
                    .with_attributes([
                        ("rel", "self"),
                        ("type", "application/rss+xml"),
                        ("href", config.site_url(path).as_str()),
                    ])
                    .write_empty()?;
                if let Some(n) = newest_archive {
                    let href = config.site_url(&super::archive::path(n));
                    for rel in ["prev-archive", "next"] {
                        w.create_element("atom:link")
                            .with_attributes([
                                ("rel", rel),
                                ("type", "application/rss+xml"),
                                ("href", href.as_str()),
                            ])
                            .write_empty()?;
                    }
                }
                if let Some(name) = appliance {
                    text(w, "vmcast:appliance", name.as_str())?;
                }
                w.create_element("vmcast:manifest")
                    .with_attributes([
                        ("href", config.site_url(crate::media::MANIFEST).as_str()),
                        (
                            "signature",
                            config.site_url(crate::media::MANIFEST_SIG).as_str(),
                        ),
                    ])
                    .write_empty()?;
                let key_id = site.public_key.key_id.to_string();
                w.create_element("vmcast:publicKey")
                    .with_attributes([
                        ("href", config.site_url(crate::media::PUBLIC_KEY).as_str()),
                        ("keyId", key_id.as_str()),
                    ])
                    .write_text_content(BytesText::new(&site.public_key.to_base64()))?;
                w.create_element("vmcast:signature")
                    .with_attribute(("href", config.site_url(&format!("{path}.minisig")).as_str()))
                    .write_empty()?;
                text(w, "vmcast:sequence", &site.sequence.to_string())?;
                if let Some(expires) = site.expires {
                    text(
                        w,
                        "vmcast:expires",
                        &expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    )?;
                }
                w.create_element("vmcast:downloadBase")
                    .with_attribute(("href", config.download_base_url.as_str()))
                    .write_empty()?;
                if let Some(next) = site.next_key {
                    let next_id = next.key_id.to_string();
                    let sig = format!("{}.minisig", crate::media::NEXT_PUBLIC_KEY);
                    w.create_element("vmcast:nextPublicKey")
                        .with_attributes([
                            (
                                "href",
                                config.site_url(crate::media::NEXT_PUBLIC_KEY).as_str(),
                            ),
                            ("signature", config.site_url(&sig).as_str()),
                            ("keyId", next_id.as_str()),
                        ])
                        .write_text_content(BytesText::new(&next.to_base64()))?;
                }
                write_mirrors(w, site, items)?;
                for release in items {
                    write_item(w, site, release, false)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

fn write_item(w: &mut W, site: &Site, release: &Release, archived: bool) -> io::Result<()> {
    let info = &release.info;
    w.create_element("item").write_inner_content(|w| {
        text(w, "title", &info.title)?;
        let link = match archived {
            // An archived release is shown on its appliance's history page.
            true => super::history_link(site.config, info),
            false => super::release_link(site.config, info),
        };
        text(w, "link", link.as_str())?;
        w.create_element("guid")
            .with_attribute(("isPermaLink", "false"))
            .write_text_content(BytesText::new(&info.guid()))?;
        text(w, "pubDate", &info.date.to_rfc2822())?;
        text(w, "category", info.channel.as_str())?;
        text(w, "description", &info.notes_html)?;
        // A release of cloud images only has no file to enclose.
        if let Some(primary) = release.images.first() {
            let length = primary.digest.length.to_string();
            w.create_element("enclosure")
                .with_attributes([
                    ("url", primary.source.url.as_str()),
                    ("length", length.as_str()),
                    ("type", primary.source.media_type()),
                ])
                .write_empty()?;
        }
        text(w, "vmcast:appliance", info.appliance.as_str())?;
        text(w, "vmcast:version", info.version.as_str())?;
        text(w, "vmcast:channel", info.channel.as_str())?;
        text(
            w,
            "vmcast:critical",
            if info.critical { "true" } else { "false" },
        )?;
        write_requirements(w, release)?;
        for image in &release.images {
            write_image(w, image)?;
        }
        for file in &release.supply {
            write_supply(w, file)?;
        }
        for cloud in &info.cloud_images {
            write_cloud_image(w, cloud)?;
        }
        for image in &release.images {
            write_alternate(w, image, &mirror_urls(site, &info.appliance, image))?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_requirements(w: &mut W, release: &Release) -> io::Result<()> {
    let r = &release.info.requirements;
    if r.is_empty() {
        return Ok(());
    }
    let numbers = [
        ("minMemoryMiB", r.min_memory_mib),
        ("minDiskGiB", r.min_disk_gib),
        ("minCpus", r.min_cpus),
    ]
    .map(|(k, v)| (k, v.map(|n| n.to_string())));
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    if let Some(arch) = &r.arch {
        attrs.push(("arch", arch));
    }
    for (k, v) in &numbers {
        if let Some(v) = v {
            attrs.push((k, v));
        }
    }
    if let Some(fw) = r.firmware {
        attrs.push(("firmware", fw.as_str()));
    }
    let el = w
        .create_element("vmcast:requirements")
        .with_attributes(attrs);
    if r.hypervisors.is_empty() {
        el.write_empty()?;
    } else {
        el.write_inner_content(|w| {
            for h in &r.hypervisors {
                text(w, "vmcast:hypervisor", h)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn write_image(w: &mut W, image: &Image) -> io::Result<()> {
    let s = &image.source;
    let info = &image.info;
    let length = image.digest.length.to_string();
    let sha = image.digest.sha256.to_hex();
    let sha512 = image.digest.sha512.map(|d| d.to_hex());
    let virtual_size = info.virtual_size.map(|v| v.to_string());
    let cluster_size = info.cluster_size.map(|v| v.to_string());
    let box_facts = image
        .vagrant_box
        .as_ref()
        .map(|b| (b.digest.length.to_string(), b.digest.sha256.to_hex()));
    let lxd = image.lxd.map(|c| (c.prefix.to_hex(), c.sha256.to_hex()));
    let mut attrs: Vec<(&str, &str)> = vec![
        ("url", s.url.as_str()),
        ("name", s.name.as_str()),
        ("path", s.site_path.as_str()),
        ("format", s.format.as_str()),
        ("length", &length),
        ("sha256", &sha),
    ];
    if let Some(d) = &sha512 {
        attrs.push(("sha512", d));
    }
    if s.primary {
        attrs.push(("primary", "true"));
    }
    if let Some(arch) = &s.arch {
        attrs.push(("arch", arch));
    }
    if let Some(c) = s.compression {
        attrs.push(("compression", c.as_str()));
    }
    if let Some(v) = &virtual_size {
        attrs.push(("virtualSize", v));
    }
    if let Some(sub) = &info.subformat {
        attrs.push(("subformat", sub));
    }
    if let Some(c) = &cluster_size {
        attrs.push(("clusterSize", c));
    }
    if let Some(c) = &info.cluster_compression {
        attrs.push(("clusterCompression", c));
    }
    if let (Some(b), Some((length, sha))) = (&image.vagrant_box, &box_facts) {
        attrs.push(("vagrantBox", b.path.as_str()));
        attrs.push(("vagrantBoxLength", length));
        attrs.push(("vagrantBoxSha256", sha));
    }
    if let Some((metadata, fingerprint)) = &lxd {
        attrs.push(("lxdMetadata", metadata));
        attrs.push(("lxdFingerprint", fingerprint));
    }
    let el = w.create_element("vmcast:image").with_attributes(attrs);
    match &info.machine {
        None => {
            el.write_empty()?;
        }
        Some(m) => {
            el.write_inner_content(|w| write_machine(w, m))?;
        }
    }
    Ok(())
}

/// An SBOM or provenance file: `vmcast:sbom` or `vmcast:provenance`, about
/// one image (`image`) or the whole release.
fn write_supply(w: &mut W, f: &SupplyFile) -> io::Result<()> {
    let length = f.digest.length.to_string();
    let sha = f.digest.sha256.to_hex();
    let mut attrs: Vec<(&str, &str)> = vec![
        ("url", f.url.as_str()),
        ("name", &f.name),
        ("path", f.site_path.as_str()),
        ("format", f.format.as_str()),
        ("type", f.format.media_type()),
        ("length", &length),
        ("sha256", &sha),
    ];
    if let Some(image) = &f.image {
        attrs.push(("image", image));
    }
    let key_ids = f.signing.as_ref().map(|s| s.key_ids().join(" "));
    if let Some(signing) = &f.signing {
        attrs.push(("signature", signing.as_str()));
    }
    if let Some(ids) = key_ids.as_deref().filter(|ids| !ids.is_empty()) {
        attrs.push(("keyId", ids));
    }
    w.create_element(f.format.kind().element())
        .with_attributes(attrs)
        .write_empty()?;
    Ok(())
}

/// An image in a cloud catalog: named, not hashed.
fn write_cloud_image(w: &mut W, c: &CloudImage) -> io::Result<()> {
    let mut attrs = vec![("provider", c.provider.as_str())];
    if let Some(region) = &c.region {
        attrs.push(("region", region));
    }
    attrs.push(("id", &c.id));
    if let Some(arch) = &c.arch {
        attrs.push(("arch", arch));
    }
    w.create_element("vmcast:cloudImage")
        .with_attributes(attrs)
        .write_empty()?;
    Ok(())
}

/// An OVA's or an XVA's virtual machine.
fn write_machine(w: &mut W, m: &crate::model::Machine) -> io::Result<()> {
    let cpus = m.cpus.map(|v| v.to_string());
    let memory = m.memory_mib.map(|v| v.to_string());
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [
        ("name", m.name.as_deref()),
        ("os", m.os.as_deref()),
        ("cpus", cpus.as_deref()),
        ("memoryMiB", memory.as_deref()),
    ] {
        if let Some(v) = value {
            attrs.push((key, v));
        }
    }
    let el = w.create_element("vmcast:machine").with_attributes(attrs);
    if m.disks.is_empty() {
        el.write_empty()?;
        return Ok(());
    }
    el.write_inner_content(|w| {
        for disk in &m.disks {
            let capacity = disk.capacity.to_string();
            let mut attrs = vec![("capacity", capacity.as_str())];
            if let Some(file) = &disk.file {
                attrs.push(("file", file));
            }
            w.create_element("vmcast:disk")
                .with_attributes(attrs)
                .write_empty()?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_alternate(w: &mut W, image: &Image, mirrors: &[url::Url]) -> io::Result<()> {
    let s = &image.source;
    let length = image.digest.length.to_string();
    let mut attrs: Vec<(&str, &str)> = vec![
        ("type", s.media_type()),
        ("length", &length),
        ("title", s.format.as_str()),
    ];
    if s.primary {
        attrs.push(("default", "true"));
    }
    w.create_element("podcast:alternateEnclosure")
        .with_attributes(attrs)
        .write_inner_content(|w| {
            w.create_element("podcast:source")
                .with_attribute(("uri", s.url.as_str()))
                .write_empty()?;
            for mirror in mirrors {
                w.create_element("podcast:source")
                    .with_attribute(("uri", mirror.as_str()))
                    .write_empty()?;
            }
            w.create_element("podcast:integrity")
                .with_attributes([
                    ("type", "sri"),
                    ("value", image.digest.sha256.to_sri().as_str()),
                ])
                .write_empty()?;
            Ok(())
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_len_counts_what_the_writer_escapes() {
        let text = "<p class=\"a\">Tom's & Jerry's\r\n</p> é > 1";
        assert_eq!(
            super::escaped_len(text),
            quick_xml::escape::escape(text).len()
        );
    }
}
