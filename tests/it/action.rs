//! The GitHub Action (action.yml) and its scripts, ci/vmcast-install.sh and
//! ci/vmcast-release.sh, run here as a runner would run them: the release
//! script against moto's S3 server for a first release and then for a
//! release from a stateless runner; the action's steps themselves, from
//! action.yml, in order, with a stub `cargo` that records how the binary
//! would be built (compiling vmcast-gen in a test would take minutes) and
//! puts the test's binary in its place; and action.yml read to check it
//! declares and passes every input the scripts read, so they cannot
//! drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Fixture, assert_success, release_script, stderr, stdout};
use crate::publish::{moto, site};

tests! {
    the_action_script_releases_first_then_from_a_stateless_runner needs MOTO;
    the_action_script_names_a_missing_secret_before_building;
    action_yml_declares_and_passes_every_input_the_script_reads;
    the_actions_steps_install_the_pinned_build_then_release;
    every_install_in_the_examples_is_pinned;
}

const SCRIPT: &str = "ci/vmcast-release.sh";
const INSTALL: &str = "ci/vmcast-install.sh";

/// What the install script reads that other CIs set, not the action.
const NOT_INPUTS: [&str; 1] = ["VMCAST_INSTALL_ROOT"];

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
    let out = release_script(&first, &env);
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
    let out = release_script(&runner, &env);
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
    let out = release_script(&runner, &env);
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
        let out = release_script(&fixture, &env);
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

/// Every `VMCAST_*` variable the scripts read is an input of the action,
/// passed to the script's env as `VMCAST_X: ${{ inputs.x }}`, and every
/// input of the action is used.
fn action_yml_declares_and_passes_every_input_the_script_reads() {
    let script = repo_file(SCRIPT) + &repo_file(INSTALL);
    let action = repo_file("action.yml");

    let mut read = BTreeSet::new();
    for (at, _) in script.match_indices("${VMCAST_") {
        let name: String = script[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !SECRETS.contains(&name.as_str()) && !NOT_INPUTS.contains(&name.as_str()) {
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
    assert!(action.contains("run: bash \"$GITHUB_ACTION_PATH/ci/vmcast-install.sh\" install"));
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

/// One step of a composite action, as action.yml writes it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    name: String,
    id: Option<String>,
    uses: Option<String>,
    with: Vec<(String, String)>,
    env: Vec<(String, String)>,
    run: Option<String>,
}

/// The steps under `runs: steps:` of an action.yml, in order.
fn steps(action: &str) -> Vec<Step> {
    let body = action.split_once("\n  steps:\n").expect("runs.steps").1;
    let mut steps: Vec<Step> = Vec::new();
    let mut map: Option<&str> = None;
    let mut block = false;
    for line in body.lines() {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent < 4 {
            break;
        }
        if let Some(first) = line.strip_prefix("    - ") {
            steps.push(Step {
                name: String::new(),
                id: None,
                uses: None,
                with: Vec::new(),
                env: Vec::new(),
                run: None,
            });
            (map, block) = (None, false);
            field(steps.last_mut().unwrap(), first, &mut map, &mut block);
            continue;
        }
        let step = steps.last_mut().expect("a step");
        if block && (indent >= 8 || line.trim().is_empty()) {
            let run = step.run.get_or_insert_with(String::new);
            run.push_str(line.get(8..).unwrap_or_default());
            run.push('\n');
        } else if indent >= 8 {
            let (k, v) = line.trim().split_once(": ").expect("key: value");
            let entry = (k.to_owned(), v.to_owned());
            match map {
                Some("env") => step.env.push(entry),
                Some("with") => step.with.push(entry),
                other => panic!("{line:?} under {other:?}"),
            }
        } else if indent == 6 {
            (map, block) = (None, false);
            field(step, line.trim(), &mut map, &mut block);
        }
    }
    steps
}

fn field<'a>(step: &mut Step, line: &'a str, map: &mut Option<&'a str>, block: &mut bool) {
    let (key, value) = line.split_once(':').expect("key: value");
    let value = value.trim().to_owned();
    match key {
        "name" => step.name = value,
        "id" => step.id = Some(value),
        "uses" => step.uses = Some(value),
        "shell" => assert_eq!(value, "bash"),
        "env" | "with" => *map = Some(key),
        "run" if value == "|" => *block = true,
        "run" => step.run = Some(value + "\n"),
        other => panic!("a step's {other}: not read here"),
    }
}

/// The inputs of an action.yml with their defaults.
fn input_defaults(action: &str) -> BTreeMap<String, String> {
    let section = action.split_once("\ninputs:\n").unwrap().1;
    let mut defaults = BTreeMap::new();
    let mut input = None;
    for line in section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
    {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            input = Some(name.to_owned());
        } else if let Some(value) = line.strip_prefix("    default: ") {
            let value = value.trim_matches('"').to_owned();
            defaults.insert(input.clone().unwrap(), value);
        }
    }
    defaults
}

/// `${{ inputs.x }}` and `${{ steps.id.outputs.x }}` in `text`, replaced
/// by their values.
fn expand(
    text: &str,
    inputs: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("${{ ") {
        let (expression, tail) = after.split_once(" }}").expect("a closed expression");
        let value = match expression.strip_prefix("inputs.") {
            Some(input) => inputs.get(input),
            None => outputs.get(expression),
        };
        out.push_str(before);
        out.push_str(value.unwrap_or_else(|| panic!("{expression} is not set")));
        rest = tail;
    }
    out + rest
}

/// A job that runs an action's steps as the GitHub runner does: each `run`
/// with `bash --noprofile --norc -eo pipefail`, its env and the job's, a
/// GITHUB_OUTPUT of its own (read back as `steps.<id>.outputs`), and
/// GITHUB_PATH, whose lines go before PATH for the steps that follow.
/// `uses` steps are recorded, their inputs expanded, and not run.
struct Job<'a> {
    action: &'a Path,
    workspace: &'a Path,
    home: &'a Path,
    /// Where the stub cargo (and a decoy vmcast-gen) are.
    stubs: &'a Path,
    env: Vec<(&'a str, String)>,
}

/// What a job did.
struct Ran {
    /// Each run step's name and stdout.
    stdout: Vec<(String, String)>,
    outputs: BTreeMap<String, String>,
    /// The `uses` steps, with their inputs expanded.
    used: Vec<(String, Vec<(String, String)>)>,
}

impl Job<'_> {
    fn run(&self, file: &str, inputs: &[(&str, &str)]) -> Ran {
        let action = fs::read_to_string(self.action.join(file)).unwrap();
        let mut values = input_defaults(&action);
        for (k, v) in inputs {
            assert!(values.contains_key(*k), "no input {k}");
            values.insert((*k).to_owned(), (*v).to_owned());
        }
        let tmp = tempfile::tempdir().unwrap();
        let github_path = tmp.path().join("github-path");
        fs::write(&github_path, "").unwrap();
        let mut ran = Ran {
            stdout: Vec::new(),
            outputs: BTreeMap::new(),
            used: Vec::new(),
        };
        for (i, step) in steps(&action).into_iter().enumerate() {
            if let Some(uses) = &step.uses {
                let with = step
                    .with
                    .iter()
                    .map(|(k, v)| (k.clone(), expand(v, &values, &ran.outputs)))
                    .collect();
                ran.used.push((uses.clone(), with));
                continue;
            }
            let script = tmp.path().join(format!("step-{i}.sh"));
            fs::write(&script, step.run.as_deref().unwrap()).unwrap();
            let output = tmp.path().join(format!("output-{i}"));
            fs::write(&output, "").unwrap();
            let added: Vec<PathBuf> = fs::read_to_string(&github_path)
                .unwrap()
                .lines()
                .rev()
                .map(PathBuf::from)
                .collect();
            let path = std::env::join_paths(
                added
                    .into_iter()
                    .chain([self.stubs.to_path_buf()])
                    .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
            )
            .unwrap();
            let mut cmd = Command::new("bash");
            cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&script)
                .current_dir(self.workspace)
                .env("PATH", path)
                .env("HOME", self.home)
                .env(
                    "GITHUB_ACTION_PATH",
                    self.action.join(file).parent().unwrap(),
                )
                .env("GITHUB_OUTPUT", &output)
                .env("GITHUB_PATH", &github_path)
                .env("RUNNER_OS", "Linux")
                .env("RUNNER_TEMP", tmp.path());
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("VMCAST_")
                    || name.starts_with("AWS_")
                    || name == "CARGO_TARGET_DIR"
                {
                    cmd.env_remove(&*name);
                }
            }
            cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
            for (k, v) in &step.env {
                cmd.env(k, expand(v, &values, &ran.outputs));
            }
            let out = cmd.output().unwrap();
            assert_success(&out);
            if let Some(id) = &step.id {
                for line in fs::read_to_string(&output).unwrap().lines() {
                    let (k, v) = line.split_once('=').unwrap();
                    ran.outputs
                        .insert(format!("steps.{id}.outputs.{k}"), v.to_owned());
                }
            }
            ran.stdout.push((step.name.clone(), stdout(&out)));
        }
        ran
    }
}

/// The action's steps run in order, as a runner runs them, in a checkout
/// of the fixture site. The install step builds the binary from the
/// action's own checkout (the commit `uses:` pins), with its Cargo.lock,
/// cached by the sources it builds: a stub cargo records the command and
/// puts the test's binary where cargo would, and the release step then
/// runs that binary, not another vmcast-gen on PATH. The same sources
/// again build nothing; changed sources give another cache key and a new
/// build; `version` installs from crates.io instead, explicitly. The
/// install action other jobs use has the same steps.
fn the_actions_steps_install_the_pinned_build_then_release() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    // The action as the runner downloads it: its files at the pinned commit.
    let action = tmp.path().join("action");
    for dir in ["ci", "install", "src", "templates"] {
        crate::common::copy_tree(&repo.join(dir), &action.join(dir));
    }
    for file in ["action.yml", "Cargo.toml", "Cargo.lock"] {
        fs::copy(repo.join(file), action.join(file)).unwrap();
    }
    let stubs = tmp.path().join("stubs");
    fs::create_dir_all(&stubs).unwrap();
    let cargo_log = tmp.path().join("cargo.log");
    let stub = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::write(stubs.join(name), text).unwrap();
        fs::set_permissions(stubs.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    };
    stub(
        "cargo",
        &format!(
            "#!/bin/sh\n\
             printf '%s | CARGO_TARGET_DIR=%s\\n' \"$*\" \"${{CARGO_TARGET_DIR:-}}\" >>'{log}'\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --root ] && root=$2; shift; done\n\
             mkdir -p \"$root/bin\" && ln -sf '{bin}' \"$root/bin/vmcast-gen\"\n",
            log = cargo_log.display(),
            bin = env!("CARGO_BIN_EXE_vmcast-gen"),
        ),
    );
    stub(
        "vmcast-gen",
        "#!/bin/sh\necho 'not the pinned vmcast-gen' >&2\nexit 97\n",
    );

    let site = Fixture::new("ok-minimal");
    let key = checkout(&site);
    let home = tmp.path().join("home");
    let job = Job {
        action: &action,
        workspace: &site.root,
        home: &home,
        stubs: &stubs,
        env: vec![
            ("VMCAST_SECRET_KEY", key),
            ("SOURCE_DATE_EPOCH", "1790000000".to_owned()),
        ],
    };
    let root = home.join(".cache/vmcast-gen-install");
    let cargo_calls = || fs::read_to_string(&cargo_log).unwrap_or_default();

    let first = job.run("action.yml", &[]);
    assert_eq!(
        cargo_calls(),
        format!(
            "install --locked --path {} --root {} --force | CARGO_TARGET_DIR={}/target\n",
            action.display(),
            root.display(),
            root.display()
        )
    );
    let (cache, with) = &first.used[0];
    assert_eq!(cache, "actions/cache@v4");
    let with: BTreeMap<_, _> = with.iter().cloned().collect();
    assert_eq!(with["path"], root.display().to_string());
    let key_of = |ran: &Ran| ran.outputs["steps.vmcast-install.outputs.key"].clone();
    let restore = with["restore-keys"].clone();
    assert!(
        restore.starts_with("vmcast-gen-Linux-") && restore.ends_with('-'),
        "{restore}"
    );
    assert!(
        key_of(&first).starts_with(&format!("{restore}source-")),
        "{with:?}"
    );
    let release = &first.stdout.last().unwrap().1;
    for line in [
        &format!(
            "vmcast-release: vmcast-gen {}, config vmcast.toml",
            env!("CARGO_PKG_VERSION")
        ),
        "==> build (no previous site",
        "==> done",
    ] {
        assert!(release.contains(line), "{line:?} missing from\n{release}");
    }
    assert_eq!(
        first.outputs["steps.release.outputs.sequence"],
        "1790000000"
    );
    assert!(site.path("public/feed.xml").is_file());

    // The cache restored: nothing is built.
    let again = job.run("action.yml", &[]);
    assert_eq!(key_of(&again), key_of(&first));
    assert_eq!(cargo_calls().lines().count(), 1, "{}", cargo_calls());
    assert!(again.stdout[1].1.contains("is in"), "{}", again.stdout[1].1);

    // Another commit of the action: another key, the same restore key
    // (its dependencies compiled already), and a build.
    let main = action.join("src/main.rs");
    let text = fs::read_to_string(&main).unwrap();
    fs::write(&main, text + "// another commit\n").unwrap();
    let changed = job.run("action.yml", &[]);
    assert_ne!(key_of(&changed), key_of(&first));
    assert_eq!(
        changed.outputs["steps.vmcast-install.outputs.restore-keys"],
        restore
    );
    assert_eq!(cargo_calls().lines().count(), 2, "{}", cargo_calls());

    // A version from crates.io, asked for.
    let crates = job.run("action.yml", &[("version", "0.1.0")]);
    assert!(
        key_of(&crates).ends_with("-crates.io-0.1.0"),
        "{}",
        key_of(&crates)
    );
    assert_eq!(
        cargo_calls().lines().nth(2).unwrap(),
        format!(
            "install --locked vmcast-gen --version 0.1.0 --root {} --force | CARGO_TARGET_DIR=",
            root.display()
        )
    );

    // The install action other jobs use: the same steps, from its folder.
    let install = fs::read_to_string(action.join("install/action.yml")).unwrap();
    let main_steps = steps(&fs::read_to_string(action.join("action.yml")).unwrap());
    let install_steps: Vec<Step> = steps(&install)
        .into_iter()
        .map(|mut step| {
            step.run = step.run.map(|r| r.replace("/../ci/", "/ci/"));
            step
        })
        .collect();
    assert_eq!(install_steps[..], main_steps[..3]);
    assert_eq!(input_defaults(&install)["version"], "");
    fs::remove_dir_all(&root).unwrap();
    let installed = job.run("install/action.yml", &[]);
    assert_eq!(key_of(&installed), key_of(&changed));
    assert_eq!(cargo_calls().lines().count(), 4, "{}", cargo_calls());
}

/// No example, script or doc installs vmcast-gen from crates.io unpinned
/// (it is not there yet, and a registry version would not be the one the
/// workflow pins): each `cargo install` builds a checkout (`--path`) or a
/// tag of the repository (`--git ... --tag`) with its Cargo.lock, or is the
/// install script's opt-in `--version`. And each GitHub workflow installs
/// with the install action at the pin of its release step.
fn every_install_in_the_examples_is_pinned() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![repo.join("README.md"), repo.join("action.yml")];
    for dir in ["examples", "ci", "docs"] {
        for entry in fs::read_dir(repo.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    let mut installs = 0;
    for file in files.iter().filter(|f| f.is_file()) {
        let text = fs::read_to_string(file).unwrap();
        for line in text.lines().filter(|l| l.contains("cargo install ")) {
            let command = &line[line.find("cargo install ").unwrap()..];
            if !command.contains(" vmcast-gen") && !command.contains("--path") {
                continue;
            }
            installs += 1;
            assert!(
                command.contains("--locked"),
                "{}: {line:?} ignores Cargo.lock",
                file.display()
            );
            let pinned = command.contains("--path")
                || command.contains("--git ") && command.contains("--tag ")
                || command.contains("--version \"$version\"");
            assert!(pinned, "{}: {line:?} is not pinned", file.display());
        }
    }
    assert!(installs >= 5, "{installs} installs found");
    for workflow in ["github-actions-pages.yml", "github-actions-s3.yml"] {
        let text = fs::read_to_string(repo.join("examples").join(workflow)).unwrap();
        let pins: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| {
                l.trim()
                    .trim_start_matches("- ")
                    .strip_prefix("uses: vmcast-gen/vmcast-gen")
            })
            .map(|rest| {
                rest.split_once('@')
                    .unwrap()
                    .1
                    .split_whitespace()
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(pins.len(), 1, "{workflow}: {pins:?}");
        assert!(
            text.contains("uses: vmcast-gen/vmcast-gen/install@"),
            "{workflow}"
        );
    }
}
