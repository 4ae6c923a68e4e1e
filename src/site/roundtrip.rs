//! The round trip: every field the model has, rendered by the writer
//! and read back by this reader, renders to the same bytes again and
//! reads back equal. A fact the writer gains and the reader does not
//! (or the other way round) fails here before any site is published.

use std::path::PathBuf;

use chrono::TimeZone;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::feed::*;
use crate::cloud::Provider;
use crate::config::{self, Config, Overrides};
use crate::model::{
    Arch, CloudImage, Combined, Compression, FileDigest, FileName, Firmware, ImageFormat,
    ImageInfo, ImageSource, Line, Machine, OvaDisk, RelPath, Sha256, Sha512, Signing, SupplyFile,
    SupplyFormat, VagrantBox, ZsyncFile,
};
use crate::model::{Image, Name, Release, ReleaseInfo, Requirements, Version};
use crate::render::Site;
use crate::sign::{KeyId, SecretKey};
use chrono::Utc;

fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmcast.toml");
    std::fs::write(
        &path,
        "title = \"Round trip\"\ndescription = \"d\"\n\
         base_url = \"https://example.com/site/\"\n\
         download_base_url = \"https://downloads.example.com/a/\"\n\
         mirrors = [\"https://mirror.example.net/m/\"]\n",
    )
    .unwrap();
    let config = config::load(&path, &Overrides::default()).unwrap();
    (dir, config)
}

/// Text with what XML must escape, and more than ASCII.
/// Text on one line, with what XML must escape: a title.
fn line() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"'\u{e9}\u{2014}\t.]{0,40}"
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"'\u{e9}\u{2014}\n.]{0,40}"
}

fn sha256() -> impl Strategy<Value = Sha256> {
    any::<[u8; 32]>().prop_map(Sha256)
}

fn sha512() -> impl Strategy<Value = Sha512> {
    vec(any::<u8>(), 64).prop_map(|b| Sha512(b.try_into().unwrap()))
}

fn digest() -> impl Strategy<Value = FileDigest> {
    (any::<u64>(), sha256(), option::of(sha512())).prop_map(|(length, sha256, sha512)| FileDigest {
        length,
        sha256,
        sha512,
    })
}

fn machine() -> impl Strategy<Value = Machine> {
    let disk = (option::of("[a-z]{1,8}\\.vmdk"), any::<u64>())
        .prop_map(|(file, capacity)| OvaDisk { file, capacity });
    (
        option::of(text()),
        option::of("[a-z0-9]{1,10}"),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        vec(disk, 0..3),
    )
        .prop_map(|(name, os, cpus, memory_mib, disks)| Machine {
            name,
            os,
            cpus,
            memory_mib,
            disks,
        })
}

/// An image's facts, but where it is: (format, compression, arch,
/// digest, info without format and compression, box, lxd, control file).
type Facts = (
    ImageFormat,
    Option<Compression>,
    Option<Arch>,
    FileDigest,
    ImageInfo,
    Option<FileDigest>,
    Option<Combined>,
    Option<FileDigest>,
);

fn facts() -> impl Strategy<Value = Facts> {
    let compression = prop_oneof![
        Just(None),
        Just(Some(Compression::Xz)),
        Just(Some(Compression::Gzip)),
        Just(Some(Compression::Zstd)),
    ];
    let info = (
        option::of(any::<u64>()),
        option::of("v[23]|fixed|dynamic"),
        option::of(any::<u64>()),
        option::of("zlib|zstd"),
        option::of(machine()),
    );
    let lxd =
        option::of((sha256(), sha256()).prop_map(|(prefix, sha256)| Combined { prefix, sha256 }));
    let file = || {
        option::of(
            (any::<u64>(), sha256()).prop_map(|(length, sha256)| FileDigest {
                length,
                sha256,
                sha512: None,
            }),
        )
    };
    (
        proptest::sample::select(ImageFormat::ALL.to_vec()),
        compression,
        option::of("x86_64|aarch64".prop_map(|a| Arch::parse(&a).unwrap())),
        digest(),
        info,
        file(),
        lxd,
        file(),
    )
        .prop_map(
            |(format, compression, arch, digest, info, boxed, lxd, zsync)| {
                let (virtual_size, subformat, cluster_size, cluster_compression, machine) = info;
                let info = ImageInfo {
                    format,
                    // What the reader infers, since the feed does not say.
                    detected: format != ImageFormat::Raw
                        && !(compression.is_some() && virtual_size.is_none()),
                    compression,
                    virtual_size,
                    subformat,
                    cluster_size,
                    cluster_compression,
                    machine,
                };
                (format, compression, arch, digest, info, boxed, lxd, zsync)
            },
        )
}

fn supply(kind: u8) -> impl Strategy<Value = (SupplyFormat, Option<Signing>, FileDigest)> {
    let signing = prop_oneof![
        Just(Signing::Unsigned),
        Just(Signing::Unverified),
        vec("[A-F0-9]{16}", 1..3).prop_map(Signing::Verified),
    ];
    let format = match kind % 4 {
        0 => SupplyFormat::Spdx23,
        1 => SupplyFormat::CycloneDx15,
        2 => SupplyFormat::CycloneDx16,
        _ => SupplyFormat::InToto,
    };
    (signing, any::<u64>(), sha256()).prop_map(move |(signing, length, sha256)| {
        let signing = (format == SupplyFormat::InToto).then_some(signing);
        (
            format,
            signing,
            FileDigest {
                length,
                sha256,
                sha512: None,
            },
        )
    })
}

fn cloud() -> impl Strategy<Value = CloudImage> {
    prop_oneof![
        (
            "[0-9a-f]{17}",
            option::of("x86_64|arm64".prop_map(|a| Arch::parse(&a).unwrap()))
        )
            .prop_map(|(hex, arch)| CloudImage {
                provider: Provider::Aws,
                region: Some("eu-west-1".into()),
                id: format!("ami-{hex}"),
                arch,
            }),
        "[a-z][a-z0-9-]{0,20}[a-z0-9]".prop_map(|image| CloudImage {
            provider: Provider::Gcp,
            region: None,
            id: format!("projects/example/global/images/{image}"),
            arch: None,
        }),
    ]
}

fn release(config: &Config) -> impl Strategy<Value = Release> + use<> {
    let config = config.clone();
    let requirements = (
        option::of("x86_64|aarch64".prop_map(|a| Arch::parse(&a).unwrap())),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(prop_oneof![
            Just(Firmware::Bios),
            Just(Firmware::Uefi),
            Just(Firmware::Any)
        ]),
        vec("kvm|vmware|hyperv|xen", 0..3),
    )
        .prop_map(
            |(arch, mem, disk, cpus, firmware, hypervisors)| Requirements {
                arch,
                min_memory_mib: mem,
                min_disk_gib: disk,
                min_cpus: cpus,
                firmware,
                hypervisors,
            },
        );
    (
        "webapp|db-node",
        "[0-9]{1,2}\\.[0-9]{1,2}(\\.[0-9])?(-rc\\.[0-9])?",
        (
            line(),
            text(),
            0i64..4_000_000_000,
            "stable|beta",
            any::<bool>(),
        ),
        requirements,
        vec(facts(), 0..4),
        vec((any::<u8>(), any::<bool>()), 0..3),
        vec(cloud(), 0..3),
    )
        .prop_flat_map(
            move |(appliance, version, text, requirements, facts, files, clouds)| {
                let supply: Vec<_> = files.iter().map(|(kind, _)| supply(*kind)).collect();
                let config = config.clone();
                supply.prop_map(move |supply| {
                    build(
                        &config,
                        (&appliance, &version),
                        text.clone(),
                        requirements.clone(),
                        &facts,
                        &files,
                        supply,
                        clouds.clone(),
                    )
                })
            },
        )
}

#[allow(clippy::too_many_arguments)]
fn build(
    config: &Config,
    (appliance, version): (&str, &str),
    (title, notes, date, channel, critical): (String, String, i64, String, bool),
    requirements: Requirements,
    facts: &[Facts],
    files: &[(u8, bool)],
    supply: Vec<(SupplyFormat, Option<Signing>, FileDigest)>,
    cloud_images: Vec<CloudImage>,
) -> Release {
    let dir = RelPath::parse(&format!("images/{appliance}/{version}")).unwrap();
    let url = |path: &RelPath| {
        let rel = path.as_str().strip_prefix("images/").unwrap();
        config::join_url(&config.download_base_url, rel)
    };
    let images: Vec<Image> = facts
        .iter()
        .enumerate()
        .map(
            |(i, (format, compression, arch, digest, info, boxed, lxd, zsync))| {
                let mut name = format!("{appliance}-{version}-{i}.{}", format.as_str());
                if let Some(c) = compression {
                    name = format!("{name}.{}", c.extension());
                }
                let site_path = dir.join(&name).unwrap();
                let url = url(&site_path);
                let source = ImageSource {
                    source: url.as_str().into(),
                    real: url.as_str().into(),
                    name: FileName::parse(&name).unwrap(),
                    format: *format,
                    compression: *compression,
                    arch: arch.clone(),
                    primary: i == 0,
                    site_path,
                    url,
                    seen: crate::model::Seen::unscanned(digest.length),
                };
                Image {
                    zsync: zsync.map(|digest| ZsyncFile {
                        path: source.zsync_path(),
                        url: source.zsync_url(),
                        digest,
                    }),
                    source,
                    digest: *digest,
                    info: info.clone(),
                    vagrant_box: boxed.map(|digest| VagrantBox {
                        path: RelPath::parse(&format!("vagrant/{appliance}/{version}/b{i}.box"))
                            .unwrap(),
                        digest,
                    }),
                    lxd: *lxd,
                }
            },
        )
        .collect();
    let supply = supply
        .into_iter()
        .zip(files)
        .enumerate()
        .map(|(i, ((format, signing, digest), (_, about_image)))| {
            let name = format!("s{i}.{}.json", format.as_str());
            let site_path = dir.join(&name).unwrap();
            SupplyFile {
                format,
                name: FileName::parse(&name).unwrap(),
                image: images
                    .first()
                    .filter(|_| *about_image)
                    .map(|i| i.source.name.clone()),
                url: url(&site_path),
                site_path,
                digest,
                signing,
            }
        })
        .collect();
    Release {
        info: ReleaseInfo {
            notes_path: PathBuf::from("archive/1.xml"),
            appliance: Name::parse(appliance, "appliance").unwrap(),
            version: Version::parse(version).unwrap(),
            title: Line::parse(&title, "title").unwrap(),
            date: Utc.timestamp_opt(date, 0).unwrap(),
            channel: Name::parse(&channel, "channel").unwrap(),
            critical,
            notes_html: notes,
            notes_text: String::new(),
            osinfo: None,
            requirements,
            cloud_images,
        },
        images,
        supply,
    }
}

fn render(config: &Config, releases: &[Release]) -> Vec<u8> {
    let key = SecretKey::from_seed(KeyId([1; 8]), [2; 32]);
    let site = Site {
        config,
        releases,
        public_key: &key.public,
        next_key: None,
        openpgp: None,
        build_time: Utc.timestamp_opt(1_790_000_000, 0).unwrap(),
        sequence: 1_790_000_000,
        expires: None,
        published_feeds: &Default::default(),
    };
    let items: Vec<&Release> = releases.iter().collect();
    crate::render::feed::render_archive(&site, 1, &items)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_fact_written_is_read_back(releases in {
        let (_dir, config) = config();
        vec(release(&config), 1..4)
    }) {
        let (_dir, config) = config();
        let written = render(&config, &releases);
        let doc = FeedDoc::parse(&written, "archive/1.xml")
            .map_err(|m| TestCaseError::fail(format!("{m}\n{}", String::from_utf8_lossy(&written))))?;
        let read: Vec<Release> = doc.items.iter().map(|i| i.release.clone()).collect();
        let again = render(&config, &read);
        prop_assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&written)
        );
        for (read, written) in read.iter().zip(&releases) {
            prop_assert_eq!(&read.info.requirements, &written.info.requirements);
            prop_assert_eq!(&read.info.cloud_images, &written.info.cloud_images);
            prop_assert_eq!(&read.supply, &written.supply);
            for (r, w) in read.images.iter().zip(&written.images) {
                prop_assert_eq!(&r.digest, &w.digest);
                prop_assert_eq!(&r.info, &w.info);
                prop_assert_eq!(&r.vagrant_box, &w.vagrant_box);
                prop_assert_eq!(&r.lxd, &w.lxd);
                prop_assert_eq!(&r.zsync, &w.zsync);
                prop_assert_eq!(&r.source.name, &w.source.name);
                prop_assert_eq!(&r.source.url, &w.source.url);
            }
        }
    }
}
