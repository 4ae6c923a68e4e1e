//! The integration tests, as one test binary (as cargo and ripgrep do): one
//! compile and one link of the shared harness instead of one per file.
//! Each module runs the real `vmcast-gen` binary on fixture sites copied
//! to a temporary directory, or checks its output with outside tools.

#![forbid(unsafe_code)]

mod common;

#[cfg(feature = "publish")]
mod action;
mod archive;
mod cache;
mod catalogs;
mod cli;
mod fuzz_readers;
mod hostile_inputs;
mod inspect;
mod interop;
mod known_answer;
mod openpgp;
mod page;
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
mod vagrant;
mod verify;
mod virt_builder;
