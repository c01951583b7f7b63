//! The dashboard's state and its routing of input: which screen is showing, which popup is
//! open, how the server connection is doing. Drawing reads this state only.

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::components::{
    Action, AgentsView, ClusterView, Command, Component, Confirm, EventResult, Help, JobDetailView,
    JobsView, Kubeconfig, QueuesView,
};
use crate::data::DataEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Jobs,
    Job,
    Queues,
    Agents,
    Cluster,
}

impl Tab {
    const ALL: [Tab; 5] = [Tab::Jobs, Tab::Job, Tab::Queues, Tab::Agents, Tab::Cluster];

    fn title(self) -> &'static str {
        match self {
            Tab::Jobs => "Jobs",
            Tab::Job => "Job",
            Tab::Queues => "Queues",
            Tab::Agents => "Agents",
            Tab::Cluster => "Cluster",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn offset(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

enum Popup {
    Help(Help),
    Confirm(Confirm),
}

#[derive(Debug, Clone, PartialEq)]
enum Connection {
    Connecting,
    Connected {
        at: DateTime<Utc>,
    },
    Lost {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

/// The whole dashboard as a state machine: [`App::apply`] takes news from the server,
/// [`App::draw`] renders a frame. `raibid tui` drives it from terminal input and background
/// tasks; tests and benchmarks drive it directly.
pub struct App {
    server: String,
    tab: Tab,
    jobs: JobsView,
    detail: JobDetailView,
    queues: QueuesView,
    agents: AgentsView,
    cluster: ClusterView,
    popup: Option<Popup>,
    connection: Connection,
    /// The answer to the user's last request (cancel, retry, copy), until the next key.
    notice: Option<(String, bool)>,
    /// Column ranges of the tab titles in the last frame, for clicks.
    tab_hits: Vec<(u16, u16, Tab)>,
    tabs_row: u16,
}

impl App {
    /// `namespace` is where raibid's objects live in the cluster, for the Cluster tab.
    pub fn new(server: &str, kubeconfig: Kubeconfig, namespace: &str) -> Self {
        Self {
            server: server.to_owned(),
            tab: Tab::Jobs,
            jobs: JobsView::default(),
            detail: JobDetailView::default(),
            queues: QueuesView::default(),
            agents: AgentsView::default(),
            cluster: ClusterView::new(kubeconfig, namespace),
            popup: None,
            connection: Connection::Connecting,
            notice: None,
            tab_hits: Vec::new(),
            tabs_row: 0,
        }
    }

    pub fn apply(&mut self, event: DataEvent) {
        match event {
            DataEvent::Jobs(update) => {
                self.jobs.apply(update);
                self.show_build();
            }
            DataEvent::Job(job) => {
                self.detail.update_job(*job);
                self.show_build();
            }
            DataEvent::Pools { pools, scalers, at } => {
                self.queues.set_pools(pools, scalers, at);
            }
            DataEvent::Agents(agents) => {
                self.queues.set_agents(&agents);
                self.agents.set_agents(agents);
            }
            DataEvent::Log { job_id, text } => self.detail.push_log(&job_id, &text),
            DataEvent::LogEnd { job_id, status } => self.detail.log_ended(&job_id, status),
            DataEvent::LogInterrupted {
                job_id,
                error,
                retrying,
            } => self.detail.log_interrupted(&job_id, error, retrying),
            DataEvent::Connected { at } => self.connection = Connection::Connected { at },
            DataEvent::Disconnected { error, retry_at } => {
                self.connection = Connection::Lost { error, retry_at }
            }
            DataEvent::Notice { text, error } => self.notice = Some((text, error)),
            DataEvent::Cluster(update) => self.cluster.update(update),
        }
    }

    /// The cluster is read only while someone looks at it.
    pub fn showing_cluster(&self) -> bool {
        self.tab == Tab::Cluster
    }

    fn current(&mut self) -> &mut dyn Component {
        match self.tab {
            Tab::Jobs => &mut self.jobs,
            Tab::Job => &mut self.detail,
            Tab::Queues => &mut self.queues,
            Tab::Agents => &mut self.agents,
            Tab::Cluster => &mut self.cluster,
        }
    }

    /// Routes one terminal event: an open popup takes everything, then global keys (unless
    /// the screen is editing text), then the screen. Returns what the runtime must do.
    pub(crate) fn handle_input(&mut self, event: &Event) -> Option<Command> {
        if let Event::Key(key) = event {
            if key.kind == KeyEventKind::Release {
                return None;
            }
            self.notice = None;
            if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
                return Some(Command::Quit);
            }
        }
        if let Some(popup) = &mut self.popup {
            let result = match popup {
                Popup::Help(help) => help.handle_event(event),
                Popup::Confirm(confirm) => confirm.handle_event(event),
            };
            return match result {
                EventResult::Action(action) => self.perform(action),
                EventResult::Ignored | EventResult::Consumed => None,
            };
        }
        if !self.current().captures_text()
            && let Some(outcome) = self.global_navigation(event)
        {
            return outcome;
        }
        match self.current().handle_event(event) {
            EventResult::Action(action) => self.perform(action),
            EventResult::Ignored | EventResult::Consumed => None,
        }
    }

    /// Keys and clicks that mean the same on every screen. `Some` when the event was one.
    fn global_navigation(&mut self, event: &Event) -> Option<Option<Command>> {
        match event {
            Event::Key(key)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                match key.code {
                    KeyCode::Char('q') => return Some(Some(Command::Quit)),
                    KeyCode::Char('?') => self.popup = Some(Popup::Help(Help)),
                    KeyCode::Char(c @ '1'..='5') => {
                        self.tab = Tab::ALL[usize::from(c as u8 - b'1')];
                    }
                    KeyCode::Tab => self.tab = self.tab.offset(1),
                    KeyCode::BackTab => self.tab = self.tab.offset(-1),
                    _ => return None,
                }
                Some(None)
            }
            Event::Mouse(mouse)
                if mouse.kind == MouseEventKind::Down(MouseButton::Left)
                    && mouse.row == self.tabs_row =>
            {
                let (_, _, tab) = self
                    .tab_hits
                    .iter()
                    .find(|(from, to, _)| (*from..*to).contains(&mouse.column))?;
                self.tab = *tab;
                Some(None)
            }
            _ => None,
        }
    }

    /// Gives the open job's page its build's status, from the jobs the list holds.
    fn show_build(&mut self) {
        let build = self
            .detail
            .job()
            .and_then(|job| self.jobs.build_status(job));
        self.detail.set_build(build);
    }

    fn perform(&mut self, action: Action) -> Option<Command> {
        match action {
            Action::OpenJob(job) => {
                self.tab = Tab::Job;
                // The same job again is only a tab switch, unless its log follower gave up:
                // then opening it is how the user asks to follow it once more.
                if self.detail.job_id() == Some(job.id.as_str()) && !self.detail.stream_stopped() {
                    return None;
                }
                let id = job.id.clone();
                self.detail.open(*job);
                self.show_build();
                Some(Command::FollowJob(id))
            }
            Action::Back => {
                self.tab = Tab::Jobs;
                None
            }
            Action::Confirm { prompt, command } => {
                self.popup = Some(Popup::Confirm(Confirm::new(prompt, command)));
                None
            }
            Action::Run(command) => {
                self.popup = None;
                if let Command::Copy(text) = &command {
                    self.notice = Some((format!("copied {text} (OSC 52)"), false));
                }
                Some(command)
            }
            Action::Dismiss => {
                self.popup = None;
                None
            }
        }
    }

    /// Renders one frame as of `now`; reads state only.
    pub fn draw(&mut self, frame: &mut Frame, now: DateTime<Utc>) {
        let area = frame.area();
        let banner_height = u16::from(matches!(self.connection, Connection::Lost { .. }));
        let [tabs, banner, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(banner_height),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.draw_tabs(frame, tabs);
        if let Connection::Lost { error, retry_at } = &self.connection {
            let wait = (*retry_at - now).num_seconds().max(0);
            frame.render_widget(
                Paragraph::new(format!(
                    " connection to the server lost · retrying in {wait}s · {error}"
                ))
                .style(
                    Style::new()
                        .bg(Color::Red)
                        .fg(Color::White)
                        .add_modifier(Modifier::BOLD),
                ),
                banner,
            );
        }
        self.current().draw(frame, body, now);
        self.draw_status(frame, status, now);
        match &mut self.popup {
            Some(Popup::Help(help)) => help.draw(frame, body, now),
            Some(Popup::Confirm(confirm)) => confirm.draw(frame, body, now),
            None => {}
        }
    }

    fn draw_tabs(&mut self, frame: &mut Frame, area: Rect) {
        self.tabs_row = area.y;
        self.tab_hits.clear();
        let mut spans = vec![Span::styled(
            " raibid ",
            Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        )];
        let mut x = area.x + 8;
        for (i, tab) in Tab::ALL.iter().enumerate() {
            let title = format!(" {} {} ", i + 1, tab.title());
            let width = u16::try_from(title.chars().count()).unwrap_or(u16::MAX);
            self.tab_hits.push((x, x.saturating_add(width), *tab));
            x = x.saturating_add(width);
            let style = if *tab == self.tab {
                Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
            } else {
                Style::new().fg(Color::Gray)
            };
            spans.push(Span::styled(title, style));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_status(&self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let dim = Style::new().fg(Color::DarkGray);
        let mut left = match &self.connection {
            Connection::Connecting => vec![
                Span::styled("○ ", Style::new().fg(Color::Yellow)),
                Span::raw(format!("connecting to {}", self.server)),
            ],
            Connection::Connected { at } => vec![
                Span::styled("● ", Style::new().fg(Color::Green)),
                Span::raw(self.server.clone()),
                Span::styled(format!(" · updated {}", crate::fmt::age(*at, now)), dim),
            ],
            Connection::Lost { .. } => vec![
                Span::styled("● ", Style::new().fg(Color::Red)),
                Span::raw(self.server.clone()),
                Span::styled(" · offline", Style::new().fg(Color::Red)),
            ],
        };
        if let Some((text, error)) = &self.notice {
            let color = if *error { Color::Red } else { Color::Yellow };
            left.push(Span::styled(format!(" · {text}"), Style::new().fg(color)));
        }
        let hint = " ? help · q quit ";
        let [left_area, right_area] = Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(u16::try_from(hint.chars().count()).unwrap_or(0)),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(Line::from(left)), left_area);
        frame.render_widget(Paragraph::new(Span::styled(hint, dim)), right_area);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::JobsUpdate;
    use crate::test_support::{at, job, key, key_with, typed};
    use crossterm::event::{KeyEvent, KeyEventState, MouseEvent};
    use raibid_model::JobStatus;

    fn app() -> App {
        let mut app = App::new("http://ci:8080", Kubeconfig::Absent, "raibid-ci");
        app.apply(DataEvent::Jobs(JobsUpdate {
            newest: vec![
                job("02", "acme/web", JobStatus::Running),
                job("01", "acme/api", JobStatus::Success),
            ],
            at: at(0),
            ..Default::default()
        }));
        app
    }

    fn press(app: &mut App, code: KeyCode) -> Option<Command> {
        app.handle_input(&key(code))
    }

    fn open_first(app: &mut App) {
        press(app, KeyCode::Char('1'));
        assert_eq!(
            press(app, KeyCode::Enter),
            Some(Command::FollowJob("02".into()))
        );
        assert_eq!(app.tab, Tab::Job);
    }

    #[test]
    fn digits_tab_and_backtab_switch_screens() {
        let mut app = app();
        for (c, tab) in [
            ('3', Tab::Queues),
            ('5', Tab::Cluster),
            ('2', Tab::Job),
            ('1', Tab::Jobs),
        ] {
            assert_eq!(press(&mut app, KeyCode::Char(c)), None);
            assert_eq!(app.tab, tab);
        }
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.tab, Tab::Job);
        press(&mut app, KeyCode::BackTab);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.tab, Tab::Cluster);
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.tab, Tab::Jobs);
    }

    #[test]
    fn clicking_a_tab_title_switches_to_it() {
        let mut app = app();
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| app.draw(f, at(0))).unwrap();
        let (from, _, _) = app.tab_hits[3];
        let click = Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: from + 1,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        assert_eq!(app.handle_input(&click), None);
        assert_eq!(app.tab, Tab::Agents);
    }

    #[test]
    fn q_and_ctrl_c_quit_but_not_while_typing() {
        let mut app = app();
        assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Command::Quit));
        press(&mut app, KeyCode::Char('/'));
        for e in typed("q3") {
            assert_eq!(app.handle_input(&e), None);
        }
        assert_eq!(
            app.tab,
            Tab::Jobs,
            "digits typed into the filter stay there"
        );
        assert_eq!(
            app.handle_input(&key_with(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Command::Quit)
        );
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut app = app();
        let release = Event::Key(KeyEvent {
            code: KeyCode::Char('q'),
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
        });
        assert_eq!(app.handle_input(&release), None);
    }

    #[test]
    fn help_opens_and_any_key_only_closes_it() {
        let mut app = app();
        press(&mut app, KeyCode::Char('?'));
        assert!(matches!(app.popup, Some(Popup::Help(_))));
        assert_eq!(
            press(&mut app, KeyCode::Char('q')),
            None,
            "q closes help, not the app"
        );
        assert!(app.popup.is_none());
        assert_eq!(app.tab, Tab::Jobs);
    }

    /// Re-opening the job was ignored, so a log stream that had stopped for good (the
    /// server refused it) could only be followed again by opening another job first.
    #[test]
    fn reopening_a_job_whose_log_stopped_follows_it_again() {
        let mut app = app();
        open_first(&mut app);
        app.apply(DataEvent::LogInterrupted {
            job_id: "02".into(),
            error: "reconnecting".into(),
            retrying: true,
        });
        press(&mut app, KeyCode::Char('1'));
        assert_eq!(press(&mut app, KeyCode::Enter), None, "still following");
        app.apply(DataEvent::LogInterrupted {
            job_id: "02".into(),
            error: "forbidden".into(),
            retrying: false,
        });
        press(&mut app, KeyCode::Char('1'));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Command::FollowJob("02".into()))
        );
        assert_eq!(app.tab, Tab::Job);
    }

    #[test]
    fn cancel_runs_only_after_yes() {
        let mut app = app();
        open_first(&mut app);
        assert_eq!(press(&mut app, KeyCode::Char('c')), None);
        assert!(matches!(app.popup, Some(Popup::Confirm(_))));
        // Keys meant for the screen behind do nothing while the question is open.
        assert_eq!(press(&mut app, KeyCode::Char('1')), None);
        assert_eq!(press(&mut app, KeyCode::Char('q')), None);
        assert_eq!(app.tab, Tab::Job);
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert!(app.popup.is_none());

        press(&mut app, KeyCode::Char('c'));
        assert_eq!(press(&mut app, KeyCode::Esc), None);
        assert!(app.popup.is_none());
        assert_eq!(app.tab, Tab::Job, "Esc closed the popup, not the job");

        press(&mut app, KeyCode::Char('c'));
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Command::Cancel("02".into()))
        );
        assert!(app.popup.is_none());
    }

    /// `p` on the Queues tab pauses the selected pool, or resumes it when it is paused,
    /// asking first either way.
    #[test]
    fn p_pauses_or_resumes_the_selected_pool_after_yes() {
        use crate::test_support::pool;
        let mut app = app();
        let mut gpu = pool("gpu", 2);
        gpu.paused = Some(raibid_model::PoolPause {
            by: "ops".into(),
            reason: String::new(),
            since: at(-60),
        });
        app.apply(DataEvent::Pools {
            pools: vec![pool("default", 1), gpu],
            scalers: Vec::new(),
            at: at(0),
        });
        press(&mut app, KeyCode::Char('3'));
        assert_eq!(press(&mut app, KeyCode::Char('p')), None);
        assert!(matches!(&app.popup, Some(Popup::Confirm(_))));
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Command::PausePool(raibid_model::PoolName::default()))
        );
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('p'));
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Command::ResumePool(
                raibid_model::PoolName::new("gpu").unwrap()
            ))
        );
        press(&mut app, KeyCode::Char('p'));
        assert_eq!(
            press(&mut app, KeyCode::Char('n')),
            None,
            "no: nothing runs"
        );
        assert!(app.popup.is_none());
    }

    #[test]
    fn retry_confirms_with_enter() {
        let mut app = app();
        open_first(&mut app);
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Command::Retry("02".into()))
        );
    }

    #[test]
    fn copy_reports_what_it_did() {
        let mut app = app();
        open_first(&mut app);
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Command::Copy("02".into()))
        );
        assert!(
            app.notice
                .as_ref()
                .is_some_and(|(t, _)| t.contains("copied 02"))
        );
        press(&mut app, KeyCode::Char('j'));
        assert!(app.notice.is_none(), "the next key clears the notice");
    }

    #[test]
    fn esc_goes_back_and_reopening_keeps_the_stream() {
        let mut app = app();
        open_first(&mut app);
        app.apply(DataEvent::Log {
            job_id: "02".into(),
            text: "kept\n".into(),
        });
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.tab, Tab::Jobs);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            None,
            "same job: no new stream"
        );
        assert_eq!(app.tab, Tab::Job);
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Down);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Command::FollowJob("01".into()))
        );
    }

    #[test]
    fn connection_state_follows_the_poller() {
        let mut app = app();
        assert_eq!(app.connection, Connection::Connecting);
        app.apply(DataEvent::Disconnected {
            error: "refused".into(),
            retry_at: at(2),
        });
        assert!(matches!(app.connection, Connection::Lost { .. }));
        app.apply(DataEvent::Connected { at: at(3) });
        assert_eq!(app.connection, Connection::Connected { at: at(3) });
    }
}
