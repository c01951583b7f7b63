//! The screens and popups. Each owns its view state (selection, scroll, filter) and the data
//! it shows, draws itself into the area it is given, and turns input into an [`EventResult`];
//! none of them does I/O: what must happen outside comes back as a [`Command`].

mod agents;
mod cluster;
mod columns;
mod confirm;
mod help;
mod job_detail;
mod jobs;
mod nav;
mod queues;

pub(crate) use agents::AgentsView;
pub(crate) use cluster::ClusterView;
pub use cluster::Kubeconfig;
pub(crate) use confirm::Confirm;
pub(crate) use help::Help;
pub(crate) use job_detail::JobDetailView;
#[cfg(test)]
pub(crate) use jobs::JobStore;
pub(crate) use jobs::{JobsView, MAX_JOBS};
pub(crate) use queues::QueuesView;

use chrono::{DateTime, Utc};
use crossterm::event::Event;
use raibid_model::{Job, PoolName};
use ratatui::Frame;
use ratatui::layout::Rect;

/// Something only the runtime can do: it needs the network, the terminal or the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Stream this job's log and keep its record fresh.
    FollowJob(String),
    Cancel(String),
    Retry(String),
    /// Retry the failed jobs this one queued (matrix variants, workflows).
    RetryFailed(String),
    /// Let a blocked job (waiting for approval) run.
    Approve(String),
    /// Hold the pool's jobs (`raibid pool pause`), or let them go again.
    PausePool(PoolName),
    ResumePool(PoolName),
    /// Put text on the clipboard of the terminal the user sits at (OSC 52).
    Copy(String),
    Quit,
}

/// What a component asks of the application after handling an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    OpenJob(Box<Job>),
    /// Leave the job view for the jobs list.
    Back,
    /// Ask first: `prompt` is the question, `command` runs on yes.
    Confirm {
        prompt: String,
        command: Command,
    },
    Run(Command),
    /// Close the popup showing.
    Dismiss,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventResult {
    /// Not meant for this component; the application may give the event a global meaning.
    Ignored,
    Consumed,
    Action(Action),
}

pub(crate) trait Component {
    fn handle_event(&mut self, event: &Event) -> EventResult;

    /// Draws into `area`. `now` is passed in rather than read, so that a frame depends on
    /// state alone and can be compared in tests.
    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>);

    /// True while the component edits text: every key, `q` and digits included, is then typed
    /// rather than taken as a shortcut.
    fn captures_text(&self) -> bool {
        false
    }
}

/// A `width` x `height` rectangle in the middle of `area`, shrunk to fit.
pub(crate) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
