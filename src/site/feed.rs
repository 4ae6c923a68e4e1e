//! The one reader of the feed format: the site's feed, an appliance's feed
//! or an archive document, read into the model's own types. Every fact the
//! writer (`render::feed`) puts in an item comes back here as the value it
//! was written from, through the codec the two share (`vocab`); what a
//! checker needs besides (the enclosure, the alternate enclosures, the
//! channel's links) is kept as written, for the checks to hold against the
//! model.
//!
//! Parsing is strict where the model is: a version that is no version, a
//! digest that is no digest, an image whose name is not the last segment
//! of its path all refuse the document. Whether the document agrees with
//! the manifest, the site's URLs and itself is for the checks.

use chrono::{DateTime, Utc};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use url::Url;

use crate::model::{Image, Line, Name, Release, ReleaseInfo, Requirements, Version};
use crate::vocab::{self, Read};

/// A feed document, read.
#[derive(Debug, Clone, Default)]
pub struct FeedDoc {
    pub channel: Channel,
    /// Its items in document order: newest first, as the writer orders them.
    pub items: Vec<Item>,
}

/// What a document's channel says.
#[derive(Debug, Clone, Default)]
pub struct Channel {
    pub title: String,
    /// The site's base URL, as the build was configured.
    pub link: String,
    /// The appliance an appliance's feed is about.
    pub appliance: Option<Name>,
    /// The build's sequence; archives, which never change, name none.
    pub sequence: Option<u64>,
    /// Where images are downloaded from, when not from the site.
    pub download_base: Option<String>,
    /// Base URLs of mirrors the channel declares.
    pub mirrors: Vec<String>,
    /// Whether this is an archive document (`fh:archive`, RFC 5005).
    pub archive: bool,
    /// The older archive this document continues in.
    pub prev_archive: Option<String>,
    /// A key announced for a coming rotation.
    pub next_key: Option<NextKey>,
    /// Every URL the channel points at, besides its items'.
    pub urls: Vec<String>,
}

/// `vmcast:nextPublicKey`: the key id and the key, as announced.
#[derive(Debug, Clone, Default)]
pub struct NextKey {
    pub key_id: String,
    pub key: String,
}

/// An item: the release it publishes, in the model's types, and the RSS
/// and Podcasting 2.0 elements that repeat its facts for other readers.
#[derive(Debug, Clone)]
pub struct Item {
    pub release: Release,
    pub guid: String,
    pub link: String,
    pub enclosure: Option<Enclosure>,
    /// Each `podcast:alternateEnclosure`, in document order.
    pub alternates: Vec<Alternate>,
}

/// An RSS `enclosure`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enclosure {
    pub url: String,
    pub length: u64,
    pub media_type: String,
}

/// A `podcast:alternateEnclosure`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alternate {
    pub media_type: String,
    pub length: u64,
    /// Its `podcast:source` URIs: the image's own URL, then its mirrors'.
    pub sources: Vec<String>,
    /// Its `podcast:integrity` value (`sha256-<base64>`).
    pub integrity: Option<String>,
}

impl Item {
    /// Where `image` is served: its own URL first, then every mirror the
    /// item's alternate enclosure for it lists.
    pub fn sources(&self, image: &Image) -> Vec<Url> {
        let mut sources = vec![image.source.url.clone()];
        if let Some(alternate) = self.alternate(image) {
            sources.extend(
                alternate.sources[1..]
                    .iter()
                    .filter_map(|s| Url::parse(s).ok())
                    .filter(|u| *u != image.source.url),
            );
        }
        sources
    }

    /// The alternate enclosure whose first source is `image`'s URL.
    pub fn alternate(&self, image: &Image) -> Option<&Alternate> {
        self.alternates.iter().find(|a| {
            a.sources
                .first()
                .is_some_and(|s| same_url(s, &image.source.url))
        })
    }

    /// Every (image URL, mirror URL) pair its alternate enclosures declare.
    pub fn mirrors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.alternates.iter().flat_map(|a| {
            let first = a.sources.first().map(String::as_str).unwrap_or_default();
            a.sources.iter().skip(1).map(move |m| (first, m.as_str()))
        })
    }
}

impl FeedDoc {
    /// Every URL the document points at.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.channel
            .urls
            .iter()
            .map(String::as_str)
            .chain(self.items.iter().flat_map(|i| {
                let release = &i.release;
                std::iter::once(i.link.as_str())
                    .chain(i.enclosure.iter().map(|e| e.url.as_str()))
                    .chain(release.images.iter().map(|im| im.source.url.as_str()))
                    .chain(
                        release
                            .images
                            .iter()
                            .filter_map(|im| im.zsync.as_ref().map(|z| z.url.as_str())),
                    )
                    .chain(
                        i.alternates
                            .iter()
                            .flat_map(|a| a.sources.iter().map(String::as_str)),
                    )
                    .chain(release.supply.iter().map(|f| f.url.as_str()))
            }))
    }

    /// Reads a feed document. `origin`, the document's name in the site,
    /// stands where a release read from the notes names its release.toml.
    pub fn parse(data: &[u8], origin: &str) -> Result<FeedDoc, String> {
        let mut reader = quick_xml::Reader::from_reader(data);
        let mut parser = Parser {
            doc: FeedDoc::default(),
            item: None,
            origin,
        };
        let mut buf = Vec::new();
        let mut path: Vec<String> = Vec::new();
        let mut text = String::new();
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
                    parser.open(path.last().map(String::as_str), &name, e)?;
                    if matches!(event, Event::Start(_)) {
                        path.push(name);
                        text.clear();
                    } else {
                        parser.close(path.last().map(String::as_str), &name, String::new())?;
                    }
                }
                Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
                Event::CData(t) => text.push_str(t.as_ref()),
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
                    let value = std::mem::take(&mut text);
                    parser.close(path.last().map(String::as_str), &name, value)?;
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if parser.doc.channel.link.is_empty() {
            return Err("not an RSS feed: no channel link".into());
        }
        Ok(parser.doc)
    }
}

/// Whether `raw`, as a document wrote it, is `url`: compared parsed, as
/// the model holds URLs (`a/./b` is `a/b`).
pub fn same_url(raw: &str, url: &Url) -> bool {
    Url::parse(raw).is_ok_and(|u| u == *url)
}

/// An element's attributes by name, values unescaped and normalized.
pub(crate) fn attributes(e: &BytesStart) -> Result<Read, String> {
    let mut out = Read::new();
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

/// The parts of an item as they are read, before they make a release.
#[derive(Default)]
struct ItemParts {
    guid: Option<String>,
    link: String,
    title: String,
    description: String,
    pub_date: Option<String>,
    appliance: Option<String>,
    version: Option<String>,
    channel: Option<String>,
    critical: Option<String>,
    requirements: Requirements,
    images: Vec<Image>,
    supply: Vec<crate::model::SupplyFile>,
    cloud_images: Vec<crate::model::CloudImage>,
    enclosure: Option<Enclosure>,
    alternates: Vec<Alternate>,
}

struct Parser<'a> {
    doc: FeedDoc,
    item: Option<ItemParts>,
    origin: &'a str,
}

impl Parser<'_> {
    fn item(&mut self, element: &str) -> Result<&mut ItemParts, String> {
        self.item
            .as_mut()
            .ok_or_else(|| format!("{element} outside an item"))
    }

    fn last_image(&mut self, element: &str) -> Result<&mut Image, String> {
        self.item(element)?
            .images
            .last_mut()
            .ok_or_else(|| format!("{element} outside a {}", vocab::IMAGE))
    }

    /// An element opens (or stands alone): take its attributes.
    fn open(&mut self, parent: Option<&str>, name: &str, e: &BytesStart) -> Result<(), String> {
        use vocab::*;
        let channel = &mut self.doc.channel;
        match (parent, name) {
            (Some(CHANNEL), ITEM) => self.item = Some(ItemParts::default()),
            (Some(CHANNEL), ARCHIVE) => channel.archive = true,
            (Some(CHANNEL), MIRROR) => channel.mirrors.extend(attributes(e)?.remove("href")),
            (Some(CHANNEL), ATOM_LINK) => {
                let mut a = attributes(e)?;
                if a.get("rel").map(String::as_str) == Some("prev-archive") {
                    channel.prev_archive = a.get("href").cloned();
                }
                channel.urls.extend(a.remove("href"));
            }
            (Some(CHANNEL), MANIFEST) => {
                let mut a = attributes(e)?;
                channel.urls.extend(a.remove("href"));
                channel.urls.extend(a.remove("signature"));
            }
            (Some(CHANNEL), PUBLIC_KEY | SIGNATURE) => {
                channel.urls.extend(attributes(e)?.remove("href"));
            }
            (Some(CHANNEL), DOWNLOAD_BASE) => {
                channel.download_base = attributes(e)?.remove("href");
            }
            (Some(CHANNEL), NEXT_PUBLIC_KEY) => {
                let mut a = attributes(e)?;
                channel.urls.extend(a.remove("href"));
                channel.urls.extend(a.remove("signature"));
                channel.next_key = Some(NextKey {
                    key_id: a.remove("keyId").unwrap_or_default(),
                    key: String::new(),
                });
            }
            (Some(ITEM), ENCLOSURE) => {
                let a = attributes(e)?;
                let length = a.get("length").and_then(|l| l.parse().ok());
                let (Some(url), Some(length)) = (a.get("url"), length) else {
                    return Err(format!("{ENCLOSURE} without a `url` or a numeric `length`"));
                };
                self.item(name)?.enclosure = Some(Enclosure {
                    url: url.clone(),
                    length,
                    media_type: a.get("type").cloned().unwrap_or_default(),
                });
            }
            (Some(ITEM), REQUIREMENTS) => {
                self.item(name)?.requirements = read_requirements(&attributes(e)?)?;
            }
            (Some(ITEM), IMAGE) => {
                let image = read_image(&attributes(e)?)?;
                self.item(name)?.images.push(image);
            }
            (Some(IMAGE), MACHINE) => {
                let machine = read_machine(&attributes(e)?)?;
                self.last_image(name)?.info.machine = Some(machine);
            }
            (Some(IMAGE), ZSYNC) => {
                let image = self.last_image(name)?;
                image.zsync = Some(read_zsync(&attributes(e)?, image)?);
            }
            (Some(MACHINE), DISK) => {
                let disk = read_disk(&attributes(e)?)?;
                if let Some(machine) = self.last_image(name)?.info.machine.as_mut() {
                    machine.disks.push(disk);
                }
            }
            (Some(ITEM), SBOM | PROVENANCE) => {
                let file = read_supply(name, &attributes(e)?)?;
                self.item(name)?.supply.push(file);
            }
            (Some(ITEM), CLOUD_IMAGE) => {
                let cloud = read_cloud(&attributes(e)?)?;
                self.item(name)?.cloud_images.push(cloud);
            }
            (Some(ITEM), ALTERNATE) => {
                let a = attributes(e)?;
                let length = a
                    .get("length")
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| format!("{ALTERNATE} without a numeric `length`"))?;
                self.item(name)?.alternates.push(Alternate {
                    media_type: a.get("type").cloned().unwrap_or_default(),
                    length,
                    sources: Vec::new(),
                    integrity: None,
                });
            }
            (Some(ALTERNATE), SOURCE | INTEGRITY) => {
                let mut a = attributes(e)?;
                let alternate = self
                    .item(name)?
                    .alternates
                    .last_mut()
                    .ok_or_else(|| format!("{name} outside an {ALTERNATE}"))?;
                match name {
                    SOURCE => alternate.sources.extend(a.remove("uri")),
                    _ => alternate.integrity = a.remove("value"),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An element closes with its text.
    fn close(&mut self, parent: Option<&str>, name: &str, value: String) -> Result<(), String> {
        use vocab::*;
        match (parent, name) {
            (Some(RSS), CHANNEL) => {}
            (Some(CHANNEL), LINK) => self.doc.channel.link = value,
            (Some(CHANNEL), TITLE) => self.doc.channel.title = value,
            (Some(CHANNEL), SEQUENCE) => {
                let sequence = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{SEQUENCE} {value:?} is not a number"))?;
                self.doc.channel.sequence = Some(sequence);
            }
            (Some(CHANNEL), APPLIANCE) => {
                self.doc.channel.appliance = Some(Name::parse(value.trim(), "appliance")?);
            }
            (Some(CHANNEL), NEXT_PUBLIC_KEY) => {
                if let Some(k) = self.doc.channel.next_key.as_mut() {
                    k.key = value.trim().to_owned();
                }
            }
            (Some(CHANNEL), ITEM) => {
                let parts = self.item.take().unwrap_or_default();
                let index = self.doc.items.len() + 1;
                let item = parts.finish(self.origin).map_err(|m| match &m.0 {
                    Some(guid) => format!("item {guid}: {}", m.1),
                    None => format!("item {index}: {}", m.1),
                })?;
                self.doc.items.push(item);
            }
            (Some(ITEM), _) => {
                let item = self.item(name)?;
                let slot = match name {
                    GUID => &mut item.guid,
                    PUB_DATE => &mut item.pub_date,
                    APPLIANCE => &mut item.appliance,
                    VERSION => &mut item.version,
                    RELEASE_CHANNEL => &mut item.channel,
                    CRITICAL => &mut item.critical,
                    LINK => {
                        item.link = value;
                        return Ok(());
                    }
                    TITLE => {
                        item.title = value;
                        return Ok(());
                    }
                    DESCRIPTION => {
                        item.description = value;
                        return Ok(());
                    }
                    _ => return Ok(()),
                };
                *slot = Some(value);
            }
            (Some(REQUIREMENTS), HYPERVISOR) => {
                self.item(name)?.requirements.hypervisors.push(value);
            }
            _ => {}
        }
        Ok(())
    }
}

impl ItemParts {
    /// The item, with its release typed; on failure, the guid (if read)
    /// and what is wrong.
    fn finish(self, origin: &str) -> Result<Item, (Option<String>, String)> {
        let guid = self.guid.clone();
        let fail = |m: String| (guid.clone(), m);
        let required = |value: Option<String>, element: &str| {
            value.ok_or_else(|| fail(format!("no {element}")))
        };
        let appliance = Name::parse(
            required(self.appliance, vocab::APPLIANCE)?.trim(),
            "appliance",
        )
        .map_err(fail)?;
        let version =
            Version::parse(required(self.version, vocab::VERSION)?.trim()).map_err(fail)?;
        let channel = Name::parse(
            required(self.channel, vocab::RELEASE_CHANNEL)?.trim(),
            "channel",
        )
        .map_err(fail)?;
        let critical = match self.critical.as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(fail(format!(
                    "{} is {other:?}, not true or false",
                    vocab::CRITICAL
                )));
            }
        };
        let pub_date = required(self.pub_date, vocab::PUB_DATE)?;
        let date = DateTime::parse_from_rfc2822(pub_date.trim())
            .map_err(|e| fail(format!("{} {pub_date:?}: {e}", vocab::PUB_DATE)))?
            .with_timezone(&Utc);
        let guid = required(self.guid, vocab::GUID)?;
        Ok(Item {
            release: Release {
                info: ReleaseInfo {
                    notes_path: origin.into(),
                    appliance,
                    version,
                    title: Line::parse(&self.title, "title").map_err(fail)?,
                    date,
                    channel,
                    critical,
                    notes_html: self.description,
                    // Not in the feed: the notes as written and the guest
                    // OS id stay with the release.toml.
                    notes_text: String::new(),
                    osinfo: None,
                    requirements: self.requirements,
                    cloud_images: self.cloud_images,
                },
                images: self.images,
                supply: self.supply,
            },
            guid,
            link: self.link,
            enclosure: self.enclosure,
            alternates: self.alternates,
        })
    }
}
