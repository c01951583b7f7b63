//! Real processes for tests.
//!
//! raibid-ci's tests talk to a real `redis-server`, real git and a real OCI registry rather than
//! mocks. This crate starts them on free loopback ports in temporary directories and makes sure
//! they die with the test. A missing binary is a loud failure with the command that installs it:
//! a test that silently skips proves nothing.

pub mod canned_http;
mod docker;
mod engine;
pub mod fixtures;
mod git;
pub mod kube_api;
mod log_buffer;
mod podman;
mod port;
mod process;
mod redis;
pub mod registry;

pub use docker::Docker;
pub use engine::{BUSYBOX_IMAGE, TestEngine, machine_lock, network_lock};
pub use git::{GitDaemon, GitRepo};
pub use kube_api::FakeKubeApi;
pub use log_buffer::LogBuffer;
pub use podman::Podman;
pub use port::free_port;
pub use process::{require_binary, set_modified_ago, write_script};
pub use redis::{RedisOptions, RedisServer};
pub use registry::Registry;
