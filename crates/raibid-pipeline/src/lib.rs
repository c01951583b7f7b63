//! The pipeline model of raibid-ci.
//!
//! The agent reads `.raibid.yaml` from the checked-out commit (the server never sees the file:
//! a webhook carries no contents) and runs it; a broken file fails the job before any step.
//! Text in, types out, no I/O, so the rules are tested without a repository.
//!
//! Every parse error carries `file:line:column`, because the person reading it is looking at the
//! file in an editor.

mod artifacts;
mod autodetect;
mod cache;
mod clone;
mod concurrency;
mod de;
mod duration;
mod error;
pub mod evaluate;
mod flow_guard;
mod image_build;
mod makefile;
mod matrix;
mod merge;
mod names;
mod pipeline;
pub mod plugin;
mod service;
mod step;
pub mod substitute;
mod tag;
mod when;
mod workflows;

pub use artifacts::{
    Artifacts, ArtifactsExpiry, ArtifactsWhen, MAX_EXPIRE_IN, glob_base, parse_expire_in, path_glob,
};
pub use autodetect::{AutodetectError, Autodetected, RepoListing, autodetect};
pub use cache::{
    Cache, CacheKeyError, CachePolicy, DEFAULT_CACHE_KEY, MAX_CACHE_KEY_LEN, MAX_CACHE_PATHS,
};
pub use concurrency::{GroupContext, MAX_GROUP_LEN, render as concurrency_group};
pub use duration::{DurationError, MAX_TIMEOUT, parse_duration};
pub use error::PipelineError;
pub use image_build::ImageBuild;
pub use matrix::{MAX_AXES, MAX_VARIANT_NAME_LEN, MAX_VARIANTS, Matrix, Variant};
pub use pipeline::{
    CloneOptions, Fetch, MAX_FILE_SIZE, Pipeline, Variables, parse, parse_bytes,
    parse_woodpecker_bytes, parse_workflow_bytes,
};
pub use plugin::Settings;
pub use service::{DEFAULT_READY_TIMEOUT, MAX_SERVICES, Ready, ReadyRun, Service};
pub use step::{MAX_RETRIES, OnFailure, Step, StepKind};
pub use tag::{TagContext, TagError, TemplateError, repository as image_repository};
pub use when::{PathFilter, Pattern, RunState, TriggerContext, When, WhenBlock};
pub use workflows::{
    MAX_WORKFLOW_NAME_LEN, MAX_WORKFLOWS, PIPELINE_DIR, WOODPECKER_DIR, WOODPECKER_FILES,
    WorkflowError, WorkflowFile, valid_name as valid_workflow_name, workflow_files,
    workflow_files_in, workflow_order,
};

/// The pipeline file, at the repository root.
pub const PIPELINE_FILE: &str = ".raibid.yaml";
