#![doc = include_str!("../README.md")]
//!
//! # Crate map
//!
//! - [`npy`]: streaming `.npy` reader (row blocks, bounded memory), used by `svcca compare` on files.
//! - [`layout`]: the Arrow IPC shard schema, encoder and zero-copy decoder.
//! - [`manifest`]: the dataset manifest, representation keys and their canonical order.
//! - [`store`]: dataset URLs (`file://`, plain paths, `s3://`, `gs://`, `az://`, `memory://`) to
//!   object stores, configured from the environment.
//! - [`dataset`]: [`open_dataset`] / [`Dataset`]: list representations, stream row blocks.
//! - [`selector`]: `DATASET_URL#run=..,seed=..,step=..,layer=..` parsing and resolution.
//! - [`ingest`]: `.npy` / `.npz` / `.safetensors` trees into a dataset ([`ingest()`]).
//! - [`FileArray`]: one array of a `.npy`, `.npz` or `.safetensors` file, streamed in blocks.
//! - [`writer`]: [`DatasetWriter`] / [`RepresentationWriter`]: one representation at a time,
//!   batch by batch, with its [`Layout`] and depth (what ingest uses, open to other writers).
//!
//! Not here: networking (the engine owns workers and gRPC) and maths (svcca-core).

pub mod dataset;
mod error;
pub mod ingest;
pub mod layout;
pub mod manifest;
pub mod npy;
pub mod selector;
mod sources;
pub mod store;
mod template;
pub mod writer;

pub use dataset::{Dataset, ReadOptions, open_dataset};
pub use error::{StorageError, Waited};
pub use ingest::{IngestConfig, IngestReport, LayerOrder, LayoutRule, ingest};
pub use layout::RowBlock;
pub use manifest::{Layout, Manifest, ProbeSet, RepKey, Representation, ShardCheck, ShardEntry};
pub use selector::Selector;
pub use sources::FileArray;
pub use store::Env;
pub use writer::{DatasetWriter, RepresentationSpec, RepresentationWriter, WriteOptions};
