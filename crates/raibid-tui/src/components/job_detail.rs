//! One job: what it is, how its steps went, and its log as it is written.

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, MouseEventKind};
use raibid_model::{Job, JobStatus, StepStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::{Action, Command, Component, EventResult};
use crate::fmt;
use crate::log_buffer::LogBuffer;

/// Step rows shown before the log gets the rest of the screen; longer pipelines scroll.
const MAX_STEP_ROWS: u16 = 6;
/// Lines moved by one notch of the mouse wheel.
const WHEEL_STEP: usize = 3;

#[derive(Debug, Clone, PartialEq)]
enum StreamState {
    Connecting,
    Live,
    Ended(JobStatus),
    Interrupted { error: String, retrying: bool },
}

pub(crate) struct JobDetailView {
    job: Option<Job>,
    /// For the first job of a matrix or of several workflows, once it passed: the status of
    /// its build, the jobs it queued combined (see `JobStore::shown_status`).
    build: Option<JobStatus>,
    log: LogBuffer,
    stream: StreamState,
    /// Keep the newest line in view as output arrives.
    follow: bool,
    /// First line on screen when not following.
    top: usize,
    /// Log lines that fit, as of the last frame.
    log_rows: usize,
    log_area: Rect,
    query: String,
    editing_query: bool,
    current_match: Option<usize>,
    /// The last search found nothing.
    no_match: bool,
    /// The first step row the user scrolled to, and the step the table was kept at then:
    /// once the job moves on to another step, the table follows it again.
    steps_scroll: Option<(usize, usize)>,
    /// Step rows that fit, as of the last frame.
    step_rows: usize,
    steps_area: Rect,
}

impl Default for JobDetailView {
    fn default() -> Self {
        Self {
            job: None,
            build: None,
            log: LogBuffer::default(),
            stream: StreamState::Connecting,
            follow: true,
            top: 0,
            log_rows: 1,
            log_area: Rect::default(),
            query: String::new(),
            editing_query: false,
            current_match: None,
            no_match: false,
            steps_scroll: None,
            step_rows: usize::from(MAX_STEP_ROWS),
            steps_area: Rect::default(),
        }
    }
}

/// The step the table is kept at: the running one, else the first that failed (or was
/// cancelled), else the last one of a finished job or the next one to run of a live job.
fn focus_step(job: &Job) -> usize {
    let steps = &job.steps;
    let first = |status| steps.iter().position(|s| s.status == status);
    first(StepStatus::Running)
        .or_else(|| first(StepStatus::Failure))
        .or_else(|| first(StepStatus::Cancelled))
        .or_else(|| {
            if job.status.is_final() {
                None
            } else {
                first(StepStatus::Pending)
            }
        })
        .unwrap_or(steps.len().saturating_sub(1))
}

/// The first of `rows` rows shown out of `len`, with `focus` in the middle where it can be.
fn steps_window(len: usize, rows: usize, focus: usize) -> usize {
    focus
        .saturating_sub(rows.saturating_sub(1) / 2)
        .min(len.saturating_sub(rows))
}

impl JobDetailView {
    /// Shows `job`, forgetting the previous one and its log.
    pub fn open(&mut self, job: Job) {
        *self = Self {
            job: Some(job),
            log_rows: self.log_rows,
            ..Self::default()
        };
    }

    pub fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    pub fn set_build(&mut self, build: Option<JobStatus>) {
        self.build = build;
    }

    pub fn job_id(&self) -> Option<&str> {
        self.job.as_ref().map(|j| j.id.as_str())
    }

    fn is_open(&self, job_id: &str) -> bool {
        self.job_id() == Some(job_id)
    }

    pub fn update_job(&mut self, job: Job) {
        if self.is_open(&job.id) {
            self.job = Some(job);
        }
    }

    pub fn push_log(&mut self, job_id: &str, text: &str) {
        if !self.is_open(job_id) {
            return;
        }
        let dropped = self.log.push(text);
        self.top = self.top.saturating_sub(dropped);
        self.current_match = self.current_match.and_then(|m| m.checked_sub(dropped));
        if !matches!(self.stream, StreamState::Ended(_)) {
            self.stream = StreamState::Live;
        }
    }

    pub fn log_ended(&mut self, job_id: &str, status: JobStatus) {
        if self.is_open(job_id) {
            self.stream = StreamState::Ended(status);
        }
    }

    /// The log follower gave up (nothing is reconnecting): opening the job again is the way to
    /// ask once more.
    pub fn stream_stopped(&self) -> bool {
        matches!(
            self.stream,
            StreamState::Interrupted {
                retrying: false,
                ..
            }
        )
    }

    pub fn log_interrupted(&mut self, job_id: &str, error: String, retrying: bool) {
        if self.is_open(job_id) {
            self.stream = StreamState::Interrupted { error, retrying };
        }
    }

    /// The first step row shown: where the user scrolled, unless the job has moved on since.
    fn steps_top(&self, job: &Job) -> usize {
        let len = job.steps.len();
        let focus = focus_step(job);
        match self.steps_scroll {
            Some((top, kept_at)) if kept_at == focus => top.min(len.saturating_sub(self.step_rows)),
            _ => steps_window(len, self.step_rows, focus),
        }
    }

    fn scroll_steps(&mut self, up: bool, by: usize) {
        let Some(job) = &self.job else { return };
        let top = self.steps_top(job);
        let top = if up {
            top.saturating_sub(by)
        } else {
            (top + by).min(job.steps.len().saturating_sub(self.step_rows))
        };
        self.steps_scroll = Some((top, focus_step(job)));
    }

    fn bottom(&self) -> usize {
        self.log.len().saturating_sub(self.log_rows)
    }

    fn first_visible(&self) -> usize {
        if self.follow {
            self.bottom()
        } else {
            self.top.min(self.bottom())
        }
    }

    fn scroll_up(&mut self, lines: usize) {
        self.top = self.first_visible().saturating_sub(lines);
        self.follow = false;
    }

    fn scroll_down(&mut self, lines: usize) {
        self.top = (self.first_visible() + lines).min(self.bottom());
    }

    fn show_line(&mut self, line: usize) {
        self.follow = false;
        self.top = line.saturating_sub(self.log_rows / 2).min(self.bottom());
    }

    fn search(&mut self, forward: bool) {
        let len = self.log.len();
        if len == 0 || self.query.is_empty() {
            return;
        }
        // From the current match, else from the top of the screen (inclusive).
        let from = self
            .current_match
            .unwrap_or_else(|| (self.first_visible() + len - usize::from(forward)) % len);
        self.current_match = self.log.find(&self.query, from, forward);
        self.no_match = self.current_match.is_none();
        if let Some(line) = self.current_match {
            self.show_line(line);
        }
    }

    fn handle_query_key(&mut self, key: &KeyEvent) -> EventResult {
        match key.code {
            KeyCode::Enter => {
                self.editing_query = false;
                self.current_match = None;
                self.search(true);
            }
            KeyCode::Esc => {
                self.editing_query = false;
                self.query.clear();
            }
            KeyCode::Backspace => {
                self.query.pop();
            }
            KeyCode::Char(c) => self.query.push(c),
            _ => {}
        }
        EventResult::Consumed
    }

    fn handle_key(&mut self, key: &KeyEvent) -> EventResult {
        if self.editing_query {
            return self.handle_query_key(key);
        }
        let Some(job) = &self.job else {
            return match key.code {
                KeyCode::Esc => EventResult::Action(Action::Back),
                _ => EventResult::Ignored,
            };
        };
        let page = self.log_rows.max(1);
        match key.code {
            KeyCode::Esc if self.current_match.is_some() || self.no_match => {
                self.current_match = None;
                self.no_match = false;
            }
            KeyCode::Esc => return EventResult::Action(Action::Back),
            KeyCode::Char('c') => {
                return EventResult::Action(Action::Confirm {
                    prompt: format!("Cancel job {} ({})?", job.id, job.spec.repo),
                    command: Command::Cancel(job.id.clone()),
                });
            }
            KeyCode::Char('r') => {
                return EventResult::Action(Action::Confirm {
                    prompt: format!("Retry job {} ({}) as a new job?", job.id, job.spec.repo),
                    command: Command::Retry(job.id.clone()),
                });
            }
            // GitHub's "Re-run failed jobs", for a job that queued others.
            KeyCode::Char('R') if !job.children.is_empty() => {
                return EventResult::Action(Action::Confirm {
                    prompt: format!(
                        "Retry the failed jobs that job {} ({}) queued?",
                        job.id, job.spec.repo
                    ),
                    command: Command::RetryFailed(job.id.clone()),
                });
            }
            // A workflow's job waiting for others is released by the server, not a person.
            KeyCode::Char('a')
                if job.status == JobStatus::Blocked
                    && (job.spec.needs.is_some() || job.concurrency.is_some()) => {}
            KeyCode::Char('a') if job.status == JobStatus::Blocked => {
                let whose = if job.spec.from_fork {
                    "a fork's code"
                } else {
                    "its code"
                };
                return EventResult::Action(Action::Confirm {
                    prompt: format!(
                        "Approve job {} ({} {})? It runs {whose} on an agent.",
                        job.id,
                        job.spec.repo,
                        fmt::short_ref(&job.spec.git_ref)
                    ),
                    command: Command::Approve(job.id.clone()),
                });
            }
            KeyCode::Char('y') => {
                return EventResult::Action(Action::Run(Command::Copy(job.id.clone())));
            }
            KeyCode::Char('f') => {
                if self.follow {
                    self.top = self.first_visible();
                }
                self.follow = !self.follow;
            }
            KeyCode::Char('/') => {
                self.editing_query = true;
                self.query.clear();
            }
            KeyCode::Char('n') => self.search(true),
            KeyCode::Char('N') => self.search(false),
            KeyCode::Up | KeyCode::Char('k') => self.scroll_up(1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_down(1),
            KeyCode::PageUp => self.scroll_up(page),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_down(page),
            KeyCode::Home | KeyCode::Char('g') => {
                self.follow = false;
                self.top = 0;
            }
            KeyCode::End | KeyCode::Char('G') => self.follow = true,
            KeyCode::Char('[') => self.scroll_steps(true, 1),
            KeyCode::Char(']') => self.scroll_steps(false, 1),
            _ => return EventResult::Ignored,
        }
        EventResult::Consumed
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect, job: &Job, now: DateTime<Utc>) {
        let dim = Style::new().fg(Color::DarkGray);
        let mut first = vec![Span::styled(
            job.id.clone(),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        if let Some(number) = job.spec.number {
            first.push(Span::raw(format!("  #{number}")));
        }
        first.extend([
            Span::raw("  "),
            Span::styled(job.status.as_str(), fmt::status_style(job.status)),
        ]);
        if let Some(build) = self.build {
            first.push(Span::raw("  build "));
            first.push(Span::styled(build.as_str(), fmt::status_style(build)));
        }
        first.push(Span::styled(format!("  attempt {}", job.attempt), dim));
        if job.cancel_requested && !job.status.is_final() {
            first.push(Span::styled(
                "  cancel requested",
                Style::new().fg(Color::Yellow),
            ));
        }
        // Which part of its push a job is: a workflow of `.raibid/`, a matrix variant.
        if let Some(workflow) = job.spec.env.get("RAIBID_WORKFLOW") {
            first.push(Span::raw(format!("  workflow {workflow}")));
        }
        if let Some(variant) = job.spec.env.get("RAIBID_MATRIX") {
            first.push(Span::raw(format!("  {variant}")));
        }
        if job.status == JobStatus::Blocked {
            let waits = match (&job.concurrency, &job.spec.needs) {
                (Some(group), _) => Some(format!("  waiting for concurrency group {group}")),
                (None, Some(needs)) => {
                    Some(format!("  waiting for {}", needs.workflows.join(", ")))
                }
                (None, None) => None,
            };
            if let Some(waits) = waits {
                first.push(Span::styled(waits, Style::new().fg(Color::Yellow)));
            }
        }
        let sha = job.spec.sha.get(..10).unwrap_or(&job.spec.sha);
        let mut second = vec![Span::raw(format!(
            "{} @ {} ({sha})",
            job.spec.repo,
            fmt::short_ref(&job.spec.git_ref)
        ))];
        second.push(Span::styled(
            format!(
                " · {} · pool {} · agent {}",
                job.spec.event,
                job.spec.pool,
                job.agent.as_deref().unwrap_or("-")
            ),
            dim,
        ));
        // The pull request's title or the commit's subject, what the build is about: last, so
        // that a narrow terminal cuts it rather than the facts before it.
        if let Some(title) = &job.spec.title {
            second.push(Span::styled(
                format!("  {title}"),
                Style::new().add_modifier(Modifier::ITALIC),
            ));
        }
        let second = Line::from(second);
        let waited = job.started_at.or(job.finished_at).unwrap_or(now) - job.created_at;
        let mut third = vec![Span::raw(format!(
            "created {} · waited {} · ran {}",
            fmt::age(job.created_at, now),
            fmt::duration(waited),
            job.duration(now)
                .map(fmt::duration)
                .unwrap_or_else(|| "-".into())
        ))];
        if let Some(artifacts) = &job.artifacts {
            // The reference is long; `raibid job artifacts <id>` is what fetches them.
            third.push(if artifacts.expired {
                Span::styled(" · artifacts: expired", Style::new().fg(Color::DarkGray))
            } else {
                Span::styled(
                    format!(" · artifacts: {} files", artifacts.files),
                    Style::new().fg(Color::Green),
                )
            });
        }
        if let Some(tests) = &job.tests {
            let colour = if tests.failed > 0 {
                Color::Red
            } else {
                Color::Green
            };
            third.push(Span::styled(
                format!(" · {}", tests.summary()),
                Style::new().fg(colour),
            ));
        }
        if let Some(reason) = &job.reason {
            third.push(Span::styled(
                format!(" · {reason}"),
                Style::new().fg(Color::Red),
            ));
        }
        let block = Block::bordered().title(" Job · c cancel · r retry · y copy id · Esc back ");
        let text = vec![Line::from(first), second, Line::from(third)];
        frame.render_widget(Paragraph::new(text).block(block), area);
    }

    fn draw_steps(&mut self, frame: &mut Frame, area: Rect, job: &Job) {
        self.steps_area = area;
        // Borders and the header take three rows.
        self.step_rows = usize::from(area.height.saturating_sub(3)).max(1);
        let len = job.steps.len();
        let top = self.steps_top(job);
        let end = (top + self.step_rows).min(len);
        let rows = job.steps[top..end].iter().map(|step| {
            let (status, style) = fmt::step_status(step.status);
            Row::new(vec![
                Cell::from(step.name.as_str()),
                Cell::from(Span::styled(status, style)),
                Cell::from(
                    step.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(
                    step.duration_ms
                        .map(fmt::millis)
                        .unwrap_or_else(|| "-".into()),
                ),
            ])
        });
        let header = Row::new(["STEP", "STATUS", "EXIT", "DURATION"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let mut block = Block::bordered();
        if top > 0 || end < len {
            let more = Style::new().fg(Color::Yellow);
            block = block.title(format!(" Steps ({len}) · [ ] scroll "));
            if top > 0 {
                block =
                    block.title(Line::styled(format!(" +{top} more above "), more).right_aligned());
            }
            if end < len {
                block = block.title_bottom(
                    Line::styled(format!(" +{} more below ", len - end), more).right_aligned(),
                );
            }
        } else {
            block = block.title(format!(" Steps ({len}) "));
        }
        let table = Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(8),
            ],
        )
        .header(header)
        .block(block);
        frame.render_widget(table, area);
    }

    fn log_title(&self) -> Line<'static> {
        let mut spans = vec![Span::styled(
            " Log ",
            Style::new().add_modifier(Modifier::BOLD),
        )];
        let (mode, mode_style) = if self.follow {
            ("following", Style::new().fg(Color::Green))
        } else {
            ("paused · f follows", Style::new().fg(Color::Yellow))
        };
        spans.push(Span::styled(format!("· {mode} "), mode_style));
        let (state, style) = match &self.stream {
            StreamState::Connecting => {
                ("· connecting ".to_owned(), Style::new().fg(Color::DarkGray))
            }
            StreamState::Live => ("· live ".to_owned(), Style::new().fg(Color::Cyan)),
            StreamState::Ended(status) => {
                (format!("· ended: {status} "), fmt::status_style(*status))
            }
            StreamState::Interrupted { error, retrying } => (
                format!(
                    "· {}: {error} ",
                    if *retrying { "reconnecting" } else { "stopped" }
                ),
                Style::new().fg(Color::Red),
            ),
        };
        spans.push(Span::styled(state, style));
        if !self.query.is_empty() && !self.editing_query {
            let found = if self.no_match { " (no match)" } else { "" };
            spans.push(Span::styled(
                format!("· /{}{found} · n/N ", self.query),
                Style::new().fg(Color::Yellow),
            ));
        }
        Line::from(spans)
    }

    fn draw_log(&mut self, frame: &mut Frame, area: Rect) {
        let block = Block::bordered().title(self.log_title());
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [lines_area, prompt_area] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(u16::from(self.editing_query)),
        ])
        .areas(inner);
        self.log_area = lines_area;
        self.log_rows = usize::from(lines_area.height).max(1);
        if self.editing_query {
            let prompt = Line::from(vec![
                Span::styled("/", Style::new().fg(Color::Yellow)),
                Span::raw(self.query.clone()),
                Span::styled("█", Style::new().fg(Color::Yellow)),
                Span::styled(
                    "  Enter search · Esc cancel",
                    Style::new().fg(Color::DarkGray),
                ),
            ]);
            frame.render_widget(Paragraph::new(prompt), prompt_area);
        }
        if self.log.is_empty() {
            let note = match self.stream {
                StreamState::Ended(_) => "no output",
                _ => "waiting for output…",
            };
            frame.render_widget(
                Paragraph::new(note).style(Style::new().fg(Color::DarkGray)),
                lines_area,
            );
            return;
        }
        let first = self.first_visible();
        let last = (first + self.log_rows).min(self.log.len());
        let highlight = Style::new().bg(Color::Yellow).fg(Color::Black);
        let lines: Vec<Line> = (first..last)
            .filter_map(|i| {
                let line = self.log.get(i)?.line.clone();
                Some(if Some(i) == self.current_match {
                    line.patch_style(highlight)
                } else {
                    line
                })
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), lines_area);
    }
}

impl Component for JobDetailView {
    fn handle_event(&mut self, event: &Event) -> EventResult {
        match event {
            Event::Key(key) => self.handle_key(key),
            Event::Mouse(mouse)
                if self
                    .steps_area
                    .contains(Position::new(mouse.column, mouse.row)) =>
            {
                match mouse.kind {
                    MouseEventKind::ScrollUp => self.scroll_steps(true, 1),
                    MouseEventKind::ScrollDown => self.scroll_steps(false, 1),
                    _ => return EventResult::Ignored,
                }
                EventResult::Consumed
            }
            Event::Mouse(mouse)
                if self
                    .log_area
                    .contains(Position::new(mouse.column, mouse.row)) =>
            {
                match mouse.kind {
                    MouseEventKind::ScrollUp => self.scroll_up(WHEEL_STEP),
                    MouseEventKind::ScrollDown => self.scroll_down(WHEEL_STEP),
                    _ => return EventResult::Ignored,
                }
                EventResult::Consumed
            }
            Event::Paste(text) if self.editing_query => {
                self.query.push_str(text.trim());
                EventResult::Consumed
            }
            _ => EventResult::Ignored,
        }
    }

    fn captures_text(&self) -> bool {
        self.editing_query
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let Some(job) = self.job.take() else {
            let text = vec![
                Line::from("No job open."),
                Line::from("Select one on the Jobs tab (1) and press Enter."),
            ];
            frame.render_widget(
                Paragraph::new(text)
                    .style(Style::new().fg(Color::DarkGray))
                    .block(Block::bordered().title(" Job ")),
                area,
            );
            return;
        };
        let step_rows = u16::try_from(job.steps.len())
            .unwrap_or(u16::MAX)
            .min(MAX_STEP_ROWS);
        let steps_height = if step_rows == 0 { 0 } else { step_rows + 3 };
        let [header, steps, log] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Length(steps_height),
            Constraint::Fill(1),
        ])
        .areas(area);
        self.draw_header(frame, header, &job, now);
        self.steps_area = Rect::default();
        if steps_height > 0 {
            self.draw_steps(frame, steps, &job);
        }
        self.job = Some(job);
        self.draw_log(frame, log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{job, key, typed};

    fn opened(lines: usize) -> JobDetailView {
        let mut v = JobDetailView::default();
        v.open(job("01", "acme/app", JobStatus::Running));
        v.log_rows = 10;
        let text: String = (0..lines).map(|i| format!("line {i}\n")).collect();
        v.push_log("01", &text);
        v
    }

    #[test]
    fn a_job_that_queued_others_retries_their_failures_with_r() {
        let mut v = JobDetailView::default();
        let mut parent = job("01", "acme/app", JobStatus::Success);
        parent.children = vec!["02".into(), "03".into()];
        v.open(parent);
        let EventResult::Action(Action::Confirm { command, prompt }) =
            v.handle_event(&key(KeyCode::Char('R')))
        else {
            panic!("R must ask for confirmation");
        };
        assert_eq!(command, Command::RetryFailed("01".into()));
        assert!(prompt.contains("failed jobs that job 01"), "{prompt}");
    }

    #[test]
    fn follows_by_default_and_f_toggles() {
        let mut v = opened(100);
        assert!(v.follow);
        assert_eq!(v.first_visible(), 90);
        v.handle_event(&key(KeyCode::Char('f')));
        assert!(!v.follow);
        v.push_log("01", "line 100\n");
        assert_eq!(v.first_visible(), 90, "paused view stays put");
        v.handle_event(&key(KeyCode::Char('f')));
        assert_eq!(v.first_visible(), 91);
    }

    #[test]
    fn scrolling_up_pauses_and_end_resumes() {
        let mut v = opened(100);
        v.handle_event(&key(KeyCode::PageUp));
        assert!(!v.follow);
        assert_eq!(v.first_visible(), 80);
        v.handle_event(&key(KeyCode::Char('k')));
        assert_eq!(v.first_visible(), 79);
        v.handle_event(&key(KeyCode::Home));
        assert_eq!(v.first_visible(), 0);
        v.handle_event(&key(KeyCode::Char('j')));
        assert_eq!(v.first_visible(), 1);
        v.handle_event(&key(KeyCode::End));
        assert!(v.follow);
        assert_eq!(v.first_visible(), 90);
    }

    #[test]
    fn search_finds_next_and_previous() {
        let mut v = opened(100);
        v.handle_event(&key(KeyCode::Char('/')));
        assert!(v.captures_text());
        for e in typed("line 5") {
            v.handle_event(&e);
        }
        v.handle_event(&key(KeyCode::Enter));
        assert!(!v.captures_text());
        // From the top of the screen (line 90) forward, wrapping: "line 5" first.
        assert_eq!(v.current_match, Some(5));
        assert!(!v.follow);
        v.handle_event(&key(KeyCode::Char('n')));
        assert_eq!(v.current_match, Some(50));
        v.handle_event(&key(KeyCode::Char('N')));
        assert_eq!(v.current_match, Some(5));
        v.handle_event(&key(KeyCode::Esc));
        assert_eq!(v.current_match, None);
        v.handle_event(&key(KeyCode::Char('/')));
        for e in typed("nowhere") {
            v.handle_event(&e);
        }
        v.handle_event(&key(KeyCode::Enter));
        assert!(v.no_match);
    }

    #[test]
    fn the_header_names_the_workflow_and_what_it_waits_for() {
        let mut waiting = job("02", "acme/app", JobStatus::Blocked);
        waiting
            .spec
            .env
            .insert("RAIBID_WORKFLOW".into(), "deploy".into());
        waiting.spec.needs = Some(raibid_model::Needs {
            workflows: vec!["build".into(), "test".into()],
            jobs: vec!["01".into()],
            on_failure: false,
            on_success: true,
        });
        let mut v = JobDetailView::default();
        v.open(waiting);
        let backend = ratatui::backend::TestBackend::new(100, 12);
        let mut terminal = ratatui::Terminal::new(backend).unwrap();
        terminal
            .draw(|frame| v.draw(frame, frame.area(), chrono::Utc::now()))
            .unwrap();
        let screen = format!("{:?}", terminal.backend().buffer());
        assert!(
            screen.contains("workflow deploy  waiting for build, test"),
            "{screen}"
        );
    }

    #[test]
    fn only_a_blocked_job_can_be_approved_and_only_after_asking() {
        let mut v = opened(1);
        assert_eq!(
            v.handle_event(&key(KeyCode::Char('a'))),
            EventResult::Ignored,
            "a running job needs no approval"
        );
        let mut blocked = job("01", "acme/app", JobStatus::Blocked);
        blocked.spec.from_fork = true;
        v.open(blocked);
        let EventResult::Action(Action::Confirm { command, prompt }) =
            v.handle_event(&key(KeyCode::Char('a')))
        else {
            panic!("a must ask for confirmation");
        };
        assert_eq!(command, Command::Approve("01".into()));
        assert!(
            prompt.contains("Approve job 01") && prompt.contains("a fork's code"),
            "{prompt}"
        );
        let mut waiting = job("02", "acme/app", JobStatus::Blocked);
        waiting.spec.needs = Some(raibid_model::Needs {
            workflows: vec!["build".into()],
            jobs: vec!["01".into()],
            on_failure: false,
            on_success: true,
        });
        v.open(waiting);
        assert!(
            !matches!(
                v.handle_event(&key(KeyCode::Char('a'))),
                EventResult::Action(_)
            ),
            "a job waiting for workflows is not approved by hand"
        );
    }

    #[test]
    fn cancel_and_retry_ask_first_and_y_copies() {
        let mut v = opened(1);
        let EventResult::Action(Action::Confirm { command, prompt }) =
            v.handle_event(&key(KeyCode::Char('c')))
        else {
            panic!("c must ask for confirmation");
        };
        assert_eq!(command, Command::Cancel("01".into()));
        assert!(prompt.contains("Cancel job 01"));
        let EventResult::Action(Action::Confirm { command, .. }) =
            v.handle_event(&key(KeyCode::Char('r')))
        else {
            panic!("r must ask for confirmation");
        };
        assert_eq!(command, Command::Retry("01".into()));
        assert!(
            !matches!(
                v.handle_event(&key(KeyCode::Char('R'))),
                EventResult::Action(_)
            ),
            "R only for a job that queued others"
        );
        assert_eq!(
            v.handle_event(&key(KeyCode::Char('y'))),
            EventResult::Action(Action::Run(Command::Copy("01".into())))
        );
        assert_eq!(
            v.handle_event(&key(KeyCode::Esc)),
            EventResult::Action(Action::Back)
        );
    }

    fn pipeline(status: JobStatus, steps: &[StepStatus]) -> Job {
        let mut j = job("01", "acme/app", status);
        j.steps = steps
            .iter()
            .enumerate()
            .map(|(i, status)| raibid_model::StepResult {
                name: format!("step-{}", i + 1),
                status: *status,
                exit_code: None,
                duration_ms: None,
                tail: String::new(),
            })
            .collect();
        j
    }

    #[test]
    fn steps_table_is_kept_at_the_step_that_matters() {
        use StepStatus::{Failure, Pending, Running, Skipped, Success};
        // Failed at step 8 of 9: steps 4-9 are shown, the failure among them.
        let failed = pipeline(
            JobStatus::Failure,
            &[
                Success, Success, Success, Success, Success, Success, Success, Failure, Skipped,
            ],
        );
        assert_eq!(focus_step(&failed), 7);
        assert_eq!(steps_window(9, 6, focus_step(&failed)), 3);
        let running = pipeline(
            JobStatus::Running,
            &[
                Success, Success, Running, Pending, Pending, Pending, Pending,
            ],
        );
        assert_eq!(focus_step(&running), 2);
        assert_eq!(steps_window(7, 6, 2), 0);
        let done = pipeline(JobStatus::Success, &[Success; 9]);
        assert_eq!(steps_window(9, 6, focus_step(&done)), 3);
        let queued = pipeline(JobStatus::Queued, &[Pending; 9]);
        assert_eq!(steps_window(9, 6, focus_step(&queued)), 0);
        // Everything fits: no window.
        assert_eq!(steps_window(4, 6, 3), 0);
    }

    #[test]
    fn brackets_scroll_the_steps_until_the_job_moves_on() {
        use StepStatus::{Pending, Running, Success};
        let mut steps = vec![Pending; 12];
        steps[..7].fill(Success);
        steps[7] = Running;
        let mut v = JobDetailView::default();
        v.open(pipeline(JobStatus::Running, &steps));
        let top = |v: &JobDetailView| v.steps_top(v.job.as_ref().unwrap());
        assert_eq!(top(&v), 5);
        assert_eq!(
            v.handle_event(&key(KeyCode::Char('['))),
            EventResult::Consumed
        );
        v.handle_event(&key(KeyCode::Char('[')));
        assert_eq!(top(&v), 3);
        for _ in 0..20 {
            v.handle_event(&key(KeyCode::Char(']')));
        }
        assert_eq!(top(&v), 6, "stops at the last step");
        // A poll brings the same step running: the table stays where it was scrolled.
        v.update_job(pipeline(JobStatus::Running, &steps));
        assert_eq!(top(&v), 6);
        for _ in 0..3 {
            v.handle_event(&key(KeyCode::Char('[')));
        }
        assert_eq!(top(&v), 3);
        // The next step starts: the table follows the job again.
        steps[7] = Success;
        steps[8] = Running;
        v.update_job(pipeline(JobStatus::Running, &steps));
        assert_eq!(top(&v), 6, "step 9 running: back at it");
    }

    #[test]
    fn output_of_another_job_is_ignored() {
        let mut v = opened(3);
        v.push_log("02", "stray\n");
        v.log_ended("02", JobStatus::Failure);
        assert_eq!(v.log.len(), 3);
        assert_eq!(v.stream, StreamState::Live);
        v.log_ended("01", JobStatus::Success);
        assert_eq!(v.stream, StreamState::Ended(JobStatus::Success));
    }
}
