//! vmcast-gen publishes virtual appliances the way podcasts are published:
//! an RSS 2.0 feed whose items are releases and whose enclosures are disk
//! images, with a SHA256SUMS manifest and minisign signatures.
//!
//! [`build()`] is the whole pipeline, one stage per module, data flowing
//! one way: [`config`] → [`scan`] → [`hash`] → assemble → [`render`] →
//! [`sign`] → [`write`](mod@write); the [`build`](mod@build) module runs the stages in
//! order. The other commands' libraries sit beside it: [`site`],
//! `publish`, [`serve`], [`pull`], [`check`], [`init`].

// The one exception, `simd`, says why.
#![deny(unsafe_code)]

pub mod build;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod cloud;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod listing;
pub mod media;
pub mod model;
pub mod net;
pub mod notes;
pub mod openpgp;
pub mod par;
pub mod pkcs11;
pub mod place;
pub mod previous;
#[cfg(feature = "publish")]
pub mod publish;
pub mod pull;
pub mod render;
pub mod scan;
pub mod serve;
pub mod sign;
mod simd;
pub mod site;
pub mod sums;
pub mod supply;
pub mod sysupdate;
pub mod trust;
pub mod units;
pub mod vocab;
pub mod warning;
pub mod write;
pub mod zsync;

pub use build::{BuildOptions, Carried, ImageSummary, Report, build};
pub use error::{Error, Result};
pub use warning::Warning;
