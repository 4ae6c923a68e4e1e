//! Vagrant: a box catalog `vagrant/<appliance>.json` per appliance, and a
//! libvirt box for each plain qcow2 image. A box is a tar of `box.img` (the
//! image), `metadata.json` and a `Vagrantfile`. It is written while the
//! hash stage reads the image ([`BoxWriter`], a [`hash::Sink`]), so no image is read twice,
//! and it is a new file of ours: it lives in the output whatever
//! `image_mode` says. Its bytes depend only on the image, the release date
//! (every member's mtime) and this module, so rebuilds are byte-identical.
//!
//! Vagrant parses versions with `Gem::Version`, which refuses `+`, `~`, `_`
//! and a first part that is not a number; such releases are refused here,
//! naming their release.toml, rather than published in a catalog Vagrant
//! rejects whole.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use super::CatalogFile;
use crate::error::{Error, Result};
use crate::hash::{self, Chunk, Facts, Sink};
use crate::model::{FileDigest, ImageFormat, ImageSource, Name, RelPath, ReleaseInfo, Sha256};
use crate::render::Site;

/// The provider every box is for.
pub const PROVIDER: &str = "libvirt";
const BLOCK: u64 = 512;
const VAGRANTFILE: &str = "Vagrant.configure(\"2\") do |config|\n  \
    config.vm.provider :libvirt do |libvirt|\n    libvirt.driver = \"kvm\"\n  end\nend\n";

/// The catalog of one appliance.
pub fn catalog_path(appliance: &str) -> String {
    format!("vagrant/{appliance}.json")
}

/// Whether an image gets a box: libvirt boxes hold plain qcow2 only.
pub fn boxable(source: &ImageSource) -> bool {
    source.format == ImageFormat::Qcow2 && source.compression.is_none()
}

/// Where the box of an image lives in the site:
/// `vagrant/<appliance>/<version>/<name without .qcow2>.box`.
pub fn box_path(info: &ReleaseInfo, source: &ImageSource) -> Result<RelPath> {
    let name = source.name.as_str();
    let stem = name.strip_suffix(".qcow2").unwrap_or(name);
    let path = format!("vagrant/{}/{}/{stem}.box", info.appliance, info.version);
    RelPath::parse(&path).map_err(|e| Error::file(&info.notes_path, e))
}

/// Every member's mtime: the release date, so rebuilds are byte-identical.
pub fn box_mtime(info: &ReleaseInfo) -> u64 {
    u64::try_from(info.date.timestamp()).unwrap_or(0)
}

/// Refuses a version `Gem::Version` cannot parse: Vagrant would refuse the
/// whole catalog. `+` (build metadata) has no Gem counterpart, and mapping
/// `~` to a pre-release would make two releases one box version.
pub fn check_version(info: &ReleaseInfo) -> Result<()> {
    let version = info.version.as_str();
    if gem_version(version) {
        return Ok(());
    }
    Err(Error::file(
        &info.notes_path,
        format_args!(
            "version {version} cannot be a Vagrant box version: Vagrant (Gem::Version) takes \
             numbers and letters in dot-separated parts, starting with a number, with an \
             optional `-pre.release` suffix, and no `+`, `~` or `_`; rename the release or \
             turn off [catalogs] vagrant"
        ),
    ))
}

/// Rubygems' `ANCHORED_VERSION_PATTERN`:
/// `[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?`.
fn gem_version(v: &str) -> bool {
    let (release, pre) = match v.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (v, None),
    };
    let mut parts = release.split('.');
    let first_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    first_ok
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && pre.is_none_or(|pre| {
            pre.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        })
}

/// A box to make of an image in the read that hashes it: where it goes,
/// and its members' mtime.
#[derive(Debug, Clone)]
pub struct BoxJob {
    pub path: PathBuf,
    pub mtime: u64,
}

impl hash::Start for BoxJob {
    type Sink = BoxWriter;

    fn start(&self, image_len: u64) -> Result<BoxWriter> {
        BoxWriter::create(&self.path, image_len, self.mtime)
    }
}

/// A box being written from the hashing read of its image: the image's
/// header first, then each chunk as it is read, then the padding and the
/// small members once the image's virtual size is known. The box's own
/// digest is taken on the way.
pub struct BoxWriter {
    out: File,
    path: PathBuf,
    hasher: sha2::Sha256,
    length: u64,
    mtime: u64,
}

impl Sink for BoxWriter {
    /// The box's length and digest.
    type Output = FileDigest;

    /// Appends image bytes; zeros become a hole, as in the image's copy.
    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        let bytes = chunk.bytes();
        if chunk.is_zeros() {
            self.hasher.update(bytes);
            self.length += bytes.len() as u64;
            self.out
                .seek(SeekFrom::Current(bytes.len() as i64))
                .map(|_| ())
                .map_err(|e| Error::io("cannot write", &self.path, e))
        } else {
            self.write(bytes)
        }
    }

    /// Ends the image, writes `metadata.json` (with the image's virtual
    /// size in bytes, given in GiB rounded up), the `Vagrantfile` and the
    /// end of the archive.
    fn finish(mut self, image: &Facts<'_>) -> Result<FileDigest> {
        let virtual_size = image.info.virtual_size.ok_or_else(|| {
            Error::file(
                image.source,
                "records no virtual size, which a Vagrant box needs",
            )
        })?;
        self.pad()?;
        let gib = virtual_size.div_ceil(1 << 30);
        let metadata = format!(
            "{{\"provider\":\"{PROVIDER}\",\"format\":\"qcow2\",\"virtual_size\":{gib}}}\n"
        );
        for (name, bytes) in [
            ("metadata.json", metadata.as_bytes()),
            ("Vagrantfile", VAGRANTFILE.as_bytes()),
        ] {
            let header = self.header(name, bytes.len() as u64)?;
            self.write(&header)?;
            self.write(bytes)?;
            self.pad()?;
        }
        self.write(&[0; 2 * BLOCK as usize])?;
        // The image may end in a hole: the length must still be whole.
        self.out
            .set_len(self.length)
            .map_err(|e| Error::io("cannot write", &self.path, e))?;
        Ok(FileDigest {
            length: self.length,
            sha256: Sha256(self.hasher.finalize().into()),
            sha512: None,
        })
    }
}

impl BoxWriter {
    /// Creates the box at `path` and writes the header of `box.img`, an
    /// image of `image_len` bytes.
    fn create(path: &Path, image_len: u64, mtime: u64) -> Result<Self> {
        // What an older site left there in the reused spare goes.
        crate::place::holds(path, None)?;
        let mut writer = BoxWriter {
            out: crate::fsutil::create_published(path)?,
            path: path.to_path_buf(),
            hasher: sha2::Sha256::new(),
            length: 0,
            mtime,
        };
        let header = writer.header("box.img", image_len)?;
        writer.write(&header)?;
        Ok(writer)
    }

    fn header(&self, name: &str, size: u64) -> Result<[u8; BLOCK as usize]> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(name)
            .map_err(|e| Error::io("cannot write", &self.path, e))?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        Ok(*header.as_bytes())
    }

    fn pad(&mut self) -> Result<()> {
        let rest = (BLOCK - self.length % BLOCK) % BLOCK;
        self.write(&vec![0; rest as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}

#[derive(Serialize)]
struct Catalog<'a> {
    name: &'a str,
    description: String,
    versions: Vec<Version<'a>>,
}

#[derive(Serialize)]
struct Version<'a> {
    version: &'a str,
    providers: Vec<Provider>,
}

#[derive(Serialize)]
struct Provider {
    name: &'static str,
    url: String,
    checksum_type: &'static str,
    checksum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    default_architecture: bool,
}

/// Vagrant's name of an architecture (`uname -m` as Go spells it).
fn vagrant_arch(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        "i386" | "i686" | "x86" => Some("386"),
        _ => None,
    }
}

/// One catalog per appliance with a box, every release with one as a
/// version, oldest first; and why each other image has none.
pub fn render(site: &Site) -> Result<(Vec<CatalogFile>, Vec<String>)> {
    let mut skipped = Vec::new();
    let mut appliances: Vec<&Name> = site.releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort_unstable();
    appliances.dedup();
    let mut files = Vec::new();
    for appliance in appliances {
        let mut releases: Vec<_> = site
            .releases
            .iter()
            .filter(|r| r.info.appliance == *appliance)
            .collect();
        releases.sort_by(|a, b| a.info.version.cmp(&b.info.version));
        let mut versions = Vec::new();
        for release in releases {
            let mut providers = Vec::new();
            for image in &release.images {
                let Some(boxed) = &image.vagrant_box else {
                    skipped.push(format!(
                        "{}: {}",
                        image.source.site_path,
                        match boxable(&image.source) {
                            true => "its box is not in the previous site's feed",
                            false => "a libvirt box holds a plain qcow2 image only",
                        }
                    ));
                    continue;
                };
                check_version(&release.info)?;
                let arch = image.source.arch.as_deref().and_then(vagrant_arch);
                providers.push(Provider {
                    name: PROVIDER,
                    url: site.config.site_url(boxed.path.as_str()).to_string(),
                    checksum_type: "sha256",
                    checksum: boxed.digest.sha256.to_hex(),
                    architecture: arch,
                    default_architecture: arch.is_some() && image.source.primary,
                });
            }
            if !providers.is_empty() {
                versions.push(Version {
                    version: release.info.version.as_str(),
                    providers,
                });
            }
        }
        if versions.is_empty() {
            continue;
        }
        let meta = site.config.appliance(appliance);
        let catalog = Catalog {
            name: appliance.as_str(),
            description: meta.description.unwrap_or_else(|| meta.title.to_string()),
            versions,
        };
        let path = catalog_path(appliance.as_str());
        let mut bytes = serde_json::to_vec_pretty(&catalog)
            .map_err(|e| Error::other(format_args!("cannot write {path}: {e}")))?;
        bytes.push(b'\n');
        files.push(CatalogFile {
            path,
            bytes,
            signed: false,
        });
    }
    Ok((files, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_rubygems_parses_them() {
        for ok in [
            "1.0.0",
            "2026.11",
            "1.0.0-rc.1",
            "1.4.0-rc-2",
            "1.0.b1",
            "3",
        ] {
            assert!(gem_version(ok), "{ok}");
        }
        for bad in [
            "1.0.0+b1",
            "1.0~rc1",
            "1_0",
            "v1.0",
            "1..0",
            "1.0-",
            "1.0-rc..1",
            "",
        ] {
            assert!(!gem_version(bad), "{bad}");
        }
    }

    #[test]
    fn a_box_is_a_tar_with_the_image_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.box");
        let image = [vec![7u8; 700], vec![0u8; 4096], vec![9u8; 3]].concat();
        let job = BoxJob {
            path: path.clone(),
            mtime: 1_700_000_000,
        };
        let mut writer = hash::Start::start(&job, image.len() as u64).unwrap();
        for part in [&image[..700], &image[700..4796], &image[4796..]] {
            writer.update(&Chunk::new(part)).unwrap();
        }
        let info = crate::model::ImageInfo {
            format: ImageFormat::Qcow2,
            detected: true,
            compression: None,
            virtual_size: Some((1 << 30) + 1),
            subformat: None,
            cluster_size: None,
            cluster_compression: None,
            machine: None,
        };
        let digest = writer
            .finish(&Facts {
                source: &path,
                length: image.len() as u64,
                info: &info,
                sha1: None,
            })
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(digest.length, bytes.len() as u64);
        assert_eq!(digest.sha256, Sha256::of(&bytes));
        let mut archive = tar::Archive::new(&bytes[..]);
        let members: Vec<(String, Vec<u8>, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, data, e.header().mtime().unwrap())
            })
            .collect();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0], ("box.img".into(), image, 1_700_000_000));
        assert_eq!(members[1].0, "metadata.json");
        assert_eq!(
            members[1].1,
            b"{\"provider\":\"libvirt\",\"format\":\"qcow2\",\"virtual_size\":2}\n"
        );
        assert_eq!(members[2].0, "Vagrantfile");
    }
}
