//! The integration tests, as one test binary (as cargo and ripgrep do): one
//! compile and one link of the shared harness instead of one per file.
//! Each module runs the real `vmcast-gen` binary on fixture sites copied
//! to a temporary directory, or checks its output with outside tools.
//!
//! The harness is libtest-mimic's (`harness = false` in Cargo.toml), so
//! that a test can be ignored at run time: each module lists its tests
//! with `tests!`, and with them the outside tools each one needs. Nothing
//! looks for the tools when the crate is built.

#![forbid(unsafe_code)]

/// Lists the module's tests as `name;` or `name needs TOOL, TOOL;`, the
/// tools being `common`'s. The module gets `tests()`, which `main` runs.
macro_rules! tests {
    ($($(#[$attr:meta])* $name:ident $(needs $($tool:ident),+)?;)*) => {
        pub(crate) fn tests() -> Vec<libtest_mimic::Trial> {
            Vec::from([$(
                $(#[$attr])*
                crate::common::trial(
                    module_path!(),
                    stringify!($name),
                    $name,
                    vec![$($(&crate::common::$tool),+)?],
                ),
            )*])
        }
    };
}

mod common;

#[cfg(feature = "publish")]
mod action;
mod architecture;
mod archive;
mod cache;
mod catalogs;
mod cli;
mod delta;
mod fuzz_readers;
mod hostile_inputs;
mod inspect;
mod interop;
mod known_answer;
mod listings;
mod openpgp;
mod page;
mod pkcs11;
mod plans;
mod previous;
#[cfg(feature = "publish")]
mod publish;
mod pull;
mod readme;
mod rebuild;
mod sequence;
mod serve;
mod simplestreams;
mod supply;
mod systemd;
mod systemd_tools;
mod unchanged;
mod vagrant;
mod verify;
mod virt_builder;

fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // As libtest does: --test-threads, else RUST_TEST_THREADS.
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let tests = [
        vec![common::trial(
            "harness",
            "no_test_attribute_is_left",
            no_test_attribute_is_left,
            Vec::new(),
        )],
        #[cfg(feature = "publish")]
        action::tests(),
        architecture::tests(),
        archive::tests(),
        cache::tests(),
        catalogs::tests(),
        cli::tests(),
        delta::tests(),
        fuzz_readers::tests(),
        hostile_inputs::tests(),
        inspect::tests(),
        interop::tests(),
        known_answer::tests(),
        listings::tests(),
        plans::tests(),
        openpgp::tests(),
        page::tests(),
        pkcs11::tests(),
        previous::tests(),
        #[cfg(feature = "publish")]
        publish::tests(),
        pull::tests(),
        readme::tests(),
        rebuild::tests(),
        sequence::tests(),
        serve::tests(),
        simplestreams::tests(),
        supply::tests(),
        systemd::tests(),
        unchanged::tests(),
        vagrant::tests(),
        verify::tests(),
        virt_builder::tests(),
    ];
    libtest_mimic::run(&args, tests.into_iter().flatten().collect()).exit();
}

/// `#[test]` does nothing under this harness: the function is compiled out
/// without a warning, so a test marked so (from a branch older than the
/// harness, say) would never run. It belongs in its module's `tests!`.
fn no_test_attribute_is_left() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.lines().any(|line| line.trim() == "#[test]"),
                "{}: #[test] is compiled out here; list the test in `tests!`",
                path.display()
            );
        }
    }
}
