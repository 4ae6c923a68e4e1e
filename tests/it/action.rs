//! The GitHub Action (action.yml) and its script, ci/vmcast-release.sh,
//! run here as a runner would run them: the script against moto's S3
//! server for a first release and then for a release from a stateless
//! runner, and action.yml read to check it declares and passes every
//! input the script reads, so the two cannot drift apart.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{Fixture, assert_success, stderr, stdout};
use crate::publish::{moto, site};

tests! {
    the_action_script_releases_first_then_from_a_stateless_runner needs MOTO;
    the_action_script_names_a_missing_secret_before_building;
    action_yml_declares_and_passes_every_input_the_script_reads;
}

const SCRIPT: &str = "ci/vmcast-release.sh";

/// What the script reads that is a secret, not an input of the action.
const SECRETS: [&str; 3] = [
    "VMCAST_SECRET_KEY",
    "VMCAST_KEY_PASSWORD",
    "VMCAST_PKCS11_PIN",
];

fn repo_file(rel: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// The fixture as a CI checkout: the key comes from VMCAST_SECRET_KEY, not
/// the config, and the public key to pin sits beside vmcast.toml.
fn checkout(fixture: &Fixture) -> String {
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("secret_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    fs::copy(
        fixture.path("../known-answer/kat.pub"),
        fixture.path("vmcast.pub"),
    )
    .unwrap();
    fs::read_to_string(fixture.path("../known-answer/kat.key")).unwrap()
}

/// Runs the script in the fixture with only `env` of the VMCAST_*, AWS_*
/// and GitHub variables it reads, and the test binary first on PATH.
fn release(fixture: &Fixture, env: &[(&str, &str)]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT))
        .current_dir(&fixture.root)
        .env("PATH", path)
        .env(
            "VMCAST_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmcast-cache"),
        );
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("VMCAST_")
            || name.starts_with("AWS_")
            || ["SOURCE_DATE_EPOCH", "GITHUB_OUTPUT"].contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A first release published to moto and verified there; then a runner
/// that holds only a new release's images builds on the published site
/// over HTTP, publishes without uploading an old image, and verifies all
/// three releases; and a verify URL serving an older build fails the run.
fn the_action_script_releases_first_then_from_a_stateless_runner() {
    let bucket = "action";
    let moto = moto(bucket);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let url = format!("{endpoint}/{bucket}/site/");
    let target = format!("s3://{bucket}/site");
    let common = [
        ("VMCAST_PUBLISH", target.as_str()),
        ("VMCAST_ENDPOINT_URL", endpoint.as_str()),
        ("VMCAST_ACL", "public-read"),
        ("VMCAST_VERIFY_URL", url.as_str()),
    ];
    let common = [&common[..], &crate::publish::AWS[..]].concat();

    let first = site(moto.port, bucket);
    let key = checkout(&first);
    let outputs = first.tmp.path().join("github-output");
    let outputs_env = outputs.to_str().unwrap();
    let env = [
        &common[..],
        &[
            ("VMCAST_SECRET_KEY", key.as_str()),
            ("SOURCE_DATE_EPOCH", "1790000000"),
            ("GITHUB_OUTPUT", outputs_env),
        ],
    ]
    .concat();
    let out = release(&first, &env);
    assert_success(&out);
    // The action's `sequence` output.
    assert_eq!(
        fs::read_to_string(&outputs).unwrap(),
        "sequence=1790000000\n"
    );
    let text = stdout(&out);
    for step in [
        "==> build (no previous site",
        "==> publish to s3://action/site",
        &format!("==> verify {url}"),
        "verified: 2 release(s), 2 image(s)",
        "==> done",
    ] {
        assert!(text.contains(step), "{step:?} missing from\n{text}");
    }

    // The runner: a fresh checkout, the new release's images only.
    let runner = site(moto.port, bucket);
    checkout(&runner);
    for v in ["1.0.0", "1.1.0"] {
        fs::remove_file(runner.path(&format!("releases/webapp/{v}/webapp-{v}.raw"))).unwrap();
    }
    let dir = runner.path("releases/webapp/1.2.0");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("release.toml"),
        "version = \"1.2.0\"\ndate = 2026-06-01\nnotes = \"New.\"\n",
    )
    .unwrap();
    fs::write(dir.join("webapp-1.2.0.raw"), vec![7u8; 5000]).unwrap();
    let before = moto.requests().len();
    let env = [
        &common[..],
        &[
            ("VMCAST_SECRET_KEY", key.as_str()),
            ("VMCAST_PREVIOUS", url.as_str()),
        ],
    ]
    .concat();
    let out = release(&runner, &env);
    assert_success(&out);
    let text = stdout(&out);
    for step in [
        &format!("==> build on the published site {url}"),
        &format!("--previous {url}"),
        "2 release(s), 2 image(s), 804 B taken from it unread",
        "==> publish to s3://action/site",
        &format!("==> verify {url}"),
        "verified: 3 release(s), 3 image(s)",
        "==> done",
    ] {
        assert!(text.contains(step), "{step:?} missing from\n{text}");
    }
    // Build and publish neither read nor upload an old image; verify reads
    // each once, checking its bytes.
    let during = &moto.requests()[before..];
    for v in ["1.0.0", "1.1.0"] {
        let image = format!("/images/webapp/{v}/webapp-{v}.raw ");
        let count = |method: &str| {
            during
                .iter()
                .filter(|r| r.starts_with(method) && r.contains(&image))
                .count()
        };
        assert_eq!((count("GET "), count("PUT ")), (1, 0), "{v}: {during:?}");
    }

    // A verify URL that still serves an older build (a cache in front of
    // the bucket would): the release fails, saying so.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let later = later.to_string();
    let env = [
        &common[..],
        &[
            ("VMCAST_SECRET_KEY", key.as_str()),
            ("VMCAST_PREVIOUS", url.as_str()),
            ("VMCAST_PUBLISH", "s3://action/staging"),
            ("SOURCE_DATE_EPOCH", later.as_str()),
        ],
    ]
    .concat();
    let out = release(&runner, &env);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "vmcast-release: error: {url} does not serve this build (sequence {later})"
        )),
        "{}",
        stderr(&out)
    );
}

/// A secret the CI did not pass fails the script before anything runs, and
/// the error names it.
fn the_action_script_names_a_missing_secret_before_building() {
    let fixture = Fixture::new("ok-minimal");
    let key = checkout(&fixture);
    for (env, secret) in [
        (
            vec![("VMCAST_SECRET_KEY", "")],
            "VMCAST_SECRET_KEY is not set",
        ),
        (
            vec![
                ("VMCAST_SECRET_KEY", key.as_str()),
                ("VMCAST_PUBLISH", "s3://bucket/site"),
                ("AWS_ACCESS_KEY_ID", "id"),
                ("AWS_SECRET_ACCESS_KEY", ""),
            ],
            "AWS_SECRET_ACCESS_KEY is not set",
        ),
        (
            vec![
                ("VMCAST_SECRET_KEY", key.as_str()),
                ("VMCAST_PREVIOUS", "s3://bucket/site"),
            ],
            "AWS_ACCESS_KEY_ID is not set",
        ),
    ] {
        let out = release(&fixture, &env);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", stdout(&out));
        assert!(
            stderr(&out).starts_with(&format!("vmcast-release: error: {secret}")),
            "{}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "ran something before failing");
        assert!(!fixture.path("public").exists(), "built before failing");
    }
}

/// Every `VMCAST_*` variable the script reads is an input of the action,
/// passed to the script's env as `VMCAST_X: ${{ inputs.x }}`, and every
/// input of the action is used.
fn action_yml_declares_and_passes_every_input_the_script_reads() {
    let script = repo_file(SCRIPT);
    let action = repo_file("action.yml");

    let mut read = BTreeSet::new();
    for (at, _) in script.match_indices("${VMCAST_") {
        let name: String = script[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !SECRETS.contains(&name.as_str()) {
            read.insert(name);
        }
    }
    assert!(read.len() >= 6, "the script reads only {read:?}");

    // Inputs: the keys two spaces in under `inputs:`, up to the next
    // top-level key.
    let section = action
        .split_once("\ninputs:\n")
        .expect("action.yml has inputs")
        .1;
    let inputs: BTreeSet<String> = section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.strip_suffix(':'))
        .map(str::to_owned)
        .collect();
    assert!(inputs.contains("config"), "{inputs:?}");

    // The script's env: `VMCAST_X: ${{ inputs.x }}` lines.
    let mut passed = BTreeSet::new();
    for line in action.lines().map(str::trim) {
        let Some((var, value)) = line.split_once(": ") else {
            continue;
        };
        if let Some(input) = value
            .strip_prefix("${{ inputs.")
            .and_then(|v| v.strip_suffix(" }}"))
            && var.starts_with("VMCAST_")
        {
            assert!(
                inputs.contains(input),
                "{var} passes undeclared input {input}"
            );
            passed.insert(var.to_owned());
        }
    }
    assert_eq!(
        read, passed,
        "the VMCAST_* variables the script reads and the ones action.yml passes differ"
    );
    assert!(action.contains("run: bash \"$GITHUB_ACTION_PATH/ci/vmcast-release.sh\""));
    for input in &inputs {
        assert!(
            action.contains(&format!("${{{{ inputs.{input} }}}}")),
            "input {input} is declared but never used"
        );
    }
    for secret in SECRETS {
        assert!(
            action.contains(secret),
            "the action's description does not name {secret}"
        );
    }
}
