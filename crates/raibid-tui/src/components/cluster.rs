//! The cluster screen: nodes with their architecture and readiness, the agent pods KEDA
//! started and their phases, the ScaledJobs that start them, and the other components at a
//! glance. The state comes from the cluster poller (`crate::cluster_poller`), which reads the
//! Kubernetes API only while this screen is shown.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use crossterm::event::Event;
use raibid_infra::Component as InfraComponent;
use raibid_infra::cluster::{ClusterStatus, PodStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Wrap};

use super::columns::{self, ColumnSpec, TableColumn};
use super::{Component, EventResult};
use crate::data::ClusterUpdate;
use crate::fmt;

/// Where the Kubernetes configuration is, as found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kubeconfig {
    Found(PathBuf),
    /// Named (by option or `$KUBECONFIG`) but not there.
    Missing(PathBuf),
    /// Not named, and not at `~/.kube/config`.
    Absent,
}

impl Kubeconfig {
    /// `explicit`, else the first path of `$KUBECONFIG`, else `~/.kube/config`; checked for
    /// existence once, at start, so drawing never touches the file system.
    pub fn locate(explicit: Option<PathBuf>) -> Self {
        let named = explicit.or_else(|| {
            std::env::var_os("KUBECONFIG")
                .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        });
        match named {
            Some(path) if path.exists() => Kubeconfig::Found(path),
            Some(path) => Kubeconfig::Missing(path),
            None => match std::env::var_os("HOME") {
                Some(home) => {
                    let path = PathBuf::from(home).join(".kube").join("config");
                    if path.exists() {
                        Kubeconfig::Found(path)
                    } else {
                        Kubeconfig::Absent
                    }
                }
                None => Kubeconfig::Absent,
            },
        }
    }
}

/// The last reading, and whether the one after it failed.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    /// Nothing read yet.
    Waiting,
    Read {
        status: Box<ClusterStatus>,
        at: DateTime<Utc>,
    },
    Unreachable {
        error: String,
        retry_at: DateTime<Utc>,
        /// What was seen before the cluster went away, shown dimmed.
        last: Option<(Box<ClusterStatus>, DateTime<Utc>)>,
    },
}

pub(crate) struct ClusterView {
    kubeconfig: Kubeconfig,
    namespace: String,
    reading: Reading,
}

impl ClusterView {
    pub fn new(kubeconfig: Kubeconfig, namespace: &str) -> Self {
        Self {
            kubeconfig,
            namespace: namespace.to_owned(),
            reading: Reading::Waiting,
        }
    }

    pub fn update(&mut self, update: ClusterUpdate) {
        self.reading = match update {
            ClusterUpdate::Status { status, at } => Reading::Read { status, at },
            ClusterUpdate::Unreachable { error, retry_at } => {
                let last = match std::mem::replace(&mut self.reading, Reading::Waiting) {
                    Reading::Read { status, at } => Some((status, at)),
                    Reading::Unreachable { last, .. } => last,
                    Reading::Waiting => None,
                };
                Reading::Unreachable {
                    error,
                    retry_at,
                    last,
                }
            }
        };
    }

    fn draw_unconfigured(&self, frame: &mut Frame, area: Rect) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let dim = Style::new().fg(Color::DarkGray);
        let where_ = match &self.kubeconfig {
            Kubeconfig::Missing(path) => format!("kubeconfig: {} (not found)", path.display()),
            _ => "kubeconfig: none ($KUBECONFIG unset, ~/.kube/config absent)".to_owned(),
        };
        let lines = vec![
            Line::from(Span::styled("no cluster configured", bold)),
            Line::from(Span::styled(where_, dim)),
            Line::default(),
            Line::from(Span::styled(
                "`raibid setup k3s` installs one; cluster.kubeconfig points at an existing one.",
                dim,
            )),
            Line::from(Span::styled(
                "Agents and queues of any pool show on tabs 3 and 4: the server reports them.",
                dim,
            )),
        ];
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Cluster ")),
            area,
        );
    }
}

impl Component for ClusterView {
    fn handle_event(&mut self, _event: &Event) -> EventResult {
        EventResult::Ignored
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let Kubeconfig::Found(path) = &self.kubeconfig else {
            self.draw_unconfigured(frame, area);
            return;
        };
        let dim = Style::new().fg(Color::DarkGray);
        let (header, shown, stale) = match &self.reading {
            Reading::Waiting => (
                vec![Line::from(Span::styled(
                    format!("reading the cluster of {} …", path.display()),
                    dim,
                ))],
                None,
                false,
            ),
            Reading::Read { status, at } => (
                vec![Line::from(vec![
                    Span::styled("● ", Style::new().fg(Color::Green)),
                    Span::raw(status.server.clone().unwrap_or_default()),
                    Span::styled(
                        format!(
                            " · namespace {} · read {}",
                            self.namespace,
                            fmt::age(*at, now)
                        ),
                        dim,
                    ),
                ])],
                Some(status.as_ref()),
                false,
            ),
            Reading::Unreachable {
                error,
                retry_at,
                last,
            } => {
                let wait = (*retry_at - now).num_seconds().max(0);
                let mut lines = vec![
                    Line::from(vec![
                        Span::styled(
                            "● cluster unreachable",
                            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                        ),
                        Span::styled(format!(" · retrying in {wait}s"), dim),
                    ]),
                    Line::from(Span::styled(error.clone(), Style::new().fg(Color::Red))),
                ];
                if let Some((_, at)) = last {
                    lines.push(Line::from(Span::styled(
                        format!("last read {}:", fmt::age(*at, now)),
                        dim,
                    )));
                }
                (lines, last.as_ref().map(|(s, _)| s.as_ref()), true)
            }
        };
        let block = Block::bordered().title(Span::styled(
            " Cluster ",
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let header_height = u16::try_from(header.len()).unwrap_or(1);
        let Some(status) = shown else {
            frame.render_widget(Paragraph::new(header).wrap(Wrap { trim: false }), inner);
            return;
        };
        let agents = agent_pods(status);
        let footer = footer_lines(status);
        let [head, nodes, scaled, pods, foot] = Layout::vertical([
            Constraint::Length(header_height),
            Constraint::Length(table_height(status.nodes.len().max(1), 4)),
            Constraint::Length(table_height(status.scaled_jobs.len().max(1), 4)),
            Constraint::Min(3),
            Constraint::Length(u16::try_from(footer.len()).unwrap_or(0)),
        ])
        .areas(inner);
        frame.render_widget(Paragraph::new(header), head);
        let base = if stale {
            Style::new().add_modifier(Modifier::DIM)
        } else {
            Style::new()
        };
        draw_nodes(frame, nodes, status, base);
        draw_scaled_jobs(frame, scaled, status, base);
        draw_agent_pods(frame, pods, &agents, base);
        frame.render_widget(Paragraph::new(footer).style(base), foot);
    }
}

/// Rows plus the header and the two borders, at most `max_rows` rows.
fn table_height(rows: usize, max_rows: usize) -> u16 {
    u16::try_from(rows.min(max_rows) + 3).unwrap_or(u16::MAX)
}

/// Running agents first, then waiting, failed and finished ones.
fn agent_pods(status: &ClusterStatus) -> Vec<&PodStatus> {
    let mut pods: Vec<&PodStatus> = status
        .components
        .iter()
        .filter(|c| c.component == InfraComponent::Agents)
        .flat_map(|c| &c.pods)
        .collect();
    let rank = |phase: &str| match phase {
        "Running" => 0,
        "Pending" => 1,
        "Failed" => 2,
        "Succeeded" => 4,
        _ => 3,
    };
    pods.sort_by_key(|p| rank(&p.phase));
    pods
}

fn phase_style(phase: &str) -> Style {
    match phase {
        "Running" => Style::new().fg(Color::Green),
        "Pending" => Style::new().fg(Color::Yellow),
        "Failed" | "Unknown" => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::DarkGray),
    }
}

fn titled(title: String) -> Block<'static> {
    Block::bordered().title(Span::styled(
        title,
        Style::new().add_modifier(Modifier::BOLD),
    ))
}

/// A column of the cluster tables: its title and how it fits.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PanelColumn {
    title: &'static str,
    spec: ColumnSpec,
}

impl TableColumn for PanelColumn {
    fn header(self) -> &'static str {
        self.title
    }

    fn spec(self) -> ColumnSpec {
        self.spec
    }
}

/// A bordered panel titled `title`: a table whose columns drop from the least useful end as
/// the area narrows, or `empty` (dimmed) when there are no rows.
fn draw_panel(
    frame: &mut Frame,
    area: Rect,
    title: String,
    empty: &str,
    specs: &[(&'static str, ColumnSpec)],
    rows: Vec<Vec<Cell<'_>>>,
    base: Style,
) {
    let block = titled(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(empty.to_owned()).style(base.fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let column_specs: Vec<ColumnSpec> = specs.iter().map(|(_, s)| *s).collect();
    let kept = columns::fit(&column_specs, inner.width);
    let kept_columns: Vec<PanelColumn> = kept
        .iter()
        .map(|&i| PanelColumn {
            title: specs[i].0,
            spec: specs[i].1,
        })
        .collect();
    let Some(&fill) = kept_columns.last() else {
        return;
    };
    let rows = rows.into_iter().map(|cells| {
        let mut cells: Vec<Option<Cell>> = cells.into_iter().map(Some).collect();
        Row::new(kept.iter().map(|&i| cells[i].take().unwrap_or_default())).style(base)
    });
    columns::draw_table(frame, inner, &kept_columns, fill, rows);
}

const fn spec(min: u16, drop_rank: u8) -> ColumnSpec {
    ColumnSpec { min, drop_rank }
}

fn draw_nodes(frame: &mut Frame, area: Rect, status: &ClusterStatus, base: Style) {
    let ready = status.nodes.iter().filter(|n| n.ready).count();
    let specs = [
        ("NAME", spec(16, 0)),
        ("STATUS", spec(8, 0)),
        ("ARCH", spec(6, 0)),
        ("KUBELET", spec(12, 1)),
    ];
    let rows = status
        .nodes
        .iter()
        .map(|n| {
            let (text, colour) = if n.ready {
                ("Ready", Color::Green)
            } else {
                ("NotReady", Color::Red)
            };
            vec![
                Cell::from(n.name.clone()),
                Cell::from(Span::styled(text, Style::new().fg(colour))),
                Cell::from(n.arch.clone()),
                Cell::from(n.kubelet_version.clone()),
            ]
        })
        .collect();
    let title = format!(" Nodes · {ready}/{} ready ", status.nodes.len());
    draw_panel(
        frame,
        area,
        title,
        "no nodes could be read",
        &specs,
        rows,
        base,
    );
}

fn draw_scaled_jobs(frame: &mut Frame, area: Rect, status: &ClusterStatus, base: Style) {
    let specs = [
        ("NAME", spec(20, 0)),
        ("POOL", spec(6, 2)),
        ("READY", spec(5, 0)),
        ("AGENTS", spec(6, 0)),
        ("MAX", spec(4, 3)),
        ("MESSAGE", spec(10, 1)),
    ];
    let rows = status
        .scaled_jobs
        .iter()
        .map(|j| {
            let ready = if j.ready {
                Span::styled("yes", Style::new().fg(Color::Green))
            } else {
                Span::styled("no", Style::new().fg(Color::Red))
            };
            // The condition's "Ready=True: " prefix says what READY already shows.
            let message = j
                .message
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("Ready="))
                .map_or(j.message.as_str(), |(_, rest)| rest);
            vec![
                Cell::from(j.name.clone()),
                Cell::from(j.pool.clone().unwrap_or_else(|| "?".into())),
                Cell::from(ready),
                Cell::from(j.active_jobs.to_string()),
                Cell::from(j.max_replicas.map_or("?".into(), |m| m.to_string())),
                if j.paused {
                    Cell::from(Span::styled(
                        format!("paused · {message}"),
                        Style::new().fg(Color::Magenta),
                    ))
                } else {
                    Cell::from(message.to_owned())
                },
            ]
        })
        .collect();
    let title = format!(" ScaledJobs · {} ", status.scaled_jobs.len());
    let empty = "no ScaledJobs (`raibid setup agents` creates one per pool)";
    draw_panel(frame, area, title, empty, &specs, rows, base);
}

fn draw_agent_pods(frame: &mut Frame, area: Rect, pods: &[&PodStatus], base: Style) {
    let running = pods.iter().filter(|p| p.phase == "Running").count();
    let waiting = pods.iter().filter(|p| p.phase == "Pending").count();
    let specs = [
        ("NAME", spec(30, 0)),
        ("PHASE", spec(9, 0)),
        ("READY", spec(5, 2)),
        ("RESTARTS", spec(8, 3)),
        ("NODE", spec(10, 1)),
    ];
    let rows = pods
        .iter()
        .map(|p| {
            vec![
                Cell::from(p.name.clone()),
                Cell::from(Span::styled(p.phase.clone(), phase_style(&p.phase))),
                Cell::from(if p.ready { "yes" } else { "no" }),
                Cell::from(p.restarts.to_string()),
                Cell::from(p.node.clone().unwrap_or_else(|| "-".into())),
            ]
        })
        .collect();
    let title = format!(
        " Agent pods · {running} running · {waiting} pending · {} in all ",
        pods.len()
    );
    let empty = "no agent pods: KEDA starts one per queued job";
    draw_panel(frame, area, title, empty, &specs, rows, base);
}

/// The other components in one line, then whatever could not be read.
fn footer_lines(status: &ClusterStatus) -> Vec<Line<'static>> {
    let mut spans = Vec::new();
    for c in status
        .components
        .iter()
        .filter(|c| c.component != InfraComponent::Agents)
    {
        if !spans.is_empty() {
            spans.push(Span::styled(" · ", Style::new().fg(Color::DarkGray)));
        }
        let running: Vec<&PodStatus> = c.pods.iter().filter(|p| !p.completed()).collect();
        let ready = running.iter().filter(|p| p.ready).count();
        let colour = if running.is_empty() {
            Color::DarkGray
        } else if ready == running.len() {
            Color::Green
        } else {
            Color::Yellow
        };
        spans.push(Span::raw(format!("{} ", c.component)));
        spans.push(Span::styled(
            if running.is_empty() {
                "-".to_owned()
            } else {
                format!("{ready}/{}", running.len())
            },
            Style::new().fg(colour),
        ));
    }
    let mut lines = Vec::new();
    if !spans.is_empty() {
        lines.push(Line::from(spans));
    }
    for note in &status.notes {
        lines.push(Line::from(Span::styled(
            format!("note: {note}"),
            Style::new().fg(Color::Yellow),
        )));
    }
    lines
}
