//! The feed's vocabulary, in one place for the writer (`render::feed`) and
//! the one reader (`site::feed`): the namespaces, the element names, and
//! for each fact of the model the attributes it is written as and read
//! back from, side by side. A fact written here must be read here too: the
//! round trip test in `site::feed` renders every field the model has and
//! reads it back, so a field added to one side alone fails it.
//!
//! The ground floor: it knows the model and nothing above it.

use std::collections::BTreeMap;

use url::Url;

use crate::cloud::Provider;
use crate::model::{
    Arch, CloudImage, Combined, Compression, FileDigest, FileName, Firmware, Image, ImageFormat,
    ImageInfo, ImageSource, Machine, OvaDisk, RelPath, Requirements, Sha256, Sha512, Signing,
    SupplyFile, SupplyFormat, SupplyKind, VagrantBox, ZsyncFile,
};

pub const VMCAST_NS: &str = "urn:vmcast:ns:1.0";
pub const PODCAST_NS: &str = "https://podcastindex.org/namespace/1.0";
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// RFC 5005's namespace, for `fh:archive`.
pub const HISTORY_NS: &str = "http://purl.org/syndication/history/1.0";

// RSS 2.0.
pub const RSS: &str = "rss";
pub const CHANNEL: &str = "channel";
pub const ITEM: &str = "item";
pub const TITLE: &str = "title";
pub const LINK: &str = "link";
pub const DESCRIPTION: &str = "description";
pub const LANGUAGE: &str = "language";
pub const GENERATOR: &str = "generator";
pub const LAST_BUILD_DATE: &str = "lastBuildDate";
pub const GUID: &str = "guid";
pub const PUB_DATE: &str = "pubDate";
pub const CATEGORY: &str = "category";
pub const ENCLOSURE: &str = "enclosure";

// Atom links and RFC 5005.
pub const ATOM_LINK: &str = "atom:link";
pub const ARCHIVE: &str = "fh:archive";

// Podcasting 2.0.
pub const ALTERNATE: &str = "podcast:alternateEnclosure";
pub const SOURCE: &str = "podcast:source";
pub const INTEGRITY: &str = "podcast:integrity";

// The vmcast: namespace, channel.
pub const MANIFEST: &str = "vmcast:manifest";
pub const PUBLIC_KEY: &str = "vmcast:publicKey";
pub const SIGNATURE: &str = "vmcast:signature";
pub const SEQUENCE: &str = "vmcast:sequence";
pub const EXPIRES: &str = "vmcast:expires";
pub const DOWNLOAD_BASE: &str = "vmcast:downloadBase";
pub const NEXT_PUBLIC_KEY: &str = "vmcast:nextPublicKey";
pub const MIRROR: &str = "vmcast:mirror";

// The vmcast: namespace, channel (an appliance's feed) and item.
pub const APPLIANCE: &str = "vmcast:appliance";

// The vmcast: namespace, item.
pub const VERSION: &str = "vmcast:version";
pub const RELEASE_CHANNEL: &str = "vmcast:channel";
pub const CRITICAL: &str = "vmcast:critical";
pub const REQUIREMENTS: &str = "vmcast:requirements";
pub const HYPERVISOR: &str = "vmcast:hypervisor";
pub const IMAGE: &str = "vmcast:image";
pub const MACHINE: &str = "vmcast:machine";
pub const DISK: &str = "vmcast:disk";
pub const SBOM: &str = "vmcast:sbom";
pub const PROVENANCE: &str = "vmcast:provenance";
pub const CLOUD_IMAGE: &str = "vmcast:cloudImage";
pub const ZSYNC: &str = "vmcast:zsync";

/// How long `text` is once escaped as text content of the feed (`<`, `>`,
/// `&`, quotes and CR: quick-xml's `escape`, which the writer uses), counted
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

/// An element's attributes as written: name and value, in order.
pub type Attrs = Vec<(&'static str, String)>;

/// An element's attributes as read: by name, values unescaped.
pub type Read = BTreeMap<String, String>;

/// Attributes as quick-xml's writer takes them.
pub fn pairs(attrs: &Attrs) -> impl Iterator<Item = (&str, &str)> {
    attrs.iter().map(|(k, v)| (*k, v.as_str()))
}

fn get<'a>(a: &'a Read, element: &str, key: &str) -> Result<&'a str, String> {
    a.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("{element} without `{key}`"))
}

fn optional_number(a: &Read, element: &str, key: &str) -> Result<Option<u64>, String> {
    a.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{element} `{key}` is not a number: {v:?}"))
        })
        .transpose()
}

fn number(a: &Read, element: &str, key: &str) -> Result<u64, String> {
    optional_number(a, element, key)?.ok_or_else(|| format!("{element} without `{key}`"))
}

fn sha256(a: &Read, element: &str, key: &str) -> Result<Sha256, String> {
    Sha256::from_hex(get(a, element, key)?)
        .ok_or_else(|| format!("{element} `{key}` is not 64 hex digits"))
}

fn url(a: &Read, element: &str, key: &str) -> Result<Url, String> {
    Url::parse(get(a, element, key)?).map_err(|e| format!("{element} {key}: {e}"))
}

fn rel_path(a: &Read, element: &str, key: &str) -> Result<RelPath, String> {
    RelPath::parse(get(a, element, key)?).map_err(|m| format!("{element} {key}: {m}"))
}

fn arch(a: &Read, element: &str) -> Result<Option<Arch>, String> {
    a.get("arch")
        .map(|v| Arch::parse(v).map_err(|m| format!("{element} arch: {m}")))
        .transpose()
}

fn file_name(value: &str, element: &str, key: &str) -> Result<FileName, String> {
    FileName::parse(value).map_err(|m| format!("{element} {key}: {m}"))
}

/// A `vmcast:image`: every fact the build knows of an image but its
/// machine, which is a child element ([`machine_attrs`]).
pub fn image_attrs(image: &Image) -> Attrs {
    let s = &image.source;
    let info = &image.info;
    let mut attrs: Attrs = vec![
        ("url", s.url.to_string()),
        ("name", s.name.to_string()),
        ("path", s.site_path.to_string()),
        ("format", s.format.as_str().to_owned()),
        ("length", image.digest.length.to_string()),
        ("sha256", image.digest.sha256.to_hex()),
    ];
    if let Some(d) = &image.digest.sha512 {
        attrs.push(("sha512", d.to_hex()));
    }
    if s.primary {
        attrs.push(("primary", "true".to_owned()));
    }
    if let Some(arch) = &s.arch {
        attrs.push(("arch", arch.to_string()));
    }
    if let Some(c) = s.compression {
        attrs.push(("compression", c.as_str().to_owned()));
    }
    if let Some(v) = info.virtual_size {
        attrs.push(("virtualSize", v.to_string()));
    }
    if let Some(sub) = &info.subformat {
        attrs.push(("subformat", sub.clone()));
    }
    if let Some(c) = info.cluster_size {
        attrs.push(("clusterSize", c.to_string()));
    }
    if let Some(c) = &info.cluster_compression {
        attrs.push(("clusterCompression", c.clone()));
    }
    if let Some(b) = &image.vagrant_box {
        attrs.push(("vagrantBox", b.path.to_string()));
        attrs.push(("vagrantBoxLength", b.digest.length.to_string()));
        attrs.push(("vagrantBoxSha256", b.digest.sha256.to_hex()));
    }
    if let Some(c) = &image.lxd {
        attrs.push(("lxdMetadata", c.prefix.to_hex()));
        attrs.push(("lxdFingerprint", c.sha256.to_hex()));
    }
    attrs
}

/// An image from its `vmcast:image` attributes. Its file name must be the
/// last segment of its path: one plain name that a subscriber can create
/// beneath its own directory.
pub fn read_image(a: &Read) -> Result<Image, String> {
    let el = IMAGE;
    let url = url(a, el, "url")?;
    let site_path = rel_path(a, el, "path")?;
    let name = file_name(get(a, el, "name")?, el, "name")?;
    if *name != *site_path.file_name() {
        return Err(format!(
            "{el} name: `{name}` is not the file name of its path `{site_path}`"
        ));
    }
    let format = ImageFormat::parse(get(a, el, "format")?)?;
    let compression = a
        .get("compression")
        .map(|c| Compression::parse(c))
        .transpose()?;
    let length = number(a, el, "length")?;
    let sha512 = a
        .get("sha512")
        .map(|hex| Sha512::from_hex(hex).ok_or_else(|| format!("{el} `sha512` is not hex")))
        .transpose()?;
    let virtual_size = optional_number(a, el, "virtualSize")?;
    let vagrant_box = match a.get("vagrantBox") {
        Some(_) => Some(VagrantBox {
            path: rel_path(a, el, "vagrantBox")?,
            digest: FileDigest {
                length: number(a, el, "vagrantBoxLength")?,
                sha256: sha256(a, el, "vagrantBoxSha256")?,
                sha512: None,
            },
        }),
        None => None,
    };
    let lxd = match (a.get("lxdMetadata"), a.get("lxdFingerprint")) {
        (None, None) => None,
        _ => Some(Combined {
            prefix: sha256(a, el, "lxdMetadata")?,
            sha256: sha256(a, el, "lxdFingerprint")?,
        }),
    };
    Ok(Image {
        vagrant_box,
        lxd,
        zsync: None,
        source: ImageSource {
            // Published, not local: messages name the URL.
            source: url.as_str().into(),
            real: url.as_str().into(),
            name,
            format,
            compression,
            arch: arch(a, el)?,
            primary: match a.get("primary").map(String::as_str) {
                None => false,
                Some("true") => true,
                Some(other) => return Err(format!("{el} `primary` is {other:?}, not true")),
            },
            site_path,
            url,
            seen: crate::model::Seen::unscanned(length),
        },
        digest: FileDigest {
            length,
            sha256: sha256(a, el, "sha256")?,
            sha512,
        },
        info: ImageInfo {
            format,
            // The content showed its format when it was first published,
            // unless it is raw or a format hidden inside a compressed stream.
            detected: format != ImageFormat::Raw
                && !(compression.is_some() && virtual_size.is_none()),
            compression,
            virtual_size,
            subformat: a.get("subformat").cloned(),
            cluster_size: optional_number(a, el, "clusterSize")?,
            cluster_compression: a.get("clusterCompression").cloned(),
            machine: None,
        },
    })
}

/// A `vmcast:zsync`, a child of the `vmcast:image` whose control file it
/// is.
pub fn zsync_attrs(z: &ZsyncFile) -> Attrs {
    vec![
        ("url", z.url.to_string()),
        ("path", z.path.to_string()),
        ("length", z.digest.length.to_string()),
        ("sha256", z.digest.sha256.to_hex()),
    ]
}

/// The control file of `image` from its `vmcast:zsync` attributes: it lies
/// beside the image, its path and URL those of the image with `.zsync`.
pub fn read_zsync(a: &Read, image: &Image) -> Result<ZsyncFile, String> {
    let el = ZSYNC;
    let path = rel_path(a, el, "path")?;
    let url = url(a, el, "url")?;
    if path != image.source.zsync_path() || url != image.source.zsync_url() {
        return Err(format!(
            "{el} of {} is not beside it: {path} at {url}",
            image.source.site_path
        ));
    }
    Ok(ZsyncFile {
        path,
        url,
        digest: FileDigest {
            length: number(a, el, "length")?,
            sha256: sha256(a, el, "sha256")?,
            sha512: None,
        },
    })
}

/// A `vmcast:machine`, the virtual machine an OVA or XVA holds; its disks
/// are `vmcast:disk` children ([`disk_attrs`]).
pub fn machine_attrs(m: &Machine) -> Attrs {
    let mut attrs = Attrs::new();
    if let Some(v) = &m.name {
        attrs.push(("name", v.clone()));
    }
    if let Some(v) = &m.os {
        attrs.push(("os", v.clone()));
    }
    if let Some(v) = m.cpus {
        attrs.push(("cpus", v.to_string()));
    }
    if let Some(v) = m.memory_mib {
        attrs.push(("memoryMiB", v.to_string()));
    }
    attrs
}

pub fn read_machine(a: &Read) -> Result<Machine, String> {
    Ok(Machine {
        name: a.get("name").cloned(),
        os: a.get("os").cloned(),
        cpus: optional_number(a, MACHINE, "cpus")?,
        memory_mib: optional_number(a, MACHINE, "memoryMiB")?,
        disks: Vec::new(),
    })
}

pub fn disk_attrs(d: &OvaDisk) -> Attrs {
    let mut attrs = vec![("capacity", d.capacity.to_string())];
    if let Some(file) = &d.file {
        attrs.push(("file", file.clone()));
    }
    attrs
}

pub fn read_disk(a: &Read) -> Result<OvaDisk, String> {
    Ok(OvaDisk {
        file: a.get("file").cloned(),
        capacity: number(a, DISK, "capacity")?,
    })
}

/// The element that links a supply-chain file of this kind.
pub fn supply_element(kind: SupplyKind) -> &'static str {
    match kind {
        SupplyKind::Sbom => SBOM,
        SupplyKind::Provenance => PROVENANCE,
    }
}

/// A `vmcast:sbom` or `vmcast:provenance` ([`supply_element`]), about one
/// image (`image`) or the whole release.
pub fn supply_attrs(f: &SupplyFile) -> Attrs {
    let mut attrs: Attrs = vec![
        ("url", f.url.to_string()),
        ("name", f.name.to_string()),
        ("path", f.site_path.to_string()),
        ("format", f.format.as_str().to_owned()),
        ("type", f.format.media_type().to_owned()),
        ("length", f.digest.length.to_string()),
        ("sha256", f.digest.sha256.to_hex()),
    ];
    if let Some(image) = &f.image {
        attrs.push(("image", image.to_string()));
    }
    if let Some(signing) = &f.signing {
        attrs.push(("signature", signing.as_str().to_owned()));
        let ids = signing.key_ids().join(" ");
        if !ids.is_empty() {
            attrs.push(("keyId", ids));
        }
    }
    attrs
}

/// A supply-chain file from its element's name and attributes.
pub fn read_supply(element: &str, a: &Read) -> Result<SupplyFile, String> {
    let format = SupplyFormat::parse(get(a, element, "format")?)?;
    if supply_element(format.kind()) != element {
        return Err(format!("{element} of format {}", format.as_str()));
    }
    if get(a, element, "type")? != format.media_type() {
        return Err(format!(
            "{element} `type` is {:?}, not {:?} as its format says",
            a["type"],
            format.media_type()
        ));
    }
    let signing = match format.kind() {
        SupplyKind::Sbom => None,
        SupplyKind::Provenance => Some(Signing::parse(
            get(a, element, "signature")?,
            a.get("keyId").map(String::as_str),
        )?),
    };
    let site_path = rel_path(a, element, "path")?;
    let name = file_name(get(a, element, "name")?, element, "name")?;
    if *name != *site_path.file_name() {
        return Err(format!(
            "{element} name: `{name}` is not the file name of its path `{site_path}`"
        ));
    }
    Ok(SupplyFile {
        format,
        name,
        image: a
            .get("image")
            .map(|n| file_name(n, element, "image"))
            .transpose()?,
        site_path,
        url: url(a, element, "url")?,
        digest: FileDigest {
            length: number(a, element, "length")?,
            sha256: sha256(a, element, "sha256")?,
            sha512: None,
        },
        signing,
    })
}

/// A `vmcast:cloudImage`: named, not hashed.
pub fn cloud_attrs(c: &CloudImage) -> Attrs {
    let mut attrs = vec![("provider", c.provider.as_str().to_owned())];
    if let Some(region) = &c.region {
        attrs.push(("region", region.clone()));
    }
    attrs.push(("id", c.id.clone()));
    if let Some(arch) = &c.arch {
        attrs.push(("arch", arch.to_string()));
    }
    attrs
}

/// A cloud image, checked as the build checks it: a region and an id in
/// the provider's syntax, the id in its canonical form.
pub fn read_cloud(a: &Read) -> Result<CloudImage, String> {
    let el = CLOUD_IMAGE;
    let provider = Provider::parse(get(a, el, "provider")?)?;
    let region = a.get("region").cloned();
    provider.check_region(region.as_deref())?;
    let id = get(a, el, "id")?;
    if provider.canonical_id(id)? != id {
        return Err(format!("{el} `id` {id:?} is not in its canonical form"));
    }
    Ok(CloudImage {
        provider,
        region,
        id: id.to_owned(),
        arch: arch(a, el)?,
    })
}

/// A `vmcast:requirements`, whose hypervisors are `vmcast:hypervisor`
/// children; `None` when there is nothing to say.
pub fn requirements_attrs(r: &Requirements) -> Attrs {
    let mut attrs = Attrs::new();
    if let Some(arch) = &r.arch {
        attrs.push(("arch", arch.to_string()));
    }
    for (key, value) in [
        ("minMemoryMiB", r.min_memory_mib),
        ("minDiskGiB", r.min_disk_gib),
        ("minCpus", r.min_cpus),
    ] {
        if let Some(v) = value {
            attrs.push((key, v.to_string()));
        }
    }
    if let Some(fw) = r.firmware {
        attrs.push(("firmware", fw.as_str().to_owned()));
    }
    attrs
}

/// Requirements from the attributes, without their hypervisors.
pub fn read_requirements(a: &Read) -> Result<Requirements, String> {
    let el = REQUIREMENTS;
    Ok(Requirements {
        arch: arch(a, el)?,
        min_memory_mib: optional_number(a, el, "minMemoryMiB")?,
        min_disk_gib: optional_number(a, el, "minDiskGiB")?,
        min_cpus: optional_number(a, el, "minCpus")?,
        firmware: a.get("firmware").map(|f| Firmware::parse(f)).transpose()?,
        hypervisors: Vec::new(),
    })
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
