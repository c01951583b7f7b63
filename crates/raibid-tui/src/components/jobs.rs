//! The jobs list: every known job, newest first, filtered and sorted as asked.
//!
//! Rendering cost must not grow with history: filtering and sorting happen when the data or
//! the query changes, leaving a list of indices, and a frame builds only the rows on screen.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use raibid_model::{BuildStatus, Job, JobStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::columns::{self, ColumnSpec};
use super::nav::{MouseOutcome, TableNav};
use super::{Action, Component, EventResult};
use crate::data::JobsUpdate;
use crate::fmt;

/// Jobs kept in memory. History beyond this is for `raibid job list`.
pub(crate) const MAX_JOBS: usize = 10_000;

/// Width of an id cut to its random part, for narrow terminals.
const SHORT_ID: usize = 10;
/// Width of a whole ULID.
const FULL_ID: u16 = 26;
/// Refs rarely need more than this beyond their minimum; the rest of a wide screen goes to
/// the repository name.
const MAX_REF_GROWTH: u16 = 26;
/// The same for a job's label (`test/RUST=1.80`, `deploy/linux-arm64`).
const MAX_JOB_GROWTH: u16 = 20;
/// The same for a repository's name, when the title takes the rest.
const MAX_REPO_GROWTH: u16 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    Newest,
    Repo,
    Status,
    Pool,
    Duration,
}

impl SortKey {
    fn next(self) -> Self {
        match self {
            SortKey::Newest => SortKey::Repo,
            SortKey::Repo => SortKey::Status,
            SortKey::Status => SortKey::Pool,
            SortKey::Pool => SortKey::Duration,
            SortKey::Duration => SortKey::Newest,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SortKey::Newest => "newest",
            SortKey::Repo => "repo",
            SortKey::Status => "status",
            SortKey::Pool => "pool",
            SortKey::Duration => "duration",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    /// The pipeline number (`#17`), which the CLI's and the web list lead the job's name with:
    /// how people name a build. The first to go after the title on a narrow terminal, where
    /// the job's label needs the room; the filter finds `#17` either way.
    Number,
    Status,
    Repo,
    /// Which job of a push: its workflow and matrix variant (`Job::label`), as the CLI's list
    /// and the commit statuses name them.
    Job,
    Ref,
    Pool,
    Agent,
    Queued,
    Duration,
    /// The pull request's title or the commit's subject (`NewJob::title`), as `gh run list`
    /// and Woodpecker's pipeline list lead with it: the first to go on a narrow terminal,
    /// where the job's page still shows it.
    Title,
}

impl Column {
    const ALL: [Column; 11] = [
        Column::Id,
        Column::Number,
        Column::Status,
        Column::Repo,
        Column::Job,
        Column::Ref,
        Column::Pool,
        Column::Agent,
        Column::Queued,
        Column::Duration,
        Column::Title,
    ];

    fn header(self) -> &'static str {
        match self {
            Column::Id => "ID",
            Column::Number => "#",
            Column::Status => "STATUS",
            Column::Repo => "REPO",
            Column::Job => "JOB",
            Column::Ref => "REF",
            Column::Pool => "POOL",
            Column::Agent => "AGENT",
            Column::Queued => "QUEUED",
            Column::Duration => "DURATION",
            Column::Title => "TITLE",
        }
    }

    /// Minimum width and drop rank (see [`columns::fit`]).
    fn spec(self, id_width: u16) -> ColumnSpec {
        let (min, drop_rank) = match self {
            Column::Id => (id_width, 0),
            Column::Status => (10, 0),
            Column::Repo => (12, 0),
            Column::Job => (12, 4),
            Column::Ref => (14, 3),
            Column::Number => (5, 8),
            Column::Pool => (10, 6),
            Column::Agent => (14, 7),
            Column::Queued => (7, 5),
            Column::Duration => (8, 2),
            Column::Title => (16, 9),
        };
        ColumnSpec { min, drop_rank }
    }
}

/// Every known job, newest first.
#[derive(Debug, Default)]
pub(crate) struct JobStore {
    jobs: Vec<Job>,
}

impl JobStore {
    pub fn apply(&mut self, update: JobsUpdate) {
        // Everything at least as new as the oldest job of the newest page is in that page.
        let floor = update.newest.last().map(|j| j.id.clone());
        let mut incoming: HashMap<String, Job> = HashMap::new();
        for job in update
            .older
            .into_iter()
            .chain(update.refreshed)
            .chain(update.active)
            .chain(update.newest)
        {
            incoming.insert(job.id.clone(), job);
        }
        let gone: HashSet<String> = update.gone.into_iter().collect();
        self.jobs.retain_mut(|job| match incoming.remove(&job.id) {
            Some(fresh) => {
                *job = fresh;
                true
            }
            // Older jobs missing from the update were only not asked for, unless the server
            // said it no longer has them.
            None => floor.as_ref().is_some_and(|f| job.id < *f) && !gone.contains(&job.id),
        });
        if !incoming.is_empty() {
            self.jobs.extend(incoming.into_values());
            self.jobs.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        }
        self.jobs.truncate(MAX_JOBS);
    }

    /// `job`'s status as the list shows it: for the first job of a matrix or of several
    /// workflows, which passes once it has queued them, its build's, the jobs it queued
    /// combined (as the commit status, `raibid job list` and the web list give it). Worked
    /// out when asked (the rows on screen; every job only to filter or sort by status): for
    /// all 10,000 jobs at every poll it doubled the cost of taking the poll in (BENCHMARKS.md).
    fn shown_status(&self, job: &Job) -> JobStatus {
        self.build_status(job).unwrap_or(job.status)
    }

    /// For the first job of a matrix or of several workflows, once it passed: its build's
    /// status from the jobs it queued as held here. Those are newer than it, so held while it
    /// is, and re-read while they run; one that is not held (gone from the server) has not
    /// ended, as the server counts it.
    fn build_status(&self, job: &Job) -> Option<JobStatus> {
        job.stands_for_its_jobs()
            .then(|| BuildStatus::combine(job.children.iter().map(|id| self.find(id))))
    }

    /// The job `id`: the jobs are sorted by id, newest (greatest) first.
    fn find(&self, id: &str) -> Option<&Job> {
        self.jobs
            .binary_search_by(|j| id.cmp(&j.id))
            .ok()
            .map(|i| &self.jobs[i])
    }
}

#[cfg(test)]
impl JobStore {
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.find(id)
    }
}

pub(crate) struct JobsView {
    store: JobStore,
    /// Indices into the store of the jobs shown, in display order.
    shown: Vec<usize>,
    filter: String,
    editing_filter: bool,
    sort: SortKey,
    reversed: bool,
    nav: TableNav,
    /// When the data was fetched: running jobs' durations are sorted as of then.
    as_of: DateTime<Utc>,
    /// Whether a shown job is one of several of a push (a workflow or a matrix variant):
    /// only then is there a JOB column, which would otherwise be empty and take the place of
    /// others on a narrow screen. Decided when the rows are, not per frame.
    labelled: bool,
    /// The same for the # column: whether a shown job has a pipeline number.
    numbered: bool,
}

impl Default for JobsView {
    fn default() -> Self {
        Self {
            store: JobStore::default(),
            shown: Vec::new(),
            filter: String::new(),
            editing_filter: false,
            sort: SortKey::Newest,
            reversed: false,
            nav: TableNav::default(),
            as_of: DateTime::UNIX_EPOCH,
            labelled: false,
            numbered: false,
        }
    }
}

impl JobsView {
    pub fn apply(&mut self, update: JobsUpdate) {
        self.as_of = update.at;
        // Before the store changes: `shown` holds indices into the old one, which point at
        // other jobs (or past the end) once jobs arrive or go.
        let selected_id = self.selected().map(|j| j.id.clone());
        self.store.apply(update);
        self.rebuild_selecting(selected_id);
    }

    /// The status of `job`'s build, for the first job of a matrix or of several workflows
    /// once it passed (see [`JobStore::build_status`]).
    pub fn build_status(&self, job: &Job) -> Option<JobStatus> {
        self.store.build_status(job)
    }

    pub fn selected(&self) -> Option<&Job> {
        self.shown
            .get(self.nav.selected())
            .map(|&i| &self.store.jobs[i])
    }

    /// Recomputes the shown rows of an unchanged store, keeping the selected job selected.
    fn rebuild(&mut self) {
        let selected_id = self.selected().map(|j| j.id.clone());
        self.rebuild_selecting(selected_id);
    }

    /// Recomputes the shown rows and selects `selected_id` if it is still there.
    fn rebuild_selecting(&mut self, selected_id: Option<String>) {
        let terms: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let jobs = &self.store.jobs;
        self.shown = (0..jobs.len())
            .filter(|&i| {
                terms.is_empty() || matches(&jobs[i], self.store.shown_status(&jobs[i]), &terms)
            })
            .collect();
        let as_of = self.as_of;
        // Stable sorts: equal keys stay newest first.
        match self.sort {
            SortKey::Newest => {}
            SortKey::Repo => self
                .shown
                .sort_by(|&a, &b| jobs[a].spec.repo.cmp(&jobs[b].spec.repo)),
            SortKey::Status => self
                .shown
                .sort_by_cached_key(|&i| self.store.shown_status(&jobs[i]).as_str()),
            SortKey::Pool => self
                .shown
                .sort_by(|&a, &b| jobs[a].spec.pool.cmp(&jobs[b].spec.pool)),
            SortKey::Duration => self
                .shown
                .sort_by_key(|&i| std::cmp::Reverse(jobs[i].duration(as_of))),
        }
        if self.reversed {
            self.shown.reverse();
        }
        self.labelled = self.shown.iter().any(|&i| jobs[i].label().is_some());
        self.numbered = self.shown.iter().any(|&i| jobs[i].spec.number.is_some());
        let position =
            selected_id.and_then(|id| self.shown.iter().position(|&i| self.store.jobs[i].id == id));
        self.nav
            .select(position.unwrap_or(self.nav.selected()), self.shown.len());
    }

    fn open_selected(&self) -> EventResult {
        match self.selected() {
            Some(job) => EventResult::Action(Action::OpenJob(Box::new(job.clone()))),
            None => EventResult::Consumed,
        }
    }

    fn handle_filter_key(&mut self, key: &KeyEvent) -> EventResult {
        match key.code {
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Esc => {
                self.editing_filter = false;
                self.filter.clear();
                self.rebuild();
            }
            KeyCode::Backspace => {
                self.filter.pop();
                self.rebuild();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.filter.clear();
                self.rebuild();
            }
            KeyCode::Char(c) => {
                self.filter.push(c);
                self.rebuild();
            }
            _ => {
                self.nav.handle_key(key, self.shown.len());
            }
        }
        EventResult::Consumed
    }

    fn handle_key(&mut self, key: &KeyEvent) -> EventResult {
        if self.editing_filter {
            return self.handle_filter_key(key);
        }
        match key.code {
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Enter => return self.open_selected(),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.rebuild();
            }
            KeyCode::Char('S') => {
                self.reversed = !self.reversed;
                self.rebuild();
            }
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.rebuild();
            }
            _ => {
                if !self.nav.handle_key(key, self.shown.len()) {
                    return EventResult::Ignored;
                }
            }
        }
        EventResult::Consumed
    }

    fn title(&self) -> Line<'static> {
        let arrow = if self.reversed { "↑" } else { "↓" };
        let mut spans = vec![
            Span::styled(" Jobs ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "{}/{} · sort: {} {arrow} ",
                self.shown.len(),
                self.store.jobs.len(),
                self.sort.label()
            )),
        ];
        if !self.filter.is_empty() && !self.editing_filter {
            spans.push(Span::styled(
                format!("· filter: {} ", self.filter),
                Style::new().fg(Color::Yellow),
            ));
        }
        Line::from(spans)
    }

    /// `status`: the job's as the list shows it ([`JobStore::shown_status`]).
    fn cell(
        job: &Job,
        status: JobStatus,
        column: Column,
        full_id: bool,
        now: DateTime<Utc>,
    ) -> Cell<'_> {
        match column {
            Column::Id => Cell::from(if full_id {
                job.id.as_str()
            } else {
                fmt::short_id(&job.id, SHORT_ID)
            }),
            Column::Status => {
                let text = if job.cancel_requested && !job.status.is_final() {
                    "cancelling"
                } else {
                    status.as_str()
                };
                Cell::from(text).style(fmt::status_style(status))
            }
            Column::Repo => Cell::from(job.spec.repo.as_str()),
            Column::Number => {
                Cell::from(job.spec.number.map(|n| format!("#{n}")).unwrap_or_default())
            }
            Column::Job => Cell::from(job.label().unwrap_or_default()),
            Column::Ref => Cell::from(fmt::short_ref(&job.spec.git_ref)),
            Column::Pool => Cell::from(job.spec.pool.as_str()),
            Column::Agent => Cell::from(job.agent.as_deref().unwrap_or("-")),
            Column::Queued => {
                let until = job.started_at.or(job.finished_at).unwrap_or(now);
                Cell::from(fmt::duration(until - job.created_at))
            }
            Column::Duration => Cell::from(
                job.duration(now)
                    .map(fmt::duration)
                    .unwrap_or_else(|| "-".into()),
            ),
            Column::Title => Cell::from(job.spec.title.as_deref().unwrap_or("")),
        }
    }
}

/// Every term must appear in the repo, the job's name (`#17 test/RUST=1.80`), the ref, the
/// status shown or the title.
fn matches(job: &Job, status: JobStatus, terms: &[String]) -> bool {
    if terms.is_empty() {
        return true;
    }
    let repo = job.spec.repo.to_ascii_lowercase();
    // `#17 test`: a build is found by its number too.
    let label = job.list_name().unwrap_or_default().to_ascii_lowercase();
    let git_ref = job.spec.git_ref.to_ascii_lowercase();
    let status = status.as_str();
    let title = job.spec.title.as_deref().unwrap_or_default().to_lowercase();
    terms.iter().all(|t| {
        repo.contains(t)
            || label.contains(t)
            || git_ref.contains(t)
            || status.contains(t.as_str())
            || title.contains(t.as_str())
    })
}

/// The columns that fit, and whether ids are shown whole: ids are cut short only when that
/// is the price of showing every column but the title.
fn layout_columns(width: u16, labelled: bool, numbered: bool) -> (Vec<Column>, bool) {
    let all: Vec<Column> = Column::ALL
        .into_iter()
        .filter(|c| labelled || *c != Column::Job)
        .filter(|c| numbered || *c != Column::Number)
        .collect();
    let fit_with = |id_width: u16| -> Vec<Column> {
        let specs: Vec<ColumnSpec> = all.iter().map(|c| c.spec(id_width)).collect();
        columns::fit(&specs, width)
            .into_iter()
            .map(|i| all[i])
            .collect()
    };
    let whole = fit_with(FULL_ID);
    let untitled = |columns: &[Column]| columns.iter().filter(|c| **c != Column::Title).count();
    if untitled(&whole) == untitled(&all) {
        (whole, true)
    } else {
        (fit_with(SHORT_ID as u16), false)
    }
}

/// Exact widths: every column its minimum, and what is left to the job's label, the ref, the
/// repo and the title, which are the columns whose values run long.
fn column_widths(columns: &[Column], full_id: bool, width: u16) -> Vec<Constraint> {
    let id_width = if full_id { FULL_ID } else { SHORT_ID as u16 };
    let mut widths: Vec<u16> = columns.iter().map(|c| c.spec(id_width).min).collect();
    let used: u16 = widths.iter().sum::<u16>()
        + columns::SPACING * u16::try_from(columns.len().saturating_sub(1)).unwrap_or(0);
    let mut spare = width.saturating_sub(used);
    let position = |col| columns.iter().position(|c| *c == col);
    for (column, most) in [(Column::Job, MAX_JOB_GROWTH), (Column::Ref, MAX_REF_GROWTH)] {
        if let Some(i) = position(column) {
            let grow = (spare / 3).min(most);
            widths[i] += grow;
            spare -= grow;
        }
    }
    let (repo, title) = (position(Column::Repo), position(Column::Title));
    if let (Some(i), Some(_)) = (repo, title) {
        let grow = (spare / 2).min(MAX_REPO_GROWTH);
        widths[i] += grow;
        spare -= grow;
    }
    if let Some(i) = title.or(repo) {
        widths[i] += spare;
    }
    widths.into_iter().map(Constraint::Length).collect()
}

impl Component for JobsView {
    fn handle_event(&mut self, event: &Event) -> EventResult {
        match event {
            Event::Key(key) => self.handle_key(key),
            Event::Mouse(mouse) => match self.nav.handle_mouse(mouse, self.shown.len()) {
                MouseOutcome::Outside => EventResult::Ignored,
                MouseOutcome::Moved => EventResult::Consumed,
                MouseOutcome::ClickedSelected => self.open_selected(),
            },
            Event::Paste(text) if self.editing_filter => {
                self.filter.push_str(text.trim());
                self.rebuild();
                EventResult::Consumed
            }
            _ => EventResult::Ignored,
        }
    }

    fn captures_text(&self) -> bool {
        self.editing_filter
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let block = Block::bordered().title(self.title());
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [table_area, prompt_area] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(u16::from(self.editing_filter)),
        ])
        .areas(inner);
        if self.editing_filter {
            let prompt = Line::from(vec![
                Span::styled("/", Style::new().fg(Color::Yellow)),
                Span::raw(self.filter.as_str()),
                Span::styled("█", Style::new().fg(Color::Yellow)),
                Span::styled(
                    "  repo, branch or status · Enter keep · Esc clear",
                    Style::new().fg(Color::DarkGray),
                ),
            ]);
            frame.render_widget(Paragraph::new(prompt), prompt_area);
        }

        let (columns, full_id) = layout_columns(table_area.width, self.labelled, self.numbered);
        let body = Rect {
            y: table_area.y.saturating_add(1),
            height: table_area.height.saturating_sub(1),
            ..table_area
        };
        let range = self.nav.layout(body, self.shown.len());
        if self.shown.is_empty() {
            let message = if self.store.jobs.is_empty() {
                "no jobs yet".to_owned()
            } else {
                format!("no job matches {:?}", self.filter)
            };
            frame.render_widget(
                Paragraph::new(message).style(Style::new().fg(Color::DarkGray)),
                body,
            );
        }
        let selected = self.nav.selected();
        let rows = range.map(|pos| {
            let i = self.shown[pos];
            let job = &self.store.jobs[i];
            let status = self.store.shown_status(job);
            let row = Row::new(
                columns
                    .iter()
                    .map(|&c| Self::cell(job, status, c, full_id, now)),
            );
            if pos == selected {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        });
        let widths = column_widths(&columns, full_id, table_area.width);
        let header = Row::new(columns.iter().map(|c| c.header()))
            .style(Style::new().add_modifier(Modifier::BOLD));
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(columns::SPACING);
        frame.render_widget(table, table_area);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{job, key, typed};
    use raibid_model::JobStatus;

    fn view(jobs: Vec<Job>) -> JobsView {
        let mut v = JobsView::default();
        v.apply(JobsUpdate {
            newest: jobs,
            ..Default::default()
        });
        v
    }

    fn shown_ids(v: &JobsView) -> Vec<&str> {
        v.shown
            .iter()
            .map(|&i| v.store.jobs[i].id.as_str())
            .collect()
    }

    #[test]
    fn store_merges_pages_and_forgets_deleted_jobs() {
        let mut store = JobStore::default();
        store.apply(JobsUpdate {
            newest: vec![
                job("05", "a/x", JobStatus::Running),
                job("04", "a/x", JobStatus::Success),
            ],
            older: vec![
                job("02", "a/y", JobStatus::Success),
                job("01", "a/y", JobStatus::Queued),
            ],
            ..Default::default()
        });
        let ids = |s: &JobStore| s.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&store), ["05", "04", "02", "01"]);
        // 04 was deleted; 06 is new; 01 changed status and came as active.
        store.apply(JobsUpdate {
            newest: vec![
                job("06", "a/x", JobStatus::Queued),
                job("05", "a/x", JobStatus::Success),
                job("02", "a/y", JobStatus::Success),
            ],
            active: vec![job("01", "a/y", JobStatus::Running)],
            ..Default::default()
        });
        assert_eq!(ids(&store), ["06", "05", "02", "01"]);
        assert_eq!(store.jobs[1].status, JobStatus::Success);
        assert_eq!(store.jobs[3].status, JobStatus::Running);
        // The server has no jobs any more.
        store.apply(JobsUpdate::default());
        assert!(store.jobs.is_empty());
    }

    #[test]
    fn store_takes_reread_jobs_and_drops_pruned_ones() {
        let mut store = JobStore::default();
        store.apply(JobsUpdate {
            newest: vec![job("09", "a/x", JobStatus::Success)],
            older: vec![
                job("03", "a/y", JobStatus::Running),
                job("02", "a/y", JobStatus::Queued),
                job("01", "a/y", JobStatus::Running),
            ],
            ..Default::default()
        });
        // 03 finished, 02 was pruned; 01 was not asked about and stays as it was.
        store.apply(JobsUpdate {
            newest: vec![job("09", "a/x", JobStatus::Success)],
            refreshed: vec![job("03", "a/y", JobStatus::Success)],
            gone: vec!["02".into()],
            ..Default::default()
        });
        let statuses: Vec<(&str, JobStatus)> = store
            .jobs
            .iter()
            .map(|j| (j.id.as_str(), j.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("09", JobStatus::Success),
                ("03", JobStatus::Success),
                ("01", JobStatus::Running),
            ]
        );
    }

    #[test]
    fn filter_matches_repo_branch_and_status() {
        let mut v = view(vec![
            job("03", "acme/web", JobStatus::Failure),
            job("02", "acme/api", JobStatus::Success),
            job("01", "other/tool", JobStatus::Running),
        ]);
        assert_eq!(
            v.handle_event(&key(KeyCode::Char('/'))),
            EventResult::Consumed
        );
        assert!(v.captures_text());
        for e in typed("acme") {
            v.handle_event(&e);
        }
        assert_eq!(shown_ids(&v), ["03", "02"]);
        for e in typed(" fail") {
            v.handle_event(&e);
        }
        assert_eq!(shown_ids(&v), ["03"]);
        v.handle_event(&key(KeyCode::Enter));
        assert!(!v.captures_text());
        assert_eq!(shown_ids(&v), ["03"]);
        // Branch: every fixture job is on `main`.
        v.handle_event(&key(KeyCode::Esc));
        assert_eq!(shown_ids(&v).len(), 3);
        v.handle_event(&key(KeyCode::Char('/')));
        for e in typed("MAIN") {
            v.handle_event(&e);
        }
        assert_eq!(shown_ids(&v).len(), 3);
        v.handle_event(&key(KeyCode::Backspace));
        v.handle_event(&key(KeyCode::Esc));
        assert!(v.filter.is_empty());
        assert!(!v.captures_text());
    }

    #[test]
    fn filter_matches_the_title() {
        let mut titled = job("02", "acme/api", JobStatus::Success);
        titled.spec.title = Some("Réparer le Parser".into());
        let mut v = view(vec![job("03", "acme/web", JobStatus::Failure), titled]);
        v.handle_event(&key(KeyCode::Char('/')));
        for e in typed("RÉPARER parser") {
            v.handle_event(&e);
        }
        assert_eq!(shown_ids(&v), ["02"]);
    }

    #[test]
    fn sorting_cycles_and_keeps_the_selection() {
        let mut v = view(vec![
            job("03", "b/b", JobStatus::Failure),
            job("02", "c/c", JobStatus::Success),
            job("01", "a/a", JobStatus::Running),
        ]);
        v.handle_event(&key(KeyCode::Down));
        assert_eq!(v.selected().unwrap().id, "02");
        v.handle_event(&key(KeyCode::Char('s')));
        assert_eq!(v.sort, SortKey::Repo);
        assert_eq!(shown_ids(&v), ["01", "03", "02"]);
        assert_eq!(v.selected().unwrap().id, "02");
        v.handle_event(&key(KeyCode::Char('S')));
        assert_eq!(shown_ids(&v), ["02", "03", "01"]);
        v.handle_event(&key(KeyCode::Char('s')));
        assert_eq!(v.sort, SortKey::Status);
        for _ in 0..3 {
            v.handle_event(&key(KeyCode::Char('s')));
        }
        assert_eq!(v.sort, SortKey::Newest);
    }

    /// The selection was looked up through the old `shown` indices in the new store: a new
    /// job moved it onto another job, and a shrunken store panicked.
    #[test]
    fn an_update_keeps_the_selected_job_not_its_row() {
        let mut v = view(vec![
            job("02", "a/a", JobStatus::Running),
            job("01", "a/a", JobStatus::Success),
        ]);
        v.handle_event(&key(KeyCode::Down));
        assert_eq!(v.selected().unwrap().id, "01");
        v.apply(JobsUpdate {
            newest: vec![
                job("03", "a/a", JobStatus::Queued),
                job("02", "a/a", JobStatus::Running),
                job("01", "a/a", JobStatus::Success),
            ],
            ..Default::default()
        });
        assert_eq!(v.selected().unwrap().id, "01");
        match v.handle_event(&key(KeyCode::Enter)) {
            EventResult::Action(Action::OpenJob(j)) => assert_eq!(j.id, "01"),
            other => panic!("expected OpenJob, got {other:?}"),
        }
    }

    #[test]
    fn an_update_with_fewer_jobs_does_not_panic() {
        let mut v = view(vec![
            job("03", "a/a", JobStatus::Queued),
            job("02", "a/a", JobStatus::Running),
            job("01", "a/a", JobStatus::Success),
        ]);
        v.handle_event(&key(KeyCode::End));
        assert_eq!(v.selected().unwrap().id, "01");
        v.apply(JobsUpdate::default());
        assert!(v.selected().is_none());
        assert_eq!(v.handle_event(&key(KeyCode::Enter)), EventResult::Consumed);
    }

    #[test]
    fn enter_opens_the_selected_job() {
        let mut v = view(vec![
            job("02", "a/a", JobStatus::Running),
            job("01", "a/a", JobStatus::Success),
        ]);
        v.handle_event(&key(KeyCode::End));
        match v.handle_event(&key(KeyCode::Enter)) {
            EventResult::Action(Action::OpenJob(j)) => assert_eq!(j.id, "01"),
            other => panic!("expected OpenJob, got {other:?}"),
        }
        assert_eq!(
            view(vec![]).handle_event(&key(KeyCode::Enter)),
            EventResult::Consumed
        );
    }

    #[test]
    fn unknown_keys_are_left_to_the_app() {
        let mut v = view(vec![job("01", "a/a", JobStatus::Running)]);
        assert_eq!(
            v.handle_event(&key(KeyCode::Char('q'))),
            EventResult::Ignored
        );
        assert_eq!(v.handle_event(&key(KeyCode::Esc)), EventResult::Ignored);
    }

    #[test]
    fn narrow_terminals_keep_id_and_status() {
        let (cols, full) = layout_columns(40, false, true);
        assert!(!full);
        assert!(cols.contains(&Column::Id) && cols.contains(&Column::Status));
        let (cols, full) = layout_columns(144, true, true);
        assert!(full);
        assert_eq!(cols.len(), Column::ALL.len());
        // The title goes first, and ids stay whole without it.
        let (cols, full) = layout_columns(127, true, true);
        assert!(full, "{cols:?}");
        assert_eq!(cols.len(), Column::ALL.len() - 1);
        assert!(!cols.contains(&Column::Title));
        // Then the number, before the job's label.
        let (cols, _) = layout_columns(105, true, true);
        assert!(
            cols.contains(&Column::Job) && !cols.contains(&Column::Number),
            "{cols:?}"
        );
        // Without numbered jobs there is no # column.
        let (cols, _) = layout_columns(164, true, false);
        assert!(!cols.contains(&Column::Number), "{cols:?}");
    }

    #[test]
    fn the_title_takes_a_wide_screens_rest_after_the_repository_s_share() {
        let columns = Column::ALL.to_vec();
        let widths = column_widths(&columns, true, 260);
        let at = |c: Column| match widths[columns.iter().position(|x| *x == c).unwrap()] {
            Constraint::Length(n) => n,
            other => panic!("{other:?}"),
        };
        let total: u16 = columns.iter().map(|c| at(*c)).sum::<u16>() + columns.len() as u16 - 1;
        assert_eq!(total, 260);
        assert_eq!(at(Column::Repo), 12 + MAX_REPO_GROWTH);
        assert!(at(Column::Title) > 16, "{widths:?}");
        let untitled: Vec<Column> = columns
            .into_iter()
            .filter(|c| *c != Column::Title)
            .collect();
        let widths = column_widths(&untitled, true, 260);
        let repo = untitled.iter().position(|c| *c == Column::Repo).unwrap();
        assert!(matches!(widths[repo], Constraint::Length(n) if n > 12 + MAX_REPO_GROWTH));
    }
}
