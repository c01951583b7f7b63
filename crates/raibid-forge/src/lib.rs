//! Everything raibid-ci knows about forges (Gitea, Forgejo, GitHub): what their webhooks look
//! like and what their commit-status APIs expect.
//!
//! Every function here is pure: the server hands in the headers and raw body it received and
//! gets back a verdict, a [`Trigger`], or a [`StatusRequest`] to send with its own HTTP client.
//! Keeping the forge knowledge free of I/O lets it be tested against recorded payloads alone.

mod delivery;
mod header;
mod parse;
mod payload;
pub mod send;
mod signature;
mod status;
mod trigger;
pub mod validate;

pub use delivery::{MAX_LEN as MAX_DELIVERY_ID_LEN, delivery_id, is_safe_id};
pub use parse::{ParseError, parse, repository_name};
pub use signature::{SignatureError, verify};
pub use status::{
    CommitStatus, StatusError, StatusRequest, StatusState, auth_header, status_request,
};
pub use trigger::{Parsed, PullRequestClosed, Trigger};
