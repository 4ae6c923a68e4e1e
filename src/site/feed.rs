//! The feed, as far as verification needs it: its channel's URLs, link,
//! sequence and announced key, and each item's images and enclosures.

use std::collections::BTreeMap;

use quick_xml::XmlVersion;
use quick_xml::events::Event;

use crate::model::RelPath;

#[derive(Debug, Default)]
pub(super) struct FeedDoc {
    pub(super) link: Option<String>,
    pub(super) sequence: Option<u64>,
    pub(super) download_base: Option<String>,
    /// Every URL the channel points at, besides the items'.
    pub(super) channel_urls: Vec<String>,
    /// The older archive this document continues in (RFC 5005).
    pub(super) prev_archive: Option<String>,
    /// Whether this is an archive document (`fh:archive`).
    pub(super) archive: bool,
    /// Base URLs of mirrors the channel declares (`vmcast:mirror`).
    pub(super) mirror_roots: Vec<String>,
    pub(super) next_key: Option<NextKey>,
    pub(super) items: Vec<Item>,
}

#[derive(Debug, Default)]
pub(super) struct NextKey {
    pub(super) key_id: String,
    pub(super) key: String,
}

#[derive(Debug, Default)]
pub(super) struct Item {
    pub(super) guid: String,
    pub(super) link: Option<String>,
    pub(super) enclosure: Option<(String, u64)>,
    pub(super) images: Vec<FeedImage>,
    /// How many vmcast:cloudImage elements it has: named, never fetched.
    pub(super) cloud_images: usize,
    /// (url, length, sri) of each podcast:alternateEnclosure.
    pub(super) alternates: Vec<(String, u64, String)>,
    /// Its SBOMs and provenance (`vmcast:sbom`, `vmcast:provenance`).
    pub(super) supply: Vec<FeedSupply>,
    /// Every further `podcast:source` of an alternate enclosure (a mirror),
    /// as (the image's own URL, the mirror's URL): URLs the URL check
    /// covers like any other.
    pub(super) mirrors: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(super) struct FeedImage {
    pub(super) url: String,
    /// Its file name, which supply-chain files name it by.
    pub(super) name: String,
    /// Checked when the feed is read: no `..`, not absolute.
    pub(super) path: RelPath,
    pub(super) length: u64,
    pub(super) sha256: String,
    /// Given for the images the virt-builder index lists.
    pub(super) sha512: Option<String>,
    pub(super) primary: bool,
    /// The Vagrant box made of it: its path in the site, length and
    /// SHA-256 (`vagrantBox*`).
    pub(super) vagrant_box: Option<(RelPath, u64, String)>,
    /// LXD's fingerprint: (`lxdMetadata`, `lxdFingerprint`).
    pub(super) lxd: Option<(String, String)>,
}

/// An SBOM or provenance file as the feed links it.
#[derive(Debug, Clone)]
pub(super) struct FeedSupply {
    pub(super) kind: crate::supply::Kind,
    pub(super) format: String,
    pub(super) name: String,
    pub(super) url: String,
    /// Checked when the feed is read: no `..`, not absolute.
    pub(super) path: RelPath,
    pub(super) length: u64,
    pub(super) sha256: String,
    /// The image it is about (its `name`); none for the whole release.
    pub(super) image: Option<String>,
    /// Its media type (`type`).
    pub(super) media_type: String,
    /// For provenance, how the build found it signed (`signature`), and
    /// the builder keys that verified it (`keyId`).
    pub(super) signature: Option<String>,
    pub(super) key_ids: Vec<String>,
}

impl FeedDoc {
    pub(super) fn urls(&self) -> impl Iterator<Item = &String> {
        self.channel_urls
            .iter()
            .chain(self.items.iter().flat_map(|i| {
                i.link
                    .iter()
                    .chain(i.enclosure.iter().map(|e| &e.0))
                    .chain(i.images.iter().map(|im| &im.url))
                    .chain(i.alternates.iter().map(|a| &a.0))
                    .chain(i.mirrors.iter().map(|m| &m.1))
                    .chain(i.supply.iter().map(|f| &f.url))
            }))
    }

    pub(super) fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        let mut reader = quick_xml::Reader::from_reader(data);
        let mut buf = Vec::new();
        let mut path: Vec<String> = Vec::new();
        let mut doc = FeedDoc::default();
        let mut text = String::new();
        // The alternate enclosure being read: (length, url, sri).
        let mut alt: Option<(u64, String, String)> = None;
        loop {
            let event = reader.read_event_into(&mut buf).map_err(|e| {
                format!(
                    "not well-formed XML at byte {}: {e}",
                    reader.error_position()
                )
            })?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let name = e.name().as_ref().to_owned();
                    let attrs = attributes(e)?;
                    let parent = path.last().map(String::as_str);
                    match (parent, name.as_str()) {
                        (Some("channel"), "item") => doc.items.push(Item::default()),
                        (Some("channel"), "fh:archive") => doc.archive = true,
                        (Some("channel"), "vmcast:mirror") => {
                            doc.mirror_roots.extend(attrs.get("href").cloned())
                        }
                        (Some("channel"), "atom:link") => {
                            if attrs.get("rel").map(String::as_str) == Some("prev-archive") {
                                doc.prev_archive = attrs.get("href").cloned();
                            }
                            doc.channel_urls.extend(attrs.get("href").cloned())
                        }
                        (Some("channel"), "vmcast:manifest") => doc.channel_urls.extend(
                            ["href", "signature"]
                                .iter()
                                .filter_map(|k| attrs.get(*k).cloned()),
                        ),
                        (Some("channel"), "vmcast:publicKey" | "vmcast:signature") => {
                            doc.channel_urls.extend(attrs.get("href").cloned())
                        }
                        (Some("channel"), "vmcast:downloadBase") => {
                            doc.download_base = attrs.get("href").cloned()
                        }
                        (Some("channel"), "vmcast:nextPublicKey") => {
                            doc.channel_urls.extend(
                                ["href", "signature"]
                                    .iter()
                                    .filter_map(|k| attrs.get(*k).cloned()),
                            );
                            doc.next_key = Some(NextKey {
                                key_id: attrs.get("keyId").cloned().unwrap_or_default(),
                                key: String::new(),
                            });
                        }
                        (Some("item"), "enclosure") => {
                            let item = doc.items.last_mut().ok_or("enclosure outside an item")?;
                            item.enclosure = Some((
                                attrs.get("url").cloned().unwrap_or_default(),
                                number(&attrs, "length")?,
                            ));
                        }
                        (Some("item"), "vmcast:image") => {
                            let item =
                                doc.items.last_mut().ok_or("vmcast:image outside an item")?;
                            item.images.push(FeedImage {
                                url: attrs.get("url").cloned().unwrap_or_default(),
                                name: attrs.get("name").cloned().unwrap_or_default(),
                                path: image_path(&attrs)?,
                                length: number(&attrs, "length")?,
                                sha256: attrs.get("sha256").cloned().unwrap_or_default(),
                                sha512: attrs.get("sha512").cloned(),
                                primary: attrs.get("primary").map(String::as_str) == Some("true"),
                                lxd: attrs
                                    .get("lxdMetadata")
                                    .cloned()
                                    .zip(attrs.get("lxdFingerprint").cloned()),
                                vagrant_box: vagrant_box(&attrs)?,
                            });
                        }
                        (Some("item"), "vmcast:sbom" | "vmcast:provenance") => {
                            let item = doc
                                .items
                                .last_mut()
                                .ok_or("a supply-chain file outside an item")?;
                            item.supply.push(FeedSupply {
                                kind: if name == "vmcast:sbom" {
                                    crate::supply::Kind::Sbom
                                } else {
                                    crate::supply::Kind::Provenance
                                },
                                format: attrs.get("format").cloned().unwrap_or_default(),
                                name: attrs.get("name").cloned().unwrap_or_default(),
                                url: attrs.get("url").cloned().unwrap_or_default(),
                                path: RelPath::parse(
                                    attrs.get("path").map(String::as_str).unwrap_or_default(),
                                )
                                .map_err(|m| format!("{name} path: {m}"))?,
                                length: number(&attrs, "length")?,
                                sha256: attrs.get("sha256").cloned().unwrap_or_default(),
                                image: attrs.get("image").cloned(),
                                media_type: attrs.get("type").cloned().unwrap_or_default(),
                                signature: attrs.get("signature").cloned(),
                                key_ids: attrs
                                    .get("keyId")
                                    .map(|ids| ids.split_whitespace().map(str::to_owned).collect())
                                    .unwrap_or_default(),
                            });
                        }
                        (Some("item"), "vmcast:cloudImage") => {
                            doc.items
                                .last_mut()
                                .ok_or("vmcast:cloudImage outside an item")?
                                .cloud_images += 1;
                        }
                        (Some("item"), "podcast:alternateEnclosure") => {
                            alt = Some((number(&attrs, "length")?, String::new(), String::new()));
                        }
                        (Some("podcast:alternateEnclosure"), "podcast:source") => {
                            let uri = attrs.get("uri").cloned().unwrap_or_default();
                            match alt.as_mut() {
                                // The first source is the image's own URL.
                                Some(a) if a.1.is_empty() => a.1 = uri,
                                Some(a) => {
                                    if let Some(item) = doc.items.last_mut() {
                                        item.mirrors.push((a.1.clone(), uri));
                                    }
                                }
                                None => {}
                            }
                        }
                        (Some("podcast:alternateEnclosure"), "podcast:integrity") => {
                            if let Some(a) = alt.as_mut() {
                                a.2 = attrs.get("value").cloned().unwrap_or_default();
                            }
                        }
                        _ => {}
                    }
                    if matches!(event, Event::Start(_)) {
                        path.push(name);
                        text.clear();
                    } else if name == "podcast:alternateEnclosure" {
                        close_alternate(&mut doc, &mut alt)?;
                    }
                }
                Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
                Event::GeneralRef(r) => {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|e| format!("bad reference: {e}"))?
                    {
                        text.push(c);
                    } else {
                        text.push_str(match r.as_ref() {
                            "lt" => "<",
                            "gt" => ">",
                            "amp" => "&",
                            "quot" => "\"",
                            "apos" => "'",
                            other => return Err(format!("unknown entity &{other};")),
                        });
                    }
                }
                Event::End(_) => {
                    let name = path.pop().unwrap_or_default();
                    let parent = path.last().map(String::as_str);
                    let value = std::mem::take(&mut text);
                    match (parent, name.as_str()) {
                        (Some("channel"), "link") => doc.link = Some(value),
                        (Some("channel"), "vmcast:sequence") => {
                            doc.sequence = value.trim().parse().ok()
                        }
                        (Some("channel"), "vmcast:nextPublicKey") => {
                            if let Some(k) = doc.next_key.as_mut() {
                                k.key = value.trim().to_owned();
                            }
                        }
                        (Some("item"), "guid") => {
                            if let Some(item) = doc.items.last_mut() {
                                item.guid = value;
                            }
                        }
                        (Some("item"), "link") => {
                            if let Some(item) = doc.items.last_mut() {
                                item.link = Some(value);
                            }
                        }
                        (Some("item"), "podcast:alternateEnclosure") => {
                            close_alternate(&mut doc, &mut alt)?
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if doc.link.is_none() {
            return Err("not an RSS feed: no channel link".into());
        }
        Ok(doc)
    }
}

fn close_alternate(
    doc: &mut FeedDoc,
    alt: &mut Option<(u64, String, String)>,
) -> std::result::Result<(), String> {
    if let Some((length, url, sri)) = alt.take() {
        let item = doc
            .items
            .last_mut()
            .ok_or("alternateEnclosure outside an item")?;
        item.alternates.push((url, length, sri));
    }
    Ok(())
}

/// A `vmcast:image`'s Vagrant box, if it names one.
fn vagrant_box(
    attrs: &BTreeMap<String, String>,
) -> std::result::Result<Option<(RelPath, u64, String)>, String> {
    let Some(path) = attrs.get("vagrantBox") else {
        return Ok(None);
    };
    let path = RelPath::parse(path).map_err(|m| format!("vmcast:image vagrantBox: {m}"))?;
    let sha256 = attrs
        .get("vagrantBoxSha256")
        .cloned()
        .ok_or("a vagrantBox without vagrantBoxSha256")?;
    Ok(Some((path, number(attrs, "vagrantBoxLength")?, sha256)))
}

/// An element's attributes by name, values unescaped and normalized.
pub(crate) fn attributes(
    e: &quick_xml::events::BytesStart,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("bad attribute: {err}"))?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad attribute value: {err}"))?
            .into_owned();
        out.insert(key, value);
    }
    Ok(out)
}

fn number(attrs: &BTreeMap<String, String>, key: &str) -> std::result::Result<u64, String> {
    attrs
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("missing or invalid `{key}` attribute"))
}

/// An image's `path`: a path relative to the site, or the feed is refused.
fn image_path(attrs: &BTreeMap<String, String>) -> std::result::Result<RelPath, String> {
    let raw = attrs.get("path").map(String::as_str).unwrap_or_default();
    RelPath::parse(raw).map_err(|m| format!("vmcast:image path: {m}"))
}
