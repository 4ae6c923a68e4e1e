//! A deterministic mutation fuzzer over what `verify` reads from a
//! downloaded site: the feed, SHA256SUMS, minisign signatures (checked
//! against a fixed key), public keys, the signed build stamps, and SBOMs
//! and provenance files (their signatures checked against a builder key);
//! and over the files `verify --state` and `pull` keep between runs, which
//! whoever can write beside them controls: the state file and pull's
//! record. The seeds are a real build's output, a real state file, records
//! as pull writes them and minisign's own files (known-answer/); each
//! mutant is a seed with a few seeded edits: bit flips, byte insertions and
//! deletions, truncations, splices from other seeds, duplicated lines, huge
//! numbers, re-encoded base64 and deep nesting. A reader may refuse a
//! mutant; it must neither panic nor take more than a second of CPU time
//! over it. The cargo-fuzz targets in fuzz/ do the same with coverage
//! guidance.
//!
//! 3,000 mutants per reader; `VMCAST_FUZZ_ITERATIONS` sets another count.
//! Mutant `n` of a reader depends on `n` alone, so a failing seed fails
//! again at any count; its input is also written out for `cargo fuzz run`.

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use crate::common::{Fixture, assert_success};
use vmcast_gen::model::Sha256;
use vmcast_gen::render::archive::ARCHIVE_ITEMS;
use vmcast_gen::sign::{PublicKey, Signature};
use vmcast_gen::site::count_feed_items;
use vmcast_gen::sums;
use vmcast_gen::trust::BuildStamp;

tests! {
    feed_reader_survives_mutants;
    sums_parser_survives_mutants;
    signature_parser_survives_mutants;
    public_key_parser_survives_mutants;
    build_stamp_parser_survives_mutants;
    supply_chain_readers_survive_mutants;
    state_file_reader_survives_mutants;
    pull_record_reader_survives_mutants;
}

/// One call that takes more CPU time than this fails: every reader is
/// linear in its input. CPU time, the worker thread's own, so that a
/// loaded machine (CI runs the suite on every core) does not stretch it.
const TIME_LIMIT: Duration = Duration::from_secs(1);
/// A call that has not returned after this much wall time hangs.
const HANG: Duration = Duration::from_secs(30);

fn feed_reader_survives_mutants() {
    fuzz(&Reader {
        name: "feed",
        target: "feed",
        seeds: &seeds().feeds,
        tokens: b"<|>|</|/>|\"|'|=|&amp;|&lt;|&#x110000;|&#0;|&#xFFFFFFFFFFFF;|&unknown;|&|\
            <![CDATA[|]]>|<!--|-->|<?xml version=\"1.1\"?>|\
            <!DOCTYPE rss [<!ENTITY e \"x\">]>|<item>|</item>|<channel>|</channel>|\
            <link>x</link>|<guid>g</guid>|<enclosure url=\"u\" length=\"1\"/>|\
            <vmcast:image url=\"u\" path=\"p\" length=\"2\" sha256=\"s\" primary=\"true\"/>|\
            <podcast:alternateEnclosure length=\"3\">|</podcast:alternateEnclosure>|\
            <podcast:alternateEnclosure length=\"4\"/>|<podcast:source uri=\"u\"/>|\
            <podcast:integrity value=\"v\"/>|<vmcast:nextPublicKey keyId=\"k\">|\
            <vmcast:sequence>1</vmcast:sequence>| length=\"\"| a=\"1\" a=\"2\"| x|\r\n|\0|\
            \xef\xbb\xbf|\xff",
        nests: &[
            (b"<x>", b"</x>"),
            (b"<item>", b"</item>"),
            (b"<channel>", b"</channel>"),
            (
                b"<podcast:alternateEnclosure length=\"1\">",
                b"</podcast:alternateEnclosure>",
            ),
            (b" a=\"&amp;\"", b""),
        ],
        read: |data| count_feed_items(data).is_ok(),
    });
}

fn sums_parser_survives_mutants() {
    fuzz(&Reader {
        name: "sums",
        target: "sums",
        seeds: &seeds().sums,
        tokens: b"\\|\\\\|\\n|\\r|\\x|  | | *|\n|\r\n|\r|+|-|\
            0000000000000000000000000000000000000000000000000000000000000000|\0|\xc3\xa9|\
            \xff|\xe2\x80\xa8",
        nests: &[(b"\\\\", b""), (b"  ", b""), (b"\n", b""), (b"\\", b"n")],
        read: |data| {
            // What parses must hold each digest as written, and write back
            // to the same manifest.
            let Ok(parsed) = sums::parse(data) else {
                return false;
            };
            let lower = data.to_ascii_lowercase();
            for (name, digest) in &parsed {
                let hex = digest.to_hex();
                assert!(
                    lower.windows(64).any(|w| w == hex.as_bytes()),
                    "{name:?}: digest {hex} is not in the manifest as written"
                );
            }
            let written = sums::manifest(parsed.iter().map(|(n, d)| (n.as_str(), *d)));
            assert_eq!(sums::parse(written.as_bytes()), Ok(parsed));
            true
        },
    });
}

fn signature_parser_survives_mutants() {
    fuzz(&Reader {
        name: "signature",
        target: "minisig",
        seeds: &seeds().signatures,
        tokens: b"untrusted comment: |trusted comment: |\n|\r\n|\r|=|==|RUQ|RWQ|A|/|+| |\t|:|\
            timestamp:|\tfile:|\tsequence:-1|\texpires:99999999999999999999|\xef\xbb\xbf|\
            \xff",
        nests: &[(b"\n", b""), (b"A", b""), (b"=", b""), (b"\t:", b"")],
        read: |data| {
            let text = String::from_utf8_lossy(data);
            let Ok(sig) = Signature::from_file(Path::new("fuzz.minisig"), &text) else {
                return false;
            };
            let (key, signed) = kat();
            let _ = sig.verify_comment(key);
            let _ = sig.verify_data(key, &signed.1);
            let _ = sig.verify_data(key, data);
            if let Ok(stamp) = BuildStamp::parse(&sig.trusted_comment) {
                let _ = stamp.expires_at();
            }
            true
        },
    });
}

fn public_key_parser_survives_mutants() {
    fuzz(&Reader {
        name: "pubkey",
        target: "minisig",
        seeds: &seeds().keys,
        tokens: b"untrusted comment: |\n|\r\n|=|==|RWQ|RUQ|AAAA|/|+| |\t|\xef\xbb\xbf|\xff",
        nests: &[(b"\n", b""), (b"A", b""), (b" ", b"")],
        read: |data| {
            let text = String::from_utf8_lossy(data);
            let (_, (sig, signed)) = kat();
            let keys = [
                PublicKey::from_file(Path::new("fuzz.pub"), &text).ok(),
                PublicKey::from_base64(&text).ok(),
            ];
            for key in keys.iter().flatten() {
                let _ = sig.verify(key, signed);
            }
            keys.iter().any(Option::is_some)
        },
    });
}

fn build_stamp_parser_survives_mutants() {
    fuzz(&Reader {
        name: "stamp",
        target: "minisig",
        seeds: &seeds().stamps,
        tokens: b"\t|:|timestamp:|file:|base_url:|sequence:|expires:|-|+| |\xff|\xef\xbb\xbf",
        nests: &[(b"\t", b""), (b":", b""), (b"expires:1\t", b"")],
        read: |data| {
            let stamp = BuildStamp::parse(&String::from_utf8_lossy(data));
            stamp.map(|stamp| stamp.expires_at()).is_ok()
        },
    });
}

fn supply_chain_readers_survive_mutants() {
    fuzz(&Reader {
        name: "supply",
        target: "supply",
        seeds: &seeds().supply,
        tokens: b"{|}|[|]|\"|:|,|null|true|1e999|-0|\"\\u0000\"|\"\\ud800\"|\n|\r\n|\
            \"spdxVersion\":\"SPDX-2.3\"|\"bomFormat\":\"CycloneDX\"|\"specVersion\":\"1.6\"|\
            \"packages\":[]|\"_type\":\"https://in-toto.io/Statement/v1\"|\
            \"payloadType\":\"application/vnd.in-toto+json\"|\"payload\":\"e30=\"|\
            \"signatures\":[{\"sig\":\"AAAA\"}]|\"subject\":[]|\"digest\":{}|\
            \"sha256\":\"00\"|\xef\xbb\xbf|\xff|\0",
        nests: &[(b"[", b"]"), (b"{\"a\":", b"}")],
        read: |data| {
            let (key, image) = supply_key();
            let targets = [("webapp-1.0.0.raw", *image)];
            let examine = |name: &str, kind| {
                vmcast_gen::supply::examine(
                    Path::new(name),
                    name,
                    kind,
                    data,
                    std::slice::from_ref(key),
                    &targets,
                )
                .is_ok()
            };
            examine("x.spdx.json", vmcast_gen::supply::Kind::Sbom)
                | examine("x.intoto.jsonl", vmcast_gen::supply::Kind::Provenance)
        },
    });
}

fn state_file_reader_survives_mutants() {
    fuzz(&Reader {
        name: "state",
        target: "pull_files",
        seeds: &seeds().states,
        tokens: JSON_TOKENS,
        nests: &[(b"[", b"]"), (b"{\"a\":", b"}")],
        read: |data| vmcast_gen::site::read_state(data).is_ok(),
    });
}

fn pull_record_reader_survives_mutants() {
    fuzz(&Reader {
        name: "record",
        target: "pull_files",
        seeds: &seeds().records,
        tokens: JSON_TOKENS,
        nests: &[(b"[", b"]"), (b"{\"a\":", b"}")],
        read: |data| vmcast_gen::pull::read_record(data).is_ok(),
    });
}

/// The syntax of the JSON files `verify --state` and `pull` keep.
const JSON_TOKENS: &[u8] = b"{|}|[|]|\"|:|,|null|true|1e999|-0|-1|18446744073709551616|\
    170141183460469231731687303715884105728|\"\\u0000\"|\"\\ud800\"|\n|\
    \"format\":\"vmcast-gen-pull-1\"|\"format\":\"vmcast-gen-verify-state-1\"|\
    \"file\":\"../x\"|\"file\":\".vmcast-pull.json\"|\"file\":\"a/b\"|\"announced_by\":\
    |\"highest_sequence\":|\"public_key\":\"RWQ\"|\"keys\":{}|\"placed\":[]|\"site\":\
    |\"inode\":|\"mtime_ns\":|\xef\xbb\xbf|\xff|\0";

/// The supply-chain fixture's builder key and its image's digest.
fn supply_key() -> &'static (vmcast_gen::supply::keys::ProvenanceKey, Sha256) {
    static KEY: OnceLock<(vmcast_gen::supply::keys::ProvenanceKey, Sha256)> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/supply-chain");
        let pem = dir.join("keys/builder-p256.pub.pem");
        let key = vmcast_gen::supply::keys::ProvenanceKey::parse(
            &pem,
            &fs::read_to_string(&pem).unwrap(),
        )
        .unwrap();
        let image = fs::read(dir.join("releases/webapp/1.0.0/webapp-1.0.0.raw")).unwrap();
        (key, Sha256::of(&image))
    })
}

/// One reader under test and what its mutants are made of.
struct Reader {
    name: &'static str,
    /// The cargo-fuzz target that replays a failing input.
    target: &'static str,
    seeds: &'static [Vec<u8>],
    /// This format's syntax, inserted whole: `|`-separated.
    tokens: &'static [u8],
    /// (open, close): inserted `depth` times each, back to back.
    nests: &'static [(&'static [u8], &'static [u8])],
    /// Reads a mutant; true when it was accepted.
    read: fn(&[u8]) -> bool,
}

/// Runs the mutants on a worker thread, so that a hang is reported too.
fn fuzz(reader: &Reader) {
    let iterations: usize = std::env::var("VMCAST_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let (to_worker, inputs) = mpsc::channel::<Vec<u8>>();
    let (to_runner, outcomes) = mpsc::channel::<Option<(bool, Duration)>>();
    let read = reader.read;
    thread::spawn(move || {
        for input in inputs {
            let started = thread_cpu_time();
            let outcome = catch_unwind(|| read(&input)).ok();
            let took = thread_cpu_time().saturating_sub(started);
            if to_runner.send(outcome.map(|ok| (ok, took))).is_err() {
                break;
            }
        }
    });
    let mut slowest = Duration::ZERO;
    let (mut largest, mut accepted) = (0, 0);
    for n in 0..iterations {
        let input = mutant(reader, &mut Rng::new(reader.name, n));
        largest = largest.max(input.len());
        to_worker.send(input.clone()).unwrap();
        match outcomes.recv_timeout(HANG) {
            Ok(Some((_, took))) if took > TIME_LIMIT => {
                fail(reader, n, &input, "took more than a second of CPU time")
            }
            Ok(Some((ok, took))) => {
                slowest = slowest.max(took);
                accepted += usize::from(ok);
            }
            Ok(None) => fail(reader, n, &input, "panicked"),
            Err(_) => fail(reader, n, &input, "did not return (a hang)"),
        }
    }
    eprintln!(
        "fuzz {}: {iterations} mutants of {} seeds, {accepted} accepted, no panic; slowest {slowest:.1?} of CPU time, largest {largest} bytes",
        reader.name,
        reader.seeds.len()
    );
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn fail(reader: &Reader, n: usize, input: &[u8], what: &str) -> ! {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{}-{n}", reader.name));
    fs::write(&path, input).unwrap();
    let (name, target, path) = (reader.name, reader.target, path.display());
    panic!(
        "{name} reader: mutant seed {n} {what}; input in {path} (replay: cargo fuzz run {target} {path})"
    );
}

/// The public key of known-answer/, and its signature of data.txt.
fn kat() -> &'static (PublicKey, (Signature, Vec<u8>)) {
    static KAT: OnceLock<(PublicKey, (Signature, Vec<u8>))> = OnceLock::new();
    KAT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/known-answer");
        let text = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
        let key = PublicKey::from_file(&dir.join("kat.pub"), &text("kat.pub")).unwrap();
        let sig = Signature::from_file(&dir.join("data.txt.minisig"), &text("data.txt.minisig"));
        (key, (sig.unwrap(), fs::read(dir.join("data.txt")).unwrap()))
    })
}

/// The seeds of each reader.
struct Seeds {
    feeds: Vec<Vec<u8>>,
    sums: Vec<Vec<u8>>,
    signatures: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    stamps: Vec<Vec<u8>>,
    /// SBOMs and provenance files.
    supply: Vec<Vec<u8>>,
    /// verify's state files, the one `pull` keeps too.
    states: Vec<Vec<u8>>,
    /// `pull`'s records.
    records: Vec<Vec<u8>>,
    /// Every file of the builds and of known-answer/: material to splice in.
    all: Vec<Vec<u8>>,
}

/// Four real builds, so that every element and stamp field the readers
/// look for is in a seed: one with a next key, an expiry, a mirror and
/// enough releases for an archive; one with appliance feeds; one with cloud
/// images; one with SBOMs and provenance. And known-answer/.
fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let minimal = Fixture::new("ok-minimal");
        for i in 0..ARCHIVE_ITEMS {
            let dir = minimal.path(&format!("releases/webapp/0.{i}.0"));
            fs::create_dir_all(&dir).unwrap();
            let date = format!("2020-01-{:02}", i + 1);
            let release =
                format!("version = \"0.{i}.0\"\ndate = {date}\nnotes = \"Release {i}.\"\n");
            fs::write(dir.join("release.toml"), release).unwrap();
            fs::write(dir.join(format!("webapp-0.{i}.0.raw")), format!("0.{i}\n")).unwrap();
        }
        minimal.configure(
            "expires_after = \"30d\"\nnext_public_key = \"../known-answer/encrypted.pub\"\n\
             feed_items = 1\nmirrors = [\"https://mirror.example.net/site/\"]\n",
        );
        let multi = Fixture::new("ok-multi-appliance");
        let cloud = Fixture::new("cloud-only-release");
        let supply = Fixture::new("supply-chain");
        let mut files = Vec::new();
        for fixture in [&minimal, &multi, &cloud, &supply] {
            assert_success(&fixture.build(&[]));
            files.extend(files_in(&fixture.path("public")));
        }
        files.extend(files_in(&minimal.path("../known-answer")));
        let named = |suffix: &str| -> Vec<Vec<u8>> {
            files
                .iter()
                .filter(|(path, _)| path.to_string_lossy().ends_with(suffix))
                .map(|(_, data)| data.clone())
                .collect()
        };
        let mut sums = named("SHA256SUMS");
        // The build's names need no escapes; these need every one coreutils writes.
        let awkward = [
            "a b",
            "*star",
            "back\\slash",
            "new\nline",
            "carriage\rreturn",
            "é",
        ];
        sums.push(
            sums::manifest(
                awkward
                    .into_iter()
                    .map(|name| (name, Sha256::of(name.as_bytes()))),
            )
            .into_bytes(),
        );
        // A real state file, and one that remembers a chain of announced keys.
        let state = multi.path("state.json");
        let verified = multi.run(
            &[
                "verify",
                "public",
                "--pubkey",
                "../known-answer/kat.pub",
                "--state",
                state.to_str().unwrap(),
            ],
            &[],
        );
        assert_success(&verified);
        let states = vec![fs::read(&state).unwrap(), announcing_state()];
        let signatures = named(".minisig");
        let stamps = signatures
            .iter()
            .flat_map(|sig| {
                let text = String::from_utf8(sig.clone()).unwrap();
                text.lines()
                    .filter_map(|line| line.strip_prefix("trusted comment: "))
                    .map(|comment| comment.as_bytes().to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        let seeds = Seeds {
            feeds: named(".xml"),
            sums,
            signatures,
            keys: named(".pub"),
            stamps,
            supply: [named(".json"), named(".jsonl")].concat(),
            states,
            records: record_seeds(),
            all: files.into_iter().map(|(_, data)| data).collect(),
        };
        for (what, list) in [
            ("feed", &seeds.feeds),
            ("SHA256SUMS", &seeds.sums),
            ("signature", &seeds.signatures),
            ("public key", &seeds.keys),
            ("stamp", &seeds.stamps),
            ("supply-chain", &seeds.supply),
            ("state", &seeds.states),
            ("record", &seeds.records),
        ] {
            assert!(!list.is_empty(), "no {what} seed");
        }
        seeds
    })
}

/// A state file whose pinned key announced a key that announced a third.
fn announcing_state() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/known-answer");
    let key = |name: &str| {
        let path = dir.join(name);
        PublicKey::from_file(&path, &fs::read_to_string(&path).unwrap()).unwrap()
    };
    let (pinned, next) = (key("kat.pub"), key("encrypted.pub"));
    let entry = |id: &str, key: &PublicKey, sequence: u64, by: Option<&str>| {
        format!(
            "    \"{id}\": {{\n      \"public_key\": \"{}\",\n      \"highest_sequence\": \
             {sequence},\n      \"announced_by\": {}\n    }}",
            key.to_base64(),
            by.map_or("null".to_owned(), |b| format!("\"{b}\""))
        )
    };
    let (pinned_id, next_id) = (pinned.key_id.to_string(), next.key_id.to_string());
    let keys = [
        entry(&pinned_id, &pinned, 1790000000, None),
        entry(&next_id, &next, 0, Some(&pinned_id)),
        entry("0000000000000001", &next, 0, Some(&next_id)),
    ];
    format!(
        "{{\n  \"format\": \"vmcast-gen-verify-state-1\",\n  \"site\": \
         \"https://downloads.example.com/site/\",\n  \"keys\": {{\n{}\n  }}\n}}\n",
        keys.join(",\n")
    )
    .into_bytes()
}

/// Records as `pull` writes them (tests/it/pull.rs reads real ones): two
/// appliances' images, and one written before records kept the inode.
fn record_seeds() -> Vec<Vec<u8>> {
    let entry = |appliance: &str, version: &str, extra: &str| {
        format!(
            "    {{\n      \"appliance\": \"{appliance}\",\n      \"version\": \"{version}\",\n      \
             \"file\": \"{appliance}-{version}.qcow2\",\n      \"sha256\": \"{}\",\n      \
             \"size\": 300000,\n      \"mtime_ns\": 1790000000123456789{extra}\n    }}",
            Sha256::of(version.as_bytes())
        )
    };
    let record = |entries: &[String]| {
        format!(
            "{{\n  \"format\": \"vmcast-gen-pull-1\",\n  \"placed\": [\n{}\n  ]\n}}\n",
            entries.join(",\n")
        )
        .into_bytes()
    };
    vec![
        record(&[
            entry("webapp", "1.1.0", ",\n      \"inode\": 1311768"),
            entry("db", "2.0.0-rc.1", ",\n      \"inode\": 42"),
            entry("webapp", "1.2.0", ",\n      \"inode\": 1311770"),
        ]),
        record(&[entry("webapp", "1.0.0", "")]),
    ]
}

/// Every file under `dir`, with its bytes, in a stable order.
fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// A seed with one to four edits.
fn mutant(reader: &Reader, rng: &mut Rng) -> Vec<u8> {
    let mut data = reader.seeds[rng.below(reader.seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        edit(reader, rng, &mut data);
    }
    data
}

/// Numbers at and past the edges of the integer types and of chrono.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "+1",
    "00000000000000000000001",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "8210298412799",
    "-8334601228800",
    "1e9",
    "0x10",
    "",
];

fn edit(reader: &Reader, rng: &mut Rng, data: &mut Vec<u8>) {
    let at = rng.below(data.len() + 1);
    match rng.below(10) {
        0 => {
            if let Some(byte) = data.get_mut(at) {
                *byte ^= 1 << rng.below(8);
            }
        }
        1 => data.insert(at, rng.next() as u8),
        2 => {
            let end = data.len().min(at + 1 + rng.below(16));
            data.drain(at..end);
        }
        3 => data.truncate(at),
        4 => {
            let all = &seeds().all;
            let other = &all[rng.below(all.len())];
            let from = rng.below(other.len() + 1);
            let to = from + rng.below(other.len() - from + 1).min(256);
            data.splice(at..at, other[from..to].iter().copied());
        }
        5 => duplicate_line(rng, data),
        6 => huge_number(rng, data, at),
        7 => {
            let tokens: Vec<&[u8]> = reader.tokens.split(|&b| b == b'|').collect();
            data.splice(at..at, tokens[rng.below(tokens.len())].iter().copied());
        }
        8 => {
            let (open, close) = reader.nests[rng.below(reader.nests.len())];
            let depth = [2, 40, 1_000, 10_000][rng.below(4)];
            // After a tag, where nesting is well-formed; unclosed a quarter of the time.
            let at = data[at..]
                .iter()
                .position(|&b| b == b'>')
                .map_or(at, |i| at + i + 1);
            let mut nest = open.repeat(depth);
            if rng.below(4) != 0 {
                nest.extend(close.repeat(depth));
            }
            data.splice(at..at, nest);
        }
        _ => mutate_base64_line(rng, data),
    }
}

/// Repeats one line (once, or a hundred times) right after itself.
fn duplicate_line(rng: &mut Rng, data: &mut Vec<u8>) {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            data.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let line = rng.below(starts.len());
    let (start, end) = (
        starts[line],
        starts.get(line + 1).copied().unwrap_or(data.len()),
    );
    let mut copy = data[start..end].to_vec();
    if copy.last() != Some(&b'\n') {
        copy.insert(0, b'\n');
    }
    let times = if rng.below(8) == 0 { 100 } else { 1 };
    data.splice(end..end, copy.repeat(times));
}

/// Replaces the first number at or after `at` with an edge value or a
/// 300-digit one; inserts one where there is none.
fn huge_number(rng: &mut Rng, data: &mut Vec<u8>, at: usize) {
    let number = match rng.below(NUMBERS.len() + 1) {
        i if i < NUMBERS.len() => NUMBERS[i].as_bytes().to_vec(),
        _ => vec![b'9'; 300],
    };
    let digit = |b: &u8| b.is_ascii_digit();
    let (start, end) = match data[at..].iter().position(digit) {
        Some(i) => {
            let start = at + i;
            let len = data[start..].iter().take_while(|b| digit(b)).count();
            (start, start + len)
        }
        None => (at, at),
    };
    data.splice(start..end, number);
}

/// Decodes a base64 line, edits its bytes (so the key id, algorithm and
/// Ed25519 points change while the base64 stays valid) and encodes it back.
fn mutate_base64_line(rng: &mut Rng, data: &mut Vec<u8>) {
    let lines: Vec<(usize, usize)> = data
        .split(|&b| b == b'\n')
        .scan(0, |start, line| {
            let span = (*start, *start + line.len());
            *start += line.len() + 1;
            Some(span)
        })
        .filter(|&(start, end)| base64_decode(&data[start..end]).is_some())
        .collect();
    if lines.is_empty() {
        return;
    }
    let (start, end) = lines[rng.below(lines.len())];
    let mut bytes = base64_decode(&data[start..end]).expect("filtered above");
    let at = rng.below(bytes.len());
    match rng.below(5) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => bytes[at] = 0,
        2 => bytes[at] = 0xff,
        3 => bytes.truncate(at),
        _ => bytes.insert(at, rng.next() as u8),
    }
    data.splice(start..end, base64_encode(&bytes));
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                BASE64[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    out
}

/// Some(bytes) for a padded, non-empty standard base64 line.
fn base64_decode(line: &[u8]) -> Option<Vec<u8>> {
    if line.is_empty() || !line.len().is_multiple_of(4) {
        return None;
    }
    let body = line
        .strip_suffix(b"==")
        .or(line.strip_suffix(b"="))
        .unwrap_or(line);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for &c in body {
        bits = bits << 6 | BASE64.iter().position(|&d| d == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// xorshift64, seeded per reader and mutant through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(reader: &str, n: usize) -> Self {
        let name = reader.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut z = (name ^ n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..n`, for `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
