//! The README, held to the tool: the "Your own site" walkthrough, run as
//! written: its commands (the `$ ` lines of its `console` blocks) and its
//! files (the blocks after `<!-- walkthrough-file: PATH -->`) in an empty
//! directory, in one shell, in order. Each command must succeed and print
//! what the README shows, apart from times, rates, key ids, public keys
//! and the build's sequence. The Quick start's build of the example site
//! must print its output block, and the list of test modules must name
//! every module of tests/it once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::assert_success;

tests! {
    the_readme_walkthrough_runs_as_written;
    the_quick_start_prints_what_the_readme_shows;
    the_readme_lists_every_test_module_once;
    the_comparison_can_fail;
}

enum Step {
    /// A shell command and the output the README shows for it.
    Run { command: String, expected: String },
    /// A file the reader writes.
    Write { path: String, text: String },
}

/// The walkthrough's steps, in order.
fn steps(readme: &str) -> Vec<Step> {
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("README.md has a <!-- walkthrough --> marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("README.md has a <!-- /walkthrough --> marker");
    let mut lines = readme[start..end].lines();
    let mut steps = Vec::new();
    let mut file: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(path) = line
            .strip_prefix("<!-- walkthrough-file: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            file = Some(path.to_owned());
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        if let Some(path) = file.take() {
            steps.push(Step::Write {
                path,
                text: block.iter().map(|l| format!("{l}\n")).collect(),
            });
        } else if lang == "console" {
            for line in block {
                match line.strip_prefix("$ ") {
                    Some(command) => steps.push(Step::Run {
                        command: command.to_owned(),
                        expected: String::new(),
                    }),
                    None => match steps.last_mut() {
                        Some(Step::Run { expected, .. }) => {
                            expected.push_str(line);
                            expected.push('\n');
                        }
                        _ => panic!("output before any command: {line:?}"),
                    },
                }
            }
        }
    }
    steps
}

/// Replaces what differs from run to run: elapsed times, rates, key ids,
/// public keys and sequence numbers.
fn normalize(text: &str) -> String {
    text.split_inclusive(['\n', ' ', ',', ';', ':', '(', ')'])
        .map(|token| {
            let (word, tail) = token.split_at(
                token
                    .trim_end_matches(['\n', ' ', ',', ';', ':', '(', ')'])
                    .len(),
            );
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let normal = if word.len() == 16
                && word
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                && word.chars().any(|c| c.is_ascii_digit())
            {
                "<key id>"
            } else if word.len() == 56 && word.starts_with("RW") {
                "<public key>"
            } else if word.ends_with('s')
                && word[..word.len() - 1]
                    .split_once('.')
                    .is_some_and(|(a, b)| digits(a) && digits(b))
            {
                "<time>"
            } else if word
                .split_once('.')
                .is_some_and(|(a, b)| digits(a) && digits(b))
                && tail.starts_with(' ')
                && text.contains(&format!("{word} GB/s"))
            {
                "<rate>"
            } else if word.len() == 10 && digits(word) {
                "<sequence>"
            } else {
                word
            };
            format!("{normal}{tail}")
        })
        .collect()
}

fn the_readme_walkthrough_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 8, "too few steps found: {}", steps.len());

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let outputs = tmp.path().join("outputs");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&outputs).unwrap();
    let mut script = String::from("set -u\n");
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Run { command, .. } => script.push_str(&format!(
                "{{ {command}\n}} >'{out}/{i}' 2>&1; echo $? >'{out}/{i}.rc'\n",
                out = outputs.display()
            )),
            Step::Write { path, text } => script.push_str(&format!(
                "cat >'{path}' <<'WALKTHROUGH_EOF'\n{text}WALKTHROUGH_EOF\n"
            )),
        }
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("HOME", tmp.path())
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env_remove("VMCAST_SECRET_KEY")
        .env_remove("VMCAST_KEY_PASSWORD")
        .env_remove("VMCAST_CACHE_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert_success(&out);
    for (i, step) in steps.iter().enumerate() {
        let Step::Run { command, expected } = step else {
            continue;
        };
        let got = fs::read_to_string(outputs.join(i.to_string())).unwrap();
        let rc = fs::read_to_string(outputs.join(format!("{i}.rc"))).unwrap();
        assert_eq!(rc.trim(), "0", "`{command}` failed:\n{got}");
        assert_eq!(
            normalize(&got),
            normalize(expected),
            "`{command}` printed something other than README.md shows"
        );
    }
}

/// The Quick start builds the example site from a fresh clone with the
/// repository's vmcast.toml: run in a copy of it (its key with the mode a
/// checkout gives, 0644, and an empty hash cache), the build prints the
/// README's output block, catalogs and all.
fn the_quick_start_prints_what_the_readme_shows() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Quick start\n")
        .unwrap()
        .1
        .split("\n## ")
        .next()
        .unwrap();
    // The first block whose fence names no language.
    let mut lines = section.lines();
    let mut expected = None;
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let block: String = lines
                .by_ref()
                .take_while(|l| *l != "```")
                .map(|l| format!("{l}\n"))
                .collect();
            if lang.is_empty() {
                expected = Some(block);
                break;
            }
        }
    }
    let expected = expected.expect("the Quick start shows the build's output in a plain block");

    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    crate::common::copy_tree(&repo.join("example-site"), &clone.join("example-site"));
    for built in ["public", ".public.spare", ".public.lock"] {
        let _ = fs::remove_dir_all(clone.join("example-site").join(built));
    }
    fs::copy(repo.join("vmcast.toml"), clone.join("vmcast.toml")).unwrap();
    let key = clone.join("example-site/keys/TEST-ONLY-DO-NOT-USE.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = crate::common::vmcast_command(&clone, &[])
        .arg("build")
        .env("VMCAST_CACHE_DIR", tmp.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert_success(&out);
    let got =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        normalize(&got),
        normalize(&expected),
        "the Quick start's build printed something other than README.md shows"
    );
}

/// The README says what each module of tests/it checks: every module is
/// there, once.
fn the_readme_lists_every_test_module_once() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let list = readme
        .split_once("with a module per\narea:\n")
        .expect("the README's list of test modules")
        .1
        .trim_start()
        .split("\n\n")
        .next()
        .unwrap();
    // The names each entry starts with: "- `a`, `b`: what they check".
    let mut listed: Vec<String> = Vec::new();
    for entry in list.split("\n- ") {
        let names = entry.trim_start_matches("- ").split_once(':').unwrap().0;
        listed.extend(names.split(", ").map(|n| n.trim_matches('`').to_owned()));
    }
    let mut modules: Vec<String> = fs::read_dir(repo.join("tests/it"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .filter(|n| !["main", "common"].contains(&n.as_str()))
        .collect();
    modules.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, modules, "the README lists {listed:?}");
}

fn the_comparison_can_fail() {
    let readme = "<!-- walkthrough -->\n```console\n$ echo a 1.5s\na 2.0s\n$ true\n```\n\
                  <!-- walkthrough-file: x.toml -->\n```toml\nk = 1\n```\n<!-- /walkthrough -->\n";
    let steps = steps(readme);
    assert_eq!(steps.len(), 3);
    assert!(
        matches!(&steps[2], Step::Write { path, text } if path == "x.toml" && text == "k = 1\n")
    );
    assert_eq!(normalize("a 1.5s\n"), normalize("a 2.0s\n"));
    assert_ne!(normalize("a 1.5s\n"), normalize("b 1.5s\n"));
    assert_ne!(
        normalize("Built public: 1 image(s)\n"),
        normalize("Built public: 2 image(s)\n")
    );
}
