//! The RSS 2.0 feed, written through quick-xml's writer. The `vmcast:`
//! namespace is documented in docs/feed-format.md and checked by
//! docs/schema/vmcast-feed.rng.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::Site;
use crate::model::{Image, Machine, Name, Release};
use crate::vocab::{self, *};

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
    w.create_element(RSS)
        .with_attributes([
            ("version", "2.0"),
            ("xmlns:atom", ATOM_NS),
            ("xmlns:fh", HISTORY_NS),
            ("xmlns:podcast", PODCAST_NS),
            ("xmlns:vmcast", VMCAST_NS),
        ])
        .write_inner_content(|w| {
            w.create_element(CHANNEL).write_inner_content(|w| {
                text(w, TITLE, &format!("{} — archive {n}", config.title))?;
                text(w, LINK, config.base_url.as_str())?;
                text(w, DESCRIPTION, &config.description)?;
                if let Some(lang) = &config.language {
                    text(w, LANGUAGE, lang)?;
                }
                w.create_element(ARCHIVE).write_empty()?;
                let link = |w: &mut W, rel: &str, target: &str| {
                    w.create_element(ATOM_LINK)
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
                w.create_element(SIGNATURE)
                    .with_attribute(("href", config.site_url(&format!("{path}.minisig")).as_str()))
                    .write_empty()?;
                w.create_element(DOWNLOAD_BASE)
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
        w.create_element(MIRROR)
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
    w.create_element(RSS)
        .with_attributes([
            ("version", "2.0"),
            ("xmlns:atom", ATOM_NS),
            ("xmlns:podcast", PODCAST_NS),
            ("xmlns:vmcast", VMCAST_NS),
        ])
        .write_inner_content(|w| {
            w.create_element(CHANNEL).write_inner_content(|w| {
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
                text(w, TITLE, &title)?;
                text(w, LINK, config.base_url.as_str())?;
                text(w, DESCRIPTION, &description)?;
                if let Some(lang) = &config.language {
                    text(w, LANGUAGE, lang)?;
                }
                text(w, GENERATOR, &super::generator())?;
                text(w, LAST_BUILD_DATE, &site.build_time.to_rfc2822())?;
                w.create_element(ATOM_LINK)
                    .with_attributes([
                        ("rel", "self"),
                        ("type", "application/rss+xml"),
                        ("href", config.site_url(path).as_str()),
                    ])
                    .write_empty()?;
                if let Some(n) = newest_archive {
                    let href = config.site_url(&super::archive::path(n));
                    for rel in ["prev-archive", "next"] {
                        w.create_element(ATOM_LINK)
                            .with_attributes([
                                ("rel", rel),
                                ("type", "application/rss+xml"),
                                ("href", href.as_str()),
                            ])
                            .write_empty()?;
                    }
                }
                if let Some(name) = appliance {
                    text(w, APPLIANCE, name.as_str())?;
                }
                w.create_element(MANIFEST)
                    .with_attributes([
                        ("href", config.site_url(crate::media::MANIFEST).as_str()),
                        (
                            "signature",
                            config.site_url(crate::media::MANIFEST_SIG).as_str(),
                        ),
                    ])
                    .write_empty()?;
                let key_id = site.public_key.key_id.to_string();
                w.create_element(PUBLIC_KEY)
                    .with_attributes([
                        ("href", config.site_url(crate::media::PUBLIC_KEY).as_str()),
                        ("keyId", key_id.as_str()),
                    ])
                    .write_text_content(BytesText::new(&site.public_key.to_base64()))?;
                w.create_element(SIGNATURE)
                    .with_attribute(("href", config.site_url(&format!("{path}.minisig")).as_str()))
                    .write_empty()?;
                text(w, SEQUENCE, &site.sequence.to_string())?;
                if let Some(expires) = site.expires {
                    text(
                        w,
                        EXPIRES,
                        &expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    )?;
                }
                w.create_element(DOWNLOAD_BASE)
                    .with_attribute(("href", config.download_base_url.as_str()))
                    .write_empty()?;
                if let Some(next) = site.next_key {
                    let next_id = next.key_id.to_string();
                    let sig = format!("{}.minisig", crate::media::NEXT_PUBLIC_KEY);
                    w.create_element(NEXT_PUBLIC_KEY)
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
    w.create_element(ITEM).write_inner_content(|w| {
        text(w, TITLE, &info.title)?;
        let link = match archived {
            // An archived release is shown on its appliance's history page.
            true => super::history_link(site.config, info),
            false => super::release_link(site.config, info),
        };
        text(w, LINK, link.as_str())?;
        w.create_element(GUID)
            .with_attribute(("isPermaLink", "false"))
            .write_text_content(BytesText::new(&info.guid()))?;
        text(w, PUB_DATE, &info.date.to_rfc2822())?;
        text(w, CATEGORY, info.channel.as_str())?;
        text(w, DESCRIPTION, &info.notes_html)?;
        // A release of cloud images only has no file to enclose.
        if let Some(primary) = release.images.first() {
            let length = primary.digest.length.to_string();
            w.create_element(ENCLOSURE)
                .with_attributes([
                    ("url", primary.source.url.as_str()),
                    ("length", length.as_str()),
                    ("type", primary.source.media_type()),
                ])
                .write_empty()?;
        }
        text(w, APPLIANCE, info.appliance.as_str())?;
        text(w, VERSION, info.version.as_str())?;
        text(w, RELEASE_CHANNEL, info.channel.as_str())?;
        text(w, CRITICAL, if info.critical { "true" } else { "false" })?;
        write_requirements(w, release)?;
        for image in &release.images {
            write_image(w, image)?;
        }
        for file in &release.supply {
            let attrs = vocab::supply_attrs(file);
            w.create_element(vocab::supply_element(file.format.kind()))
                .with_attributes(pairs(&attrs))
                .write_empty()?;
        }
        for cloud in &info.cloud_images {
            let attrs = vocab::cloud_attrs(cloud);
            w.create_element(CLOUD_IMAGE)
                .with_attributes(pairs(&attrs))
                .write_empty()?;
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
    let attrs = vocab::requirements_attrs(r);
    let el = w
        .create_element(REQUIREMENTS)
        .with_attributes(pairs(&attrs));
    if r.hypervisors.is_empty() {
        el.write_empty()?;
    } else {
        el.write_inner_content(|w| {
            for h in &r.hypervisors {
                text(w, HYPERVISOR, h)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn write_image(w: &mut W, image: &Image) -> io::Result<()> {
    let attrs = vocab::image_attrs(image);
    let el = w.create_element(IMAGE).with_attributes(pairs(&attrs));
    if image.info.machine.is_none() && image.zsync.is_none() {
        el.write_empty()?;
        return Ok(());
    }
    el.write_inner_content(|w| {
        if let Some(m) = &image.info.machine {
            write_machine(w, m)?;
        }
        if let Some(z) = &image.zsync {
            let attrs = vocab::zsync_attrs(z);
            w.create_element(ZSYNC)
                .with_attributes(pairs(&attrs))
                .write_empty()?;
        }
        Ok(())
    })?;
    Ok(())
}

/// An OVA's or an XVA's virtual machine.
fn write_machine(w: &mut W, m: &Machine) -> io::Result<()> {
    let attrs = vocab::machine_attrs(m);
    let el = w.create_element(MACHINE).with_attributes(pairs(&attrs));
    if m.disks.is_empty() {
        el.write_empty()?;
        return Ok(());
    }
    el.write_inner_content(|w| {
        for disk in &m.disks {
            let attrs = vocab::disk_attrs(disk);
            w.create_element(DISK)
                .with_attributes(pairs(&attrs))
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
    w.create_element(ALTERNATE)
        .with_attributes(attrs)
        .write_inner_content(|w| {
            w.create_element(SOURCE)
                .with_attribute(("uri", s.url.as_str()))
                .write_empty()?;
            for mirror in mirrors {
                w.create_element(SOURCE)
                    .with_attribute(("uri", mirror.as_str()))
                    .write_empty()?;
            }
            w.create_element(INTEGRITY)
                .with_attributes([
                    ("type", "sri"),
                    ("value", image.digest.sha256.to_sri().as_str()),
                ])
                .write_empty()?;
            Ok(())
        })?;
    Ok(())
}
