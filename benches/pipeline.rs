//! In-process benchmarks of the hot paths: hashing a file, rendering and
//! signing a large site. Run with `cargo bench`.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use divan::Bencher;
use vmcast_gen::config::{self, Config, Overrides};
use vmcast_gen::hash::{self, Job, NoProgress};
use vmcast_gen::inspect::ImageInfo;
use vmcast_gen::model::{
    FileDigest, Image, ImageFormat, ImageSource, Name, RelPath, Release, ReleaseInfo, Requirements,
    Version,
};
use vmcast_gen::render::Site;
use vmcast_gen::sign::{KeyId, SecretKey, Signer};

fn main() {
    divan::main();
}

/// A config read from a scratch file, for the renderers.
fn config(dir: &std::path::Path) -> Config {
    let path = dir.join("vmcast.toml");
    std::fs::write(
        &path,
        "title = \"bench\"\ndescription = \"bench\"\nbase_url = \"https://bench.example.com/\"\n",
    )
    .unwrap();
    config::load(&path, &Overrides::default()).unwrap()
}

/// `n` releases of one appliance, two images each.
fn releases(config: &Config, n: usize) -> Vec<Release> {
    let appliance = Name::parse("app", "appliance").unwrap();
    (0..n)
        .map(|i| {
            let version = Version::parse(&format!("1.{i}.0")).unwrap();
            let images = ["qcow2", "vmdk"]
                .iter()
                .enumerate()
                .map(|(k, ext)| {
                    let name = format!("app-1.{i}.0.{ext}");
                    let site_path = RelPath::parse(&format!("images/app/1.{i}.0/{name}")).unwrap();
                    Image {
                        source: ImageSource {
                            source: PathBuf::from(&name),
                            real: PathBuf::from(&name),
                            url: config::join_url(
                                &config.download_base_url,
                                &format!("app/1.{i}.0/{name}"),
                            ),
                            name: vmcast_gen::model::FileName::parse(&name).unwrap(),
                            format: ImageFormat::from_extension(ext).unwrap(),
                            compression: None,
                            arch: Some(vmcast_gen::model::Arch::parse("x86_64").unwrap()),
                            primary: k == 0,
                            site_path,
                            seen: vmcast_gen::model::Seen::unscanned(1 << 30),
                        },
                        digest: FileDigest {
                            length: (1 << 30) + i as u64,
                            sha256: vmcast_gen::model::Sha256::of(format!("{i}{k}").as_bytes()),
                            sha512: None,
                        },
                        lxd: None,
                        zsync: None,
                        info: ImageInfo {
                            format: ImageFormat::from_extension(ext).unwrap(),
                            detected: true,
                            compression: None,
                            virtual_size: Some(20 << 30),
                            subformat: None,
                            cluster_size: None,
                            cluster_compression: None,
                            machine: None,
                        },
                        vagrant_box: None,
                    }
                })
                .collect();
            Release {
                info: ReleaseInfo {
                    notes_path: PathBuf::from("release.toml"),
                    appliance: appliance.clone(),
                    version,
                    title: vmcast_gen::model::Line::parse(&format!("App 1.{i}.0"), "title")
                        .unwrap(),
                    date: Utc
                        .timestamp_opt(1_700_000_000 + i as i64 * 3600, 0)
                        .unwrap(),
                    channel: Name::parse("stable", "channel").unwrap(),
                    critical: false,
                    notes_html: "<p>Fixes and <strong>features</strong>.</p>\n".into(),
                    notes_text: "Fixes and **features**.".into(),
                    osinfo: None,
                    requirements: Requirements::default(),
                    cloud_images: Vec::new(),
                },
                supply: Vec::new(),
                images,
            }
        })
        .collect()
}

/// Render feed, manifest and page, then sign feed and manifest, for a
/// site of 10,000 releases (target: under 1 s).
#[divan::bench(sample_count = 5)]
fn render_and_sign_10k_releases(bencher: Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let releases = releases(&config, 10_000);
    let key = SecretKey::from_seed(KeyId([1; 8]), [2; 32]);
    bencher.bench_local(|| {
        let site = Site {
            config: &config,
            releases: &releases,
            public_key: &key.public,
            next_key: None,
            openpgp: None,
            build_time: Utc.timestamp_opt(1_790_000_000, 0).unwrap(),
            sequence: 1_790_000_000,
            expires: None,
            published_feeds: &Default::default(),
        };
        let rendered = vmcast_gen::build::texts(&site, 1, None).unwrap();
        for feed in &rendered.site.feeds {
            key.sign(&feed.xml, "timestamp:1\tfile:feed.xml").unwrap();
        }
        key.sign(rendered.manifest.as_bytes(), "timestamp:1\tfile:SHA256SUMS")
            .unwrap();
        rendered
    });
}

/// Hash a 256 MiB file from the page cache on one thread: SHA-256 alone,
/// and with the SHA-512 the virt-builder index needs from the same read.
#[divan::bench(sample_count = 5, args = [false, true])]
fn hash_256_mib_one_thread(bencher: Bencher, sha512: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let jobs = [Job {
        source: path,
        size_hint: data.len() as u64,
        open: hash::Open::Named,
        copy_to: None,
        sink: sha512.then_some(hash::Sha512Sum),
    }];
    bencher
        .counter(divan::counter::BytesCount::new(data.len()))
        .bench_local(|| hash::hash_all(&jobs, 1, &NoProgress).unwrap());
}
