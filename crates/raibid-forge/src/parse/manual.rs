//! `workflow_dispatch` events: someone asked the forge to run a build by hand.
//!
//! GitHub's payload names only the ref (`ref`, `inputs`, `repository`, `sender`), and a ref
//! moves: resolving it would need an API call, which this crate does not make, and building
//! whatever the ref points to later would not be reproducible. So the commit must be passed
//! as the dispatch input `sha`; without it the payload is rejected, naming `inputs.sha`.

use raibid_model::{Event, Forge};
use serde::Deserialize;

use super::{ParseError, trigger};
use crate::payload::{GitRef, Repository, Sha, User, decode, objects_only};
use crate::trigger::Parsed;

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Dispatch {
    #[serde(rename = "ref")]
    git_ref: GitRef,
    inputs: Inputs,
    repository: Repository,
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct Inputs {
    sha: Sha,
}

objects_only!(Dispatch, Inputs);

pub(super) fn parse(forge: Forge, body: &[u8]) -> Result<Parsed, ParseError> {
    let dispatch: Dispatch = decode(body)?;
    Ok(Parsed::Trigger(trigger(
        forge,
        dispatch.repository,
        dispatch.sender,
        dispatch.git_ref.0,
        dispatch.inputs.sha.0,
        Event::Manual,
    )))
}
